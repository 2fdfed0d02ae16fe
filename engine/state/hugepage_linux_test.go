package state

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestKeyTableHugePages: where the host offers transparent huge pages
// (mode madvise or always), a default-capacity rate limiter's table is
// backed by them once touched: AnonHugePages of the process grows (by up
// to its 16 MiB; at least one huge page, since a host short of free huge
// pages gives fewer).
func TestKeyTableHugePages(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || strings.Contains(string(mode), "[never]") {
		t.Skipf("transparent huge pages off here (%q, %v)", mode, err)
	}
	before := anonHugeKiB(t)
	r, err := NewRateLimiter(RateLimitConfig{Rate: 100, Burst: 200}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range r.tab.slots { // touch every page, as many keys would
		if i%512 == 0 {
			r.tab.slots[i].stamp.Store(1)
		}
	}
	after := anonHugeKiB(t)
	if got := after - before; got < hugePageSize>>10 {
		t.Errorf("AnonHugePages grew by %d KiB with a 16 MiB table, want at least one huge page", got)
	}
}

// anonHugeKiB reads AnonHugePages of /proc/self/smaps_rollup.
func anonHugeKiB(t *testing.T) int {
	f, err := os.Open("/proc/self/smaps_rollup")
	if err != nil {
		t.Skipf("no smaps_rollup: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "AnonHugePages:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no AnonHugePages line")
	return 0
}
