//go:build linux

package bench

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/xgate/xgate/gateway/host"

	"golang.org/x/sys/unix"
)

// Stall thresholds of a host check: StallMin is the latency target of
// the bench (p99 ≤ 200 µs at half load), StallLong marks the stalls that
// also overflow rings at high rates.
const (
	StallMin  = 200 * time.Microsecond
	StallLong = time.Millisecond
	// MaxRTHostCheck keeps a SCHED_FIFO probe within the kernel's default
	// RT budget (950 ms a second), so throttling does not pose as a stall.
	MaxRTHostCheck = 900 * time.Millisecond
)

// HostStalls is what a thread spinning on one CPU saw over Window: the
// times it did not run for StallMin or more (preempted by another thread,
// an interrupt storm, or its virtual CPU not scheduled by the hypervisor).
// A worker on that CPU is stalled the same way, and every event that
// arrives meanwhile waits, at any load: when Lost is near 1 % of Window
// the p99 latency cannot stay under StallMin, whatever the gateway does.
type HostStalls struct {
	CPU     int
	Window  time.Duration
	Stalls  int           // gaps ≥ StallMin
	Long    int           // of which ≥ StallLong
	Lost    time.Duration // time covered by those gaps
	Longest time.Duration
	RT      bool // probed at SCHED_FIFO (as realtime workers run)
}

// add counts one gap between two clock readings of the spinning thread.
func (h *HostStalls) add(gap time.Duration) {
	h.Longest = max(h.Longest, gap)
	if gap < StallMin {
		return
	}
	h.Stalls++
	h.Lost += gap
	if gap >= StallLong {
		h.Long++
	}
}

// LostShare is Lost as a share of Window.
func (h HostStalls) LostShare() float64 {
	if h.Window <= 0 {
		return 0
	}
	return float64(h.Lost) / float64(h.Window)
}

// ProbeStalls spins a thread pinned to cpu for d, reading the clock, and
// reports the gaps. With rtPrio > 0 it spins at SCHED_FIFO rtPrio, as the
// workers would (keep d under the RT throttling budget, 950 ms a second by
// default, or the throttling shows up as a stall). It runs on a thread of
// its own that is not handed back to Go.
func ProbeStalls(cpu int, d time.Duration, rtPrio int) (HostStalls, error) {
	type result struct {
		h   HostStalls
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread ends with the goroutine (still locked): its affinity
		// and policy are not handed to other goroutines.
		runtime.LockOSThread()
		h := HostStalls{CPU: cpu, RT: rtPrio > 0}
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			ch <- result{err: fmt.Errorf("host check: pin to CPU %d: %w", cpu, err)}
			return
		}
		if rtPrio > 0 {
			if err := host.SetRealtime(rtPrio); err != nil {
				ch <- result{err: fmt.Errorf("host check: %w", err)}
				return
			}
		}
		start := time.Now()
		prev := start
		for {
			now := time.Now()
			h.add(now.Sub(prev))
			prev = now
			if now.Sub(start) >= d {
				h.Window = now.Sub(start)
				break
			}
		}
		ch <- result{h: h}
	}()
	r := <-ch
	return r.h, r.err
}

// HostCheck probes every CPU of cpus for d at once (at SCHED_FIFO rtPrio
// when rtPrio > 0) while a thread spins on each other CPU of others, as
// the sender does during a run. The others matter: on a virtual machine
// whose virtual CPUs share physical cores, a CPU stalls far more often
// while its sibling is busy than while the sibling idles.
func HostCheck(cpus, others []int, d time.Duration, rtPrio int) ([]HostStalls, error) {
	type res struct {
		i   int
		h   HostStalls
		err error
	}
	ch := make(chan res, len(cpus)+len(others))
	for i, c := range cpus {
		go func() {
			h, err := ProbeStalls(c, d, rtPrio)
			ch <- res{i, h, err}
		}()
	}
	for _, c := range others {
		go func() {
			_, err := ProbeStalls(c, d, 0)
			ch <- res{-1, HostStalls{}, err}
		}()
	}
	out := make([]HostStalls, len(cpus))
	var errs []error
	for range len(cpus) + len(others) {
		r := <-ch
		if r.err != nil {
			errs = append(errs, r.err)
		} else if r.i >= 0 {
			out[r.i] = r.h
		}
	}
	return out, errors.Join(errs...)
}

// WriteHostCheck prints one line per probed CPU.
func WriteHostCheck(w io.Writer, hs []HostStalls) {
	for _, h := range hs {
		class := "SCHED_OTHER"
		if h.RT {
			class = "SCHED_FIFO"
		}
		fmt.Fprintf(w, "host check, CPU %d, %.1f s spinning at %s (other CPUs busy) before the runs: %d stalls ≥ %v (%d ≥ %v), %.2f %% of the time, longest %v",
			h.CPU, h.Window.Seconds(), class, h.Stalls, StallMin, h.Long, StallLong, 100*h.LostShare(), h.Longest.Round(time.Microsecond))
		if h.LostShare() >= 0.005 {
			fmt.Fprintf(w, " — events wait out these stalls at any load: a p99 under %v is out of reach while they last", StallMin)
		}
		fmt.Fprintln(w)
	}
}
