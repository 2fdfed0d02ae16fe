package gateway

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/testenv"
)

// processWakeups sums the context switches of every thread of this
// process (voluntary and not).
func processWakeups(t *testing.T) uint64 {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				x, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				n += x
			} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				x, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
	}
	return n
}

func processCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestIdleCost: a gateway with nothing to do wakes (almost) no one: no
// fixed-rate tickers, the workers wait without a timeout once their work
// is handed over (the socket paths in recvmmsg, the afxdp path in poll
// until frames or Stop's Socket.Wake). A bounded check with a generous margin (the target is
// < 50 wake-ups/s and < 0.2 % of a core; the test allows 0.5 %, as the
// test process adds its own; BENCHMARKS.md has the figures).
func TestIdleCost(t *testing.T) {
	for _, mode := range []config.Mode{config.ModePlain, config.ModeSocket, config.ModeAFXDP} {
		t.Run(mode.String(), func(t *testing.T) {
			pair := testenv.New(t, testenv.Options{RxQueues: 1})
			host := pair.B
			cfg := itConfig(t, pair.B.Link, mode.String(), filepath.Join(t.TempDir(), "passed.ndjson"))
			cfg.HTTP.Listen = ""
			g, stop := startGateway(t, host, cfg)
			defer stop()
			time.Sleep(500 * time.Millisecond) // start-up, the first receive timeouts
			// The least of two windows: a one-off in the test process
			// (the runtime's background GC or scavenger, more under the
			// race detector on a loaded machine) is not the gateway's.
			const window = 2 * time.Second
			perSec, share := math.Inf(1), math.Inf(1)
			for range 2 {
				w0, c0 := processWakeups(t), processCPU()
				time.Sleep(window)
				w1, c1 := processWakeups(t), processCPU()
				perSec = min(perSec, float64(w1-w0)/window.Seconds())
				share = min(share, float64(c1-c0)/float64(window))
			}
			t.Logf("%s idle: %.1f wake-ups/s, %.3f %% of a core", mode, perSec, 100*share)
			if perSec > 50 || share > 0.005 {
				t.Errorf("idle gateway: %.1f wake-ups/s, %.2f %% of a core: something runs at rest", perSec, 100*share)
			}
			// A resting worker takes traffic again at once, and Stop gets
			// it out of its wait without a timeout.
			sent := sendEventsAndOther(t, pair, 50, 0)
			deadline := time.Now().Add(5 * time.Second)
			for {
				st, err := g.Stats()
				if err != nil {
					t.Fatal(err)
				}
				if st.Datagrams >= sent {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the rest: %d of %d datagrams received", st.Datagrams, sent)
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // resting again
			t0 := time.Now()
			if err := stop(); err != nil {
				t.Fatalf("stop after the rest: %v", err)
			}
			t.Logf("stopped in %v", time.Since(t0))
		})
	}
}

// TestWorkersFollowAffinity: without workers.cpus the workers go on the
// CPUs the process was given (as under taskset or systemd CPUAffinity=),
// not on every online CPU.
func TestWorkersFollowAffinity(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &all); err != nil || all.Count() < 2 {
		t.Skipf("needs two CPUs in the process's affinity (have %d, %v)", all.Count(), err)
	}
	last := -1
	for c := 0; c < 1024; c++ {
		if all.IsSet(c) {
			last = c
		}
	}
	var one unix.CPUSet
	one.Set(last)
	// The process's affinity is its main thread's (host.ProcessCPUs).
	if err := unix.SchedSetaffinity(os.Getpid(), &one); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(os.Getpid(), &all)
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	cfg := itConfig(t, pair.B.Link, "plain", filepath.Join(t.TempDir(), "passed.ndjson"))
	cfg.HTTP.Listen = ""
	g, stop := startGateway(t, pair.B, cfg)
	defer stop()
	if len(g.workers) != 1 || g.workers[0].cpu != last {
		var cpus []int
		for _, w := range g.workers {
			cpus = append(cpus, w.cpu)
		}
		t.Errorf("workers on CPUs %v, want only %d (the process's affinity)", cpus, last)
	}
}
