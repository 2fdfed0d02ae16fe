//go:build linux

package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestHostStallsAdd(t *testing.T) {
	var h HostStalls
	for _, g := range []time.Duration{
		time.Microsecond, 150 * time.Microsecond, StallMin, 700 * time.Microsecond,
		StallLong, 3 * time.Millisecond,
	} {
		h.add(g)
	}
	h.Window = 100 * time.Millisecond
	if h.Stalls != 4 || h.Long != 2 {
		t.Errorf("stalls %d long %d, want 4 and 2", h.Stalls, h.Long)
	}
	if want := StallMin + 700*time.Microsecond + StallLong + 3*time.Millisecond; h.Lost != want {
		t.Errorf("lost %v, want %v", h.Lost, want)
	}
	if h.Longest != 3*time.Millisecond {
		t.Errorf("longest %v", h.Longest)
	}
	if got := h.LostShare(); got < 0.0489 || got > 0.0491 {
		t.Errorf("lost share %v, want 0.049", got)
	}
	var b bytes.Buffer
	WriteHostCheck(&b, []HostStalls{h})
	if !strings.Contains(b.String(), "4 stalls ≥ 200µs (2 ≥ 1ms), 4.90 % of the time, longest 3ms") ||
		!strings.Contains(b.String(), "out of reach") {
		t.Errorf("line: %q", b.String())
	}
}

// TestProbeStalls spins on a CPU of the host for a moment: the window is
// the one asked for, and what it reports is consistent.
func TestProbeStalls(t *testing.T) {
	cpu := WorkerCPUs()[0]
	h, err := ProbeStalls(cpu, 50*time.Millisecond, 0)
	if err != nil {
		t.Fatal(err)
	}
	if h.Window < 50*time.Millisecond || h.Window > 5*time.Second {
		t.Errorf("window %v", h.Window)
	}
	if h.Long > h.Stalls || h.Lost > h.Window || h.Longest > h.Window || h.CPU != cpu || h.RT {
		t.Errorf("inconsistent: %+v", h)
	}
	if h.Stalls > 0 && h.Longest < StallMin {
		t.Errorf("%d stalls but the longest gap is %v", h.Stalls, h.Longest)
	}
}
