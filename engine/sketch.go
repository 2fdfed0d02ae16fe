package engine

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
// p=8 (256 bytes) 6.5%, p=10 (1 KiB) 3.25%, p=12 (4 KiB) 1.63%. Small counts
// (estimate <= 2.5m with empty registers left) use linear counting, which is
// close to exact there. Hashes are 64-bit, so no large-range correction is
// needed. Register values are at most 65-p <= 61, which leaves the top bit of
// every byte free for the SWAR max in hllByteMax.

const (
	hllMinPrecision     = 4
	hllMaxPrecision     = 16
	hllDefaultPrecision = 8
)

// hllInv[r] = 2^-r.
var hllInv = func() (t [66]float64) {
	for r := range t {
		t[r] = math.Ldexp(1, -r)
	}
	return t
}()

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

func hllAlpha(m int) float64 {
	switch m {
	case 16:
		return 0.673
	case 32:
		return 0.697
	case 64:
		return 0.709
	}
	return 0.7213 / (1 + 1.079/float64(m))
}

// hllAccum sums the registers of one merged word into sum and zeros.
func hllAccum(word uint64, sum *float64, zeros *int) {
	for i := 0; i < 8; i++ {
		r := word & 0xff
		*sum += hllInv[r]
		if r == 0 {
			*zeros++
		}
		word >>= 8
	}
}

// hllEstimate turns sum(2^-reg) and the number of zero registers into a
// cardinality estimate.
func hllEstimate(sum float64, zeros, m int) float64 {
	fm := float64(m)
	e := hllAlpha(m) * fm * fm / sum
	if e <= 2.5*fm && zeros > 0 {
		e = fm * math.Log(fm/float64(zeros))
	}
	return e
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
	sum, zeros := 0.0, 0
	for i := range s.regs {
		hllAccum(s.regs[i].Load(), &sum, &zeros)
	}
	return hllEstimate(sum, zeros, 1<<s.p)
}

// hllStdErr is the relative standard error of a sketch of precision p.
func hllStdErr(p uint8) float64 { return 1.04 / math.Sqrt(float64(uint64(1)<<p)) }
