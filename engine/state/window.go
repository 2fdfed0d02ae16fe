package state

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// ErrInvalidWindow is matched (errors.Is) by every error NewWindow returns
// for a bad WindowConfig, and by ParseAgg's error.
var ErrInvalidWindow = errors.New("invalid window")

// Agg is a window aggregation.
type Agg uint8

// Aggregations. AggDistinct is approximate (HyperLogLog, see sketch.go).
const (
	AggCount Agg = iota
	AggSum
	AggMin
	AggMax
	AggAvg
	AggDistinct
)

var aggNames = [...]string{"count", "sum", "min", "max", "avg", "distinct"}

func (a Agg) String() string {
	if int(a) < len(aggNames) {
		return aggNames[a]
	}
	return fmt.Sprintf("Agg(%d)", uint8(a))
}

// ParseAgg parses "count", "sum", "min", "max", "avg" or "distinct".
func ParseAgg(s string) (Agg, error) {
	for i, n := range aggNames {
		if s == n {
			return Agg(i), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown aggregation %q (want count, sum, min, max, avg or distinct)", ErrInvalidWindow, s)
}

// WindowConfig configures a Window.
type WindowConfig struct {
	// Size is the window length, a multiple of Slide; Size/Slide is the number
	// of segments n, 1..1024.
	Size time.Duration
	// Slide is the granularity, >= 1ms.
	Slide time.Duration
	Agg   Agg
	// MaxKeys caps the live keys, rounded up to a power of two (default 1<<20,
	// at most 1<<30). Memory is allocated up front, see Window.
	MaxKeys int
	// Precision is the HyperLogLog precision p of AggDistinct, 4..16
	// (default 8: 256 registers of one byte per segment, standard error 6.5%).
	// Ignored for the other aggregations.
	Precision uint8
	// Emitting windows (every_slide, see emit.go) keep one more segment per
	// key than the window spans, so that a completed window stays readable
	// for a whole slide after its end, and KeyBytes of key text per slot.
	Emitting bool
	KeyBytes int
	// KeepLast (emitting windows) keeps each key's last reported value, for
	// Walk's minChange.
	KeepLast bool
}

// WindowStats are cumulative counters of a Window.
type WindowStats struct {
	Keys      uint64 // live keys
	Capacity  uint64 // slots (MaxKeys rounded up to a power of two)
	Evictions uint64 // expired keys replaced by new ones
	Full      uint64 // observations whose key found no free and no expired slot (not stored; a rule applies its OnFull)
	Late      uint64 // observations whose segment had moved on to a newer step (not stored)
	// KeyTruncated (emitting windows): keys whose text was longer than
	// max_key_bytes, cut when they took a slot.
	KeyTruncated uint64
	Bytes        uint64 // memory held by the window
	BytesPerKey  uint64 // Bytes / Capacity
}

// Window is a set of per-key sliding windows over one aggregation.
//
// # What is in a window
//
// Time is cut into steps of Slide s; an observation at time t belongs to
// step floor(t/s). A window of n = Size/s segments queried at now, with
// k = floor(now/s), covers steps k-n+1 .. k: the observations with
// (k-n+1)*s <= t <= now, a span between Size-s and Size long. Each key has a
// ring of n segments; step j lives in segment j mod n, tagged with its step
// (the epoch), so a segment holding an older step is recognised as stale and
// reset on the next write, and ignored by reads. Gaps longer than the window
// and forward clock jumps therefore need no sweeping: everything older is
// simply stale. A window that emits every slide (emit.go) keeps n+1
// segments per key (ring), so that a completed window stays whole for one
// more slide; reads still cover n steps. An observation for an earlier step than now (a caller's clock
// lagging behind another's) is stored in its own step's segment unless that
// segment already holds a newer step, in which case it is counted as Late and
// only reflected in the value its Add returns.
//
// # Results
//
// count and distinct are returned as float64; sum is the float sum; min/max
// are the extremes; avg is sum/count. Add always includes its own
// observation, so its result is never from an empty window. Results are
// never NaN and never ±Inf: a NaN value is recorded as 0, ±Inf as
// ±MaxFloat64, a segment's sum saturates at ±MaxFloat64 (so +Max, +Max,
// -Max in one segment sums to 0, where float addition would have made
// Inf - Inf = NaN and kept it for the whole window), and the window's sum
// of its (finite) segments is clamped to ±MaxFloat64. Value reports false
// for an unknown key or an empty window. A value read while other goroutines
// add to the same key is assembled field by field (each field atomic), so it
// may include part of a concurrent observation.
//
// # Concurrency: the segment reset protocol
//
// Add and Value are safe for concurrent use, do not allocate and take no
// lock. A segment is words [epoch, count, value] (+ HLL registers for
// distinct). epoch is 0 for a cleared segment (all fields zero, which is the
// identity of every aggregation: min/max are stored XORed with +Inf/-Inf
// bits) or (step+1)<<1, with the low bit set while a reset is in progress.
// A writer for step k:
//   - epoch == ready(k): it adds (count by atomic add, sum/min/max by CAS
//     loops on the float bits, HLL registers by CAS).
//   - epoch == 0: CAS 0 -> ready(k), then adds; no clearing needed.
//   - epoch == ready(j), j < k (stale): CAS it to resetting(k); the one
//     winner zeroes the fields and stores ready(k); then it adds.
//   - resetting(any): it waits for the winner to store ready (spinning,
//     yielding after 16 tries); then it re-reads.
//   - a step newer than k: Late, nothing stored.
//
// Nobody adds while a reset is in progress and a reset only starts from a
// stale epoch, so a reset can never wipe an observation of its own step. In
// the single-writer-per-key case there is never a wait and nothing is lost or
// double counted. With several writers per key it is also exact, with one
// bound: a writer whose clock lags another's by a whole window (n steps) may
// find its segment reused, which is the Late case, or, if it was descheduled
// for that long between reading the epoch and adding, may add to the newer
// step (at most one observation per such writer). The only wait is for a
// concurrent reset of the same key's segment by another writer at a step
// boundary: a few stores (plus 2^p/8 for distinct), no calls.
//
// Keys live in a keyTable (ratelimit.go) whose stamp is the newest step
// written, plus one. A key is idle when all its steps are older than the
// window (stamp <= k+1-n): evicting it loses nothing. The evictor clears the
// key's segments while it holds the slot.
//
// # Memory
//
// Allocated up front for the capacity, per key: 16 bytes of table plus n
// segments of 16 bytes (count, distinct) or 24 bytes (sum, min, max, avg),
// plus n*2^p bytes of registers for distinct. 60s/5s sum: 304 bytes;
// 60s/5s distinct at p=8: 3280 bytes. Stats reports the figures.
type Window struct {
	tab      keyTable
	n        uint64 // segments of a window
	ring     uint64 // segments per key: n, or n+1 for an emitting window
	slide    int64
	agg      Agg
	stride   uint64 // words per segment in seg
	seg      []atomic.Uint64
	p        uint8
	regWords uint64 // register words per segment
	regs     []atomic.Uint64
	late     atomic.Uint64

	// Emitting windows only (emit.go): the key text of each slot, the
	// newest step observed, and the emitter's own state.
	text *keyText
	seen atomic.Uint64 // newest step with an observation, plus one
	prev atomic.Uint64 // an older step with an observation, plus one: the newest seen replaced
	wake chan<- struct{}
	emit emitState
}

const (
	windowMaxSegments = 1024
	segEpoch          = 0
	segCount          = 1
	segValue          = 2
)

var (
	posInfBits = math.Float64bits(math.Inf(1))
	negInfBits = math.Float64bits(math.Inf(-1))
)

// WindowPlan is a validated WindowConfig: everything NewWindow derives
// before it allocates, so that memory can be counted and a config refused
// without allocating.
type WindowPlan struct {
	n, ring, stride, regWords, capacity uint64
	slide                               int64
	agg                                 Agg
	p                                   uint8
	textWords                           uint64 // key text words per slot; 0: no key text
	keepLast                            bool   // keep the last emitted value per slot
}

// PlanWindow validates cfg; its errors match ErrInvalidWindow.
func PlanWindow(cfg WindowConfig) (WindowPlan, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidWindow, fmt.Sprintf(format, a...))
	}
	if cfg.Slide < time.Millisecond {
		return WindowPlan{}, bad("slide must be >= 1ms, got %v", cfg.Slide)
	}
	if cfg.Size <= 0 || cfg.Size%cfg.Slide != 0 {
		return WindowPlan{}, bad("size %v must be a positive multiple of slide %v", cfg.Size, cfg.Slide)
	}
	n := uint64(cfg.Size / cfg.Slide)
	if n > windowMaxSegments {
		return WindowPlan{}, bad("size/slide = %d segments, at most %d allowed", n, windowMaxSegments)
	}
	if int(cfg.Agg) >= len(aggNames) {
		return WindowPlan{}, bad("unknown aggregation %v", cfg.Agg)
	}
	capacity, err := tableCapacity(cfg.MaxKeys)
	if err != nil {
		return WindowPlan{}, bad("%v", err)
	}
	w := WindowPlan{n: n, ring: n, slide: int64(cfg.Slide), agg: cfg.Agg, stride: 3, capacity: capacity}
	if cfg.Emitting {
		if cfg.KeyBytes < KeyTextMin || cfg.KeyBytes > KeyTextMax {
			return WindowPlan{}, bad("max_key_bytes must be %d..%d, got %d", KeyTextMin, KeyTextMax, cfg.KeyBytes)
		}
		w.ring = n + 1
		w.textWords = keyTextWords(cfg.KeyBytes)
		w.keepLast = cfg.KeepLast
	}
	if cfg.Agg == AggCount || cfg.Agg == AggDistinct {
		w.stride = 2
	}
	if cfg.Agg == AggDistinct {
		p := cfg.Precision
		if p == 0 {
			p = hllDefaultPrecision
		}
		if p < hllMinPrecision || p > hllMaxPrecision {
			return WindowPlan{}, bad("precision must be %d..%d, got %d", hllMinPrecision, hllMaxPrecision, cfg.Precision)
		}
		w.p = p
		w.regWords = (uint64(1) << p) / 8
	}
	if w.Bytes() > 1<<40 {
		return WindowPlan{}, bad("max_keys %d with %d segments needs %d bytes, more than 1 TiB", capacity, n, w.Bytes())
	}
	return w, nil
}

