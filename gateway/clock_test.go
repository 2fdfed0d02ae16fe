package gateway

import (
	"testing"
	"time"
)

// TestMonotonicNs: the vDSO-based clock agrees with clock_gettime
// (CLOCK_MONOTONIC, the XDP program's clock) to within a few µs, and
// never goes backwards.
func TestMonotonicNs(t *testing.T) {
	prev := monotonicNs()
	for range 1000 {
		a := clockMonotonic()
		m := monotonicNs()
		b := clockMonotonic()
		// m lies between a and b but for the calibration's error.
		const slack = uint64(20 * time.Microsecond)
		if m+slack < a || m > b+slack {
			t.Fatalf("monotonicNs %d outside [%d, %d] ± %d", m, a, b, slack)
		}
		if m < prev {
			t.Fatalf("went backwards: %d after %d", m, prev)
		}
		prev = m
	}
}

func BenchmarkMonotonicNs(b *testing.B) {
	b.ReportAllocs()
	var s uint64
	for range b.N {
		s += monotonicNs()
	}
	_ = s
}
