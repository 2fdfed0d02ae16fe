package state

import (
	"math"
	"testing"
	"time"
)

// TestHLLAccuracy: on 10k and 100k distinct values the estimate is within 3
// standard errors (1.04/sqrt(m)), for several precisions and seeds; adding
// every value again changes nothing.
func TestHLLAccuracy(t *testing.T) {
	for _, p := range []uint8{8, 10, 12} {
		for _, n := range []int{10_000, 100_000} {
			for seed := uint64(0); seed < 3; seed++ {
				s := newHLLSketch(p)
				for i := 0; i < n; i++ {
					s.add(uint64(i) + seed<<40) // poor hashes on purpose: the sketch mixes
				}
				est := s.estimate()
				for i := 0; i < n; i += 3 {
					s.add(uint64(i) + seed<<40)
				}
				if again := s.estimate(); again != est {
					t.Errorf("p=%d n=%d: duplicates moved the estimate %v -> %v", p, n, est, again)
				}
				se := hllStdErr(p)
				if rel := math.Abs(est-float64(n)) / float64(n); rel > 3*se {
					t.Errorf("p=%d n=%d seed %d: estimate %.0f, error %.2f%% > 3 SE (%.2f%%)", p, n, seed, est, 100*rel, 300*se)
				}
			}
		}
	}
}

func TestHLLSmallCountsAndMerge(t *testing.T) {
	s := newHLLSketch(10)
	if e := s.estimate(); e != 0 {
		t.Fatalf("empty sketch: %v", e)
	}
	// Fixed hashes, not KeyHash: its seed changes per process, and two of
	// ten values sharing one of 1024 registers (about 4 % of seeds) makes
	// linear counting say 9.
	for i := uint64(1); i <= 10; i++ {
		s.add(splitmix64(i))
	}
	if e := math.Round(s.estimate()); e != 10 {
		t.Fatalf("10 values: %v", e)
	}
	a, b := newHLLSketch(8), newHLLSketch(8)
	u := newHLLSketch(8)
	for i := uint64(0); i < 30_000; i++ {
		if i%2 == 0 {
			a.add(i)
		} else {
			b.add(i)
		}
		u.add(i)
	}
	a.merge(b)
	if a.estimate() != u.estimate() {
		t.Fatalf("merge %v != union %v", a.estimate(), u.estimate())
	}
}

func TestHLLByteMax(t *testing.T) {
	tests := []struct{ a, b, want uint64 }{
		{0, 0, 0},
		{0x0102030405060708, 0x0807060504030201, 0x0807060505060708},
		{0x7f007f007f007f00, 0x007f007f007f007f, 0x7f7f7f7f7f7f7f7f},
		{0x3d, 0x3c, 0x3d},
		{0x0000000000000001, 0x0100000000000000, 0x0100000000000001},
	}
	for _, tc := range tests {
		if got := hllByteMax(tc.a, tc.b); got != tc.want {
			t.Errorf("hllByteMax(%#x, %#x) = %#x, want %#x", tc.a, tc.b, got, tc.want)
		}
		if got := hllByteMax(tc.b, tc.a); got != tc.want {
			t.Errorf("hllByteMax(%#x, %#x) = %#x, want %#x", tc.b, tc.a, got, tc.want)
		}
	}
}

// The distinct window merges per-segment sketches: 20k distinct values
// spread over all segments (with repeats across segments) are estimated
// within 3 SE, and expired segments drop out.
func TestHLLWindowDistinct(t *testing.T) {
	for _, p := range []uint8{8, 12} {
		w := winMust(t, WindowConfig{Size: 10 * time.Second, Slide: time.Second, Agg: AggDistinct, MaxKeys: 4, Precision: p})
		const n = 20_000
		for i := 0; i < n; i++ {
			now := int64(i%10) * nsSec
			w.Add(1, 0, uint64(i), now)
			if i%4 == 0 {
				w.Add(1, 0, uint64(i/2), now) // repeats, in other segments
			}
		}
		got, ok := w.Value(1, 9*nsSec)
		if rel := math.Abs(got-n) / n; !ok || rel > 3*hllStdErr(p) {
			t.Errorf("p=%d: estimate %v for %d distinct (error %.2f%%)", p, got, n, 100*rel)
		}
		// At 14s steps 0..4 are gone: values i%10 in 5..9 remain; i/2 repeats
		// of those are a subset of all i... count exactly what is left.
		left := map[uint64]bool{}
		for i := 0; i < n; i++ {
			if i%10 >= 5 {
				left[uint64(i)] = true
				if i%4 == 0 {
					left[uint64(i/2)] = true
				}
			}
		}
		got, _ = w.Value(1, 14*nsSec)
		if rel := math.Abs(got-float64(len(left))) / float64(len(left)); rel > 3*hllStdErr(p) {
			t.Errorf("p=%d after expiry: estimate %v, want ~%d", p, got, len(left))
		}
	}
}

// splitmix64 is a fixed 64-bit mixer (Steele, Lea, Flood 2014): distinct
// inputs give well-spread, reproducible hashes.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