// BytesPerKey is one table slot plus its segments (and their registers),
// and for an emitting window its key text and last emitted value.
func (w *WindowPlan) BytesPerKey() uint64 {
	b := rlBytesPerKey + 8*w.ring*(w.stride+w.regWords) + 8*w.textWords
	if w.keepLast {
		b += 16
	}
	return b
}

// Capacity is the table's slots: MaxKeys rounded up to a power of two.
func (w *WindowPlan) Capacity() uint64 { return w.capacity }

// Bytes is what Build allocates: the table, segments and registers.
func (w *WindowPlan) Bytes() uint64 { return w.BytesPerKey() * w.capacity }

// Build allocates the window w plans.
func (w *WindowPlan) Build() *Window {
	win := &Window{n: w.n, ring: w.ring, slide: w.slide, agg: w.agg, stride: w.stride, p: w.p, regWords: w.regWords}
	win.seg = make([]atomic.Uint64, w.capacity*w.ring*w.stride)
	if w.regWords > 0 {
		win.regs = make([]atomic.Uint64, w.capacity*w.ring*w.regWords)
	}
	if w.textWords > 0 {
		win.text = newKeyText(w.capacity, w.textWords)
		win.emit.buf = make([]byte, 0, KeyTextMax)
	}
	if w.keepLast {
		win.emit.last = make([]emitLast, w.capacity)
	}
	win.tab.init(w.capacity, win.clearSlot)
	return win
}

