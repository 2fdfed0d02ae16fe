package state

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// HyperLogLog registers for the approximate distinct count of AggDistinct
// windows (window.go).
//
// A sketch of precision p has m = 2^p one-byte registers, packed eight to an
// atomic uint64 word so that an insert is a CAS on one word and a merge is a
// byte-wise max over words. Its relative standard error is 1.04/sqrt(m):
// p=8 (256 bytes) 6.5%, p=10 (1 KiB) 3.25%, p=12 (4 KiB) 1.63%. The
// estimator is Ertl's (hllEstimate): near exact for small counts, unbiased
// over the whole range, and with 64-bit hashes no large-range correction. Register values are at most 65-p <= 61, which leaves the top bit of
// every byte free for the SWAR max in hllByteMax.

const (
	hllMinPrecision     = 4
	hllMaxPrecision     = 16
	hllDefaultPrecision = 8
)

// hllHist counts registers by value (0..65-p).
type hllHist [66]int

// hllMix is the murmur3 64-bit finalizer: callers may pass hashes of poor
// quality (small integers), the sketch needs uniform bits.
func hllMix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// hllPos returns the register index and rank (1 + leading zeros of the
// remaining bits) of hash h for precision p.
func hllPos(h uint64, p uint8) (idx, rank uint64) {
	h = hllMix(h)
	idx = h >> (64 - p)
	rank = uint64(bits.LeadingZeros64(h<<p|1<<(p-1))) + 1
	return idx, rank
}

// hllInsert raises register idx of regs to rank.
func hllInsert(regs []atomic.Uint64, idx, rank uint64) {
	w := &regs[idx>>3]
	shift := (idx & 7) * 8
	for {
		old := w.Load()
		if (old>>shift)&0xff >= rank {
			return
		}
		if w.CompareAndSwap(old, old&^(0xff<<shift)|rank<<shift) {
			return
		}
	}
}

const hllHigh = 0x8080808080808080

// hllByteMax is the byte-wise max of a and b, whose bytes are all < 128.
func hllByteMax(a, b uint64) uint64 {
	ge := ((a | hllHigh) - b) & hllHigh // high bit of a byte set iff a >= b there
	mask := (ge >> 7) * 0xff
	return a&mask | b&^mask
}

// hllAccum adds the eight registers of one merged word to h.
func hllAccum(word uint64, h *hllHist) {
	for i := 0; i < 8; i++ {
		h[word&0xff]++
		word >>= 8
	}
}

// hllEstimate is Ertl's improved estimator ("New cardinality estimation
// algorithms for HyperLogLog sketches", 2017, algorithm 6) over the register
// histogram of a sketch of precision p. Unlike the original HLL estimator
// with its linear-counting switch it has no biased zone around 2.5m, and its
// standard error is the usual 1.04/sqrt(m).
func hllEstimate(h *hllHist, p uint8) float64 {
	m := float64(uint64(1) << p)
	q := 64 - int(p)
	z := m * hllTau(1-float64(h[q+1])/m)
	for k := q; k >= 1; k-- {
		z = 0.5 * (z + float64(h[k]))
	}
	z += m * hllSigma(float64(h[0])/m)
	return m * m / (2 * math.Ln2) / z
}

func hllSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		old := z
		z += x * y
		y += y
		if z == old {
			return z
		}
	}
}

func hllTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		old := z
		y *= 0.5
		z -= (1 - x) * (1 - x) * y
		if z == old {
			return z / 3
		}
	}
}

// hllSketch is a stand-alone, concurrency-safe sketch over the same
// registers; windows keep one register block per segment instead.
type hllSketch struct {
	p    uint8
	regs []atomic.Uint64
}

func newHLLSketch(p uint8) *hllSketch {
	return &hllSketch{p: p, regs: make([]atomic.Uint64, (1<<p)/8)}
}

func (s *hllSketch) add(h uint64) {
	idx, rank := hllPos(h, s.p)
	hllInsert(s.regs, idx, rank)
}

func (s *hllSketch) merge(o *hllSketch) {
	for i := range s.regs {
		for {
			old := s.regs[i].Load()
			nw := hllByteMax(old, o.regs[i].Load())
			if nw == old || s.regs[i].CompareAndSwap(old, nw) {
				break
			}
		}
	}
}

func (s *hllSketch) estimate() float64 {
	var h hllHist
	for i := range s.regs {
		hllAccum(s.regs[i].Load(), &h)
	}
	return hllEstimate(&h, s.p)
}

// hllStdErr is the relative standard error of a sketch of precision p.
func hllStdErr(p uint8) float64 { return 1.04 / math.Sqrt(float64(uint64(1)<<p)) }
