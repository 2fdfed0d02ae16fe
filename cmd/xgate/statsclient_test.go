package main

import (
	"math"
	"testing"
)

func TestQuantile(t *testing.T) {
	// 10 samples ≤ 1, 80 in (1, 2], 10 in (2, 4].
	bounds := []float64{1, 2, 4}
	cum := map[float64]uint64{1: 10, 2: 90, 4: 100}
	for _, tc := range []struct{ q, want float64 }{
		{0.05, 0.5}, {0.5, 1.5}, {0.95, 3}, {1, 4},
	} {
		if got := quantile(tc.q, bounds, cum, 100); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	// Samples beyond the last finite bound answer that bound.
	if got := quantile(0.999, bounds, cum, 200); got != 4 {
		t.Errorf("quantile in +Inf = %v, want 4", got)
	}
	if got := quantile(0.5, bounds, cum, 0); got != 0 {
		t.Errorf("empty histogram: %v", got)
	}
}