// Bytes returns the memory NewWindow(cfg) allocates (validating cfg as
// NewWindow does), without allocating it.
func (cfg WindowConfig) Bytes() (uint64, error) {
	p, err := PlanWindow(cfg)
	if err != nil {
		return 0, err
	}
	return p.Bytes(), nil
}

// NewWindow validates cfg and allocates the windows. clock is accepted for
// symmetry with NewRateLimiter and may be nil; Add and Value take now.
func NewWindow(cfg WindowConfig, clock Clock) (*Window, error) {
	_ = clock
	p, err := PlanWindow(cfg)
	if err != nil {
		return nil, err
	}
	return p.Build(), nil
}

// clearSlot zeroes every segment of slot; called by the keyTable evictor
// while it holds the slot.
func (w *Window) clearSlot(s uint64) {
	seg := w.seg[s*w.ring*w.stride : (s+1)*w.ring*w.stride]
	for i := range seg {
		seg[i].Store(0)
	}
	if w.regWords > 0 {
		regs := w.regs[s*w.ring*w.regWords : (s+1)*w.ring*w.regWords]
		for i := range regs {
			regs[i].Store(0)
		}
	}
}

func (w *Window) step(now int64) uint64 {
	if now < 0 {
		now = 0
	}
	return uint64(now / w.slide)
}

