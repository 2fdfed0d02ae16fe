//go:build linux

package bench

import (
	"strings"
	"testing"
)

var allocSink []byte

//go:noinline
func allocTestLoop(n int) {
	for i := 0; i < n; i++ {
		allocSink = make([]byte, 64) // not tiny: one profile record each
	}
}

//go:noinline
func allocTestQuiet(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		var b [64]byte // on the stack
		b[i%64] = byte(i)
		s += int(b[i%64])
	}
	return s
}

// countUnder counts the allocations f makes under a function whose name
// ends in suffix.
func countUnder(suffix string, f func()) uint64 {
	p := profileAllocs(func(fn string) bool { return strings.HasSuffix(fn, suffix) })
	defer p.stop()
	c0 := p.count()
	f()
	return p.count() - c0
}

// The profile counts the allocations made under one function exactly (on
// another goroutine, as a worker's), and none of those made elsewhere.
func TestAllocProfileCounts(t *testing.T) {
	got := countUnder(".allocTestLoop", func() {
		done := make(chan struct{})
		go func() { defer close(done); allocTestLoop(1000) }()
		<-done
		for i := 0; i < 1000; i++ {
			allocSink = make([]byte, 64) // the test's own: not counted
		}
	})
	if got != 1000 {
		t.Errorf("counted %d allocations, want 1000", got)
	}
	got = countUnder(".allocTestQuiet", func() {
		_ = allocTestQuiet(1000)
		allocTestLoop(10)
	})
	if got != 0 {
		t.Errorf("an allocation-free function counted %d allocations", got)
	}
}