// slot finds or inserts key for step k and marks the slot as written at k,
// following keyTable's stamp/key protocol.
func (w *Window) slot(key, k uint64) (uint64, bool) {
	t := &w.tab
	stamp := int64(k + 1)
	for retry := 0; ; retry++ {
		s, ok := t.acquire(key, stamp-int64(w.ring), stamp)
		if !ok {
			return 0, false
		}
		for {
			st := t.slots[s].stamp.Load()
			if st == stampLocked || t.slots[s].key.Load() != key {
				break
			}
			// Once the stamp is >= k+1 no evictor working at a step less
			// than k+n can take the slot (see Window's doc).
			if st >= stamp || t.slots[s].stamp.CompareAndSwap(st, stamp) {
				return s, true
			}
		}
		backoff(retry)
	}
}

// Add records one observation for key at time now and returns the aggregate
// over the window ending at now, including this observation. value is used
// by sum, min, max and avg; distinct, the 64-bit hash of the counted value,
// by distinct. It does not allocate.
//
// A key that finds the table full (no free and no expired slot in its probe
// range) is counted in Full, nothing is stored, and the result is the
// aggregate of this observation alone, as for a new key.
func (w *Window) Add(key uint64, value float64, distinct uint64, now int64) float64 {
	v, _ := w.add(key, value, distinct, now)
	return v
}

// add is Add that also reports whether the key had a slot (false: the
// table was full), so that a rule can apply its OnFull.
func (w *Window) add(key uint64, value float64, distinct uint64, now int64) (float64, bool) {
	v, _, ok := w.AddAt(key, value, distinct, now)
	return v, ok
}

// AddAt is Add that also returns the key's slot and whether it had one
// (false: the table was full, so that a rule can apply its OnFull), for
// the key text of an emitting window (WantsText). It does not allocate.
func (w *Window) AddAt(key uint64, value float64, distinct uint64, now int64) (float64, uint64, bool) {
	value = finite(value)
	k := w.step(now)
	if w.text != nil {
		w.noteStep(k)
	}
	s, ok := w.slot(key, k)
	if !ok {
		a := windowAcc{min: math.Inf(1), max: math.Inf(-1)}
		return w.finish(&a, value, distinct, true), 0, false
	}
	stored := w.record(s, k, value, distinct)
	var a windowAcc
	w.gather(s, k, &a)
	if !stored {
		w.late.Add(1)
	}
	return w.finish(&a, value, distinct, !stored), s, true
}

// finite maps NaN to 0 and ±Inf to ±MaxFloat64, so that every stored
// observation is finite.
func finite(v float64) float64 {
	switch {
	case v != v:
		return 0
	case v > math.MaxFloat64:
		return math.MaxFloat64
	case v < -math.MaxFloat64:
		return -math.MaxFloat64
	}
	return v
}

// satAdd adds two finite floats, saturating at ±MaxFloat64: sums stay
// finite, so a later opposite overflow can never make Inf-Inf = NaN.
func satAdd(a, b float64) float64 { return finite(a + b) }

// Value returns the aggregate over the window ending at now, or false if the
// key is unknown or its window is empty. It does not allocate.
func (w *Window) Value(key uint64, now int64) (float64, bool) {
	s, ok := w.tab.find(key)
	if !ok {
		return 0, false
	}
	var a windowAcc
	w.gather(s, w.step(now), &a)
	if a.count == 0 || w.tab.slots[s].key.Load() != key {
		return 0, false // empty, or evicted while we read
	}
	return w.finish(&a, 0, 0, false), true
}

// record stores one observation in the segment of step k of slot s,
// following the reset protocol documented on Window. It returns false if the
// segment holds a newer step (Late).
func (w *Window) record(s, k uint64, value float64, distinct uint64) bool {
	j := k % w.ring
	seg := w.seg[(s*w.ring+j)*w.stride:][:w.stride]
	ep := &seg[segEpoch]
	want := (k + 1) << 1
	for spin := 0; ; spin++ {
		e := ep.Load()
		if e == want {
			break
		}
		if e&1 != 0 {
			backoff(spin) // another writer is resetting: a few stores
			continue
		}
		if e > want {
			return false
		}
		if e == 0 {
			if ep.CompareAndSwap(0, want) {
				break
			}
			continue
		}
		if ep.CompareAndSwap(e, want|1) {
			// We own the reset: nobody adds until we store want.
			for i := 1; i < len(seg); i++ {
				seg[i].Store(0)
			}
			if w.regWords > 0 {
				regs := w.regs[(s*w.ring+j)*w.regWords:][:w.regWords]
				for i := range regs {
					regs[i].Store(0)
				}
			}
			ep.Store(want)
			break
		}
	}
	seg[segCount].Add(1)
	switch w.agg {
	case AggSum, AggAvg:
		v := &seg[segValue]
		for {
			old := v.Load()
			if v.CompareAndSwap(old, math.Float64bits(satAdd(math.Float64frombits(old), value))) {
				break
			}
		}
	case AggMin:
		casExtreme(&seg[segValue], value, posInfBits, true)
	case AggMax:
		casExtreme(&seg[segValue], value, negInfBits, false)
	case AggDistinct:
		idx, rank := hllPos(distinct, w.p)
		hllInsert(w.regs[(s*w.ring+j)*w.regWords:][:w.regWords], idx, rank)
	}
	return true
}

// casExtreme lowers (isMin) or raises the float stored XORed with ident in
// word to v.
func casExtreme(word *atomic.Uint64, v float64, ident uint64, isMin bool) {
	for {
		old := word.Load()
		cur := math.Float64frombits(old ^ ident)
		if (isMin && !(v < cur)) || (!isMin && !(v > cur)) {
			return
		}
		if word.CompareAndSwap(old, math.Float64bits(v)^ident) {
			return
		}
	}
}

// windowAcc accumulates the live segments of one key.
type windowAcc struct {
	count    uint64
	sum      float64
	min, max float64
	live     [(windowMaxSegments + 64) / 64]uint64 // bitmap of live segments (distinct; ring may be n+1)
	regBase  uint64                                // first register word of the slot (distinct)
}

// gather folds the segments of slot s that belong to the window ending at
// step k into a.
func (w *Window) gather(s, k uint64, a *windowAcc) {
	a.min, a.max = math.Inf(1), math.Inf(-1)
	a.regBase = s * w.ring * w.regWords
	base := s * w.ring * w.stride
	lo := (k + 2 - min(w.n, k+1)) << 1 // ready(k-n+1), or ready(0) early on
	hi := (k + 1) << 1                 // ready(k)
	for j := uint64(0); j < w.ring; j++ {
		seg := w.seg[base+j*w.stride:][:w.stride]
		e := seg[segEpoch].Load()
		if e < lo || e > hi || e&1 != 0 {
			continue // cleared, stale, newer than now, or being reset
		}
		c := seg[segCount].Load()
		if c == 0 {
			continue
		}
		a.count += c
		switch w.agg {
		case AggSum, AggAvg:
			// Segment sums are finite (record saturates them), so this
			// sum can reach ±Inf but never NaN; finish clamps it.
			a.sum += math.Float64frombits(seg[segValue].Load())
		case AggMin:
			a.min = min(a.min, math.Float64frombits(seg[segValue].Load()^posInfBits))
		case AggMax:
			a.max = max(a.max, math.Float64frombits(seg[segValue].Load()^negInfBits))
		case AggDistinct:
			a.live[j>>6] |= 1 << (j & 63)
		}
	}
}

// finish turns a into the aggregate, folding in one more observation if
// extra (a Late or Full observation, or one not stored).
func (w *Window) finish(a *windowAcc, value float64, distinct uint64, extra bool) float64 {
	if extra {
		a.count++
		a.sum += value
		a.min = min(a.min, value)
		a.max = max(a.max, value)
	}
	a.sum = finite(a.sum)
	switch w.agg {
	case AggCount:
		return float64(a.count)
	case AggSum:
		return a.sum
	case AggMin:
		return a.min
	case AggMax:
		return a.max
	case AggAvg:
		if a.count == 0 {
			return 0
		}
		return a.sum / float64(a.count)
	}
	return w.estimate(a, distinct, extra)
}

// estimate merges the registers of the live segments by byte-wise max, word
// by word, and estimates the distinct count. If extra, hash distinct is
// folded in as well.
func (w *Window) estimate(a *windowAcc, distinct uint64, extra bool) float64 {
	var xidx, xrank uint64
	if extra {
		xidx, xrank = hllPos(distinct, w.p)
	}
	var hist hllHist
	for i := uint64(0); i < w.regWords; i++ {
		m := uint64(0)
		for b, word := range a.live {
			for word != 0 {
				j := uint64(b)*64 + uint64(bits.TrailingZeros64(word))
				word &= word - 1
				m = hllByteMax(m, w.regs[a.regBase+j*w.regWords+i].Load())
			}
		}
		if extra && xidx>>3 == i {
			m = hllByteMax(m, xrank<<((xidx&7)*8))
		}
		hllAccum(m, &hist)
	}
	return math.Round(hllEstimate(&hist, w.p))
}

// Stats returns the counters. They are read one by one, not as a snapshot.
func (w *Window) Stats() WindowStats {
	perKey := rlBytesPerKey + 8*w.ring*(w.stride+w.regWords)
	if w.text != nil {
		perKey += 8 * w.text.stride
	}
	if w.emit.last != nil {
		perKey += 16
	}
	c := uint64(len(w.tab.slots))
	return WindowStats{
		Keys:      w.tab.live.Load(),
		Capacity:  c,
		Evictions: w.tab.evictions.Load(),
		Full:      w.tab.full.Load(),
		Late:      w.late.Load(),
		KeyTruncated: func() uint64 {
			if w.text == nil {
				return 0
			}
			return w.text.truncated.Load()
		}(),
		Bytes:       perKey * c,
		BytesPerKey: perKey,
	}
}
