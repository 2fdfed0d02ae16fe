package state

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// This file holds the per-key rate limiter and the fixed-capacity key table
// it shares with Window (window.go).

// ErrInvalidRateLimit is matched (errors.Is) by every error NewRateLimiter
// returns for a bad RateLimitConfig.
var ErrInvalidRateLimit = errors.New("invalid rate limit")

// ---------------------------------------------------------------------------
// keyTable: the lock-free, fixed-capacity, open-addressed table of keys that
// RateLimiter and Window both use. It maps a 64-bit key hash (from KeyHash,
// never 0) to a slot index; the owner keeps its per-slot state in its own
// arrays indexed by that slot. The table itself keeps, per slot:
//
//	keys[s]   the key hash owning slot s; 0 = never used.
//	stamps[s] an int64 "stamp" whose meaning is the owner's, with two rules
//	          the table relies on:
//	          (1) between evictions a slot's stamp never decreases
//	              (RateLimiter: the GCRA theoretical arrival time; Window: the
//	              newest segment index touched, plus one);
//	          (2) a stamp <= idleBefore (given by the caller) means the slot's
//	              state is indistinguishable from a brand-new key's state, so
//	              evicting it changes no future decision.
//	          stampLocked marks a slot being handed to a new key.
//
// Invariants that make the lock-free code correct:
//
//   - keys[s] changes only in two ways: 0 -> k by CAS (claiming a never-used
//     slot), and k -> k' by a plain Store made by the one goroutine that won
//     the CAS stamps[s]: idle -> stampLocked (eviction). A key never goes back
//     to 0, so a probe that meets 0 knows the key is not further along: keys
//     are claimed in probe order.
//   - Only an evictor holding the lock writes a locked slot; it resets the
//     owner's state (clear), stores the new key, then stores a fresh stamp that
//     is strictly greater than the idle stamp it locked (RateLimiter: now >
//     now-IdleTTL; Window: k+1 > k+1-n). With rule (1) this means that once a
//     slot has been taken from key A, its stamp never again equals any value a
//     goroutine working for A could have loaded: there is no ABA.
//   - A goroutine working for key A on slot s loads stamps[s] (retrying the
//     lookup if it is stampLocked), then re-loads keys[s] and retries the
//     lookup unless it is still A; then it publishes by CAS on stamps[s] from
//     the value it loaded. The CAS succeeds only if no eviction happened in
//     between (see the ABA point), so every successful decision was made on
//     A's own state, and a decision can never land in another key's state.
//   - Two goroutines inserting the same new key: both probe in the same order
//     and claim the first empty slot by CAS; the loser re-reads the slot and
//     finds the key there, so both use one slot. When the range has no empty
//     slot (it never will again: keys do not go back to 0) they may each lock
//     a different idle slot; evict's intent/yield rule leaves exactly one.
//     So a key never occupies two slots.
//   - Eviction racing an update of the evicted key: the evictor's CAS from the
//     idle stamp fails if the update published first; if the eviction wins,
//     the update's CAS fails (the stamp moved on) and it retries the lookup,
//     inserting its key afresh. Nothing is lost or double counted.
//   - A goroutine that finds a slot locked retries; the evictor's critical
//     section is a few stores (plus clearing the owner's state), it makes no
//     call that blocks. After 16 retries the waiter yields the processor.
type keyTable struct {
	// slots keeps each slot's key and stamp side by side, so a lookup
	// touches one cache line, not two.
	slots []tableSlot
	shift uint8  // home slot = (key * fib) >> shift
	mask  uint64 // len(keys) - 1
	probe uint64 // probe range, <= len(keys)
	clear func(slot uint64)

	_         [64]byte // keep the counters off the read-mostly header
	live      atomic.Uint64
	evictions atomic.Uint64
	full      atomic.Uint64
}

// tableSlot is keys[s] and stamps[s] of the description above.
type tableSlot struct {
	key   atomic.Uint64
	stamp atomic.Int64
}

const (
	stampLocked     = math.MinInt64
	tableProbe      = 16
	tableDefaultCap = 1 << 20
	tableMaxCap     = 1 << 30
	fibMul          = 0x9E3779B97F4A7C15
)

// tableCapacity returns maxKeys rounded up to a power of two, or an error
// naming the field.
func tableCapacity(maxKeys int) (uint64, error) {
	if maxKeys == 0 {
		maxKeys = tableDefaultCap
	}
	if maxKeys < 0 || maxKeys > tableMaxCap {
		return 0, fmt.Errorf("max_keys must be between 1 and %d, got %d", tableMaxCap, maxKeys)
	}
	c := uint64(1)
	for c < uint64(maxKeys) {
		c <<= 1
	}
	return c, nil
}

func (t *keyTable) init(capacity uint64, clear func(slot uint64)) {
	t.slots = make([]tableSlot, capacity)
	t.mask = capacity - 1
	bits := uint8(0)
	for uint64(1)<<bits < capacity {
		bits++
	}
	t.shift = 64 - bits // a shift of 64 yields 0: a one-slot table
	t.probe = min(uint64(tableProbe), capacity)
	t.clear = clear
}

func (t *keyTable) home(key uint64) uint64 { return (key * fibMul) >> t.shift }

// find returns the slot holding key without inserting it.
func (t *keyTable) find(key uint64) (uint64, bool) {
	h := t.home(key)
	for i := uint64(0); i < t.probe; i++ {
		s := (h + i) & t.mask
		switch t.slots[s].key.Load() {
		case key:
			return s, true
		case 0:
			return 0, false
		}
	}
	return 0, false
}

// acquire returns the slot of key, inserting it if needed: into the first
// never-used slot of its probe range, else into a slot whose stamp is
// <= idleBefore (an eviction; the new stamp is fresh, which must be greater
// than idleBefore). It returns false, counting Full, when the range holds no
// free and no idle slot. The caller must still follow the stamp/key protocol
// documented on keyTable before trusting the slot.
func (t *keyTable) acquire(key uint64, idleBefore, fresh int64) (uint64, bool) {
	h := t.home(key)
	for retry := 0; ; retry++ {
		for i := uint64(0); i < t.probe; i++ {
			s := (h + i) & t.mask
			k := t.slots[s].key.Load()
			if k == key {
				return s, true
			}
			if k == 0 {
				if t.slots[s].key.CompareAndSwap(0, key) {
					t.live.Add(1)
					return s, true
				}
				if t.slots[s].key.Load() == key { // the same new key, inserted concurrently
					return s, true
				}
			}
		}
		s, res := t.evict(key, h, idleBefore, fresh)
		switch res {
		case evictDone:
			return s, true
		case evictFull:
			t.full.Add(1)
			return 0, false
		}
		// evictYield: another goroutine inserted key. evictBusy: no idle
		// slot, but some are being handed over (a few stores, no blocking
		// call) and one may come back idle: look again rather than report a
		// Full that is not real.
		backoff(retry)
	}
}

const (
	evictDone = iota
	evictFull
	evictYield
	evictBusy
)

// evict is acquire's slow path: every slot of the range is taken and none
// holds key. It locks an idle slot, stores key in it (an "intent", still
// locked) and checks the range for the same key inserted by a concurrent
// evictor. Rule, so that exactly one slot survives: yield (restore the old
// key and stamp) if key is published in another slot, or locked in a slot of
// lower index; wait while it is locked in a slot of higher index. Waits only
// go to higher indexes, so they cannot form a cycle; and of two evictors of
// the same key at least one sees the other's intent (both store their key
// before scanning, and Go atomics are sequentially consistent), so they
// never both publish. Restoring the old owner is safe: its state was idle,
// which is the same as fresh, and nobody could have written the slot.
func (t *keyTable) evict(key, h uint64, idleBefore, fresh int64) (uint64, int) {
	busy := false
	for i := uint64(0); i < t.probe; i++ {
		s := (h + i) & t.mask
		// Stamp before key: a slot that becomes key's after the key load
		// must have been locked after the stamp load, which the CAS below
		// notices; a slot published for key before the stamp load shows
		// key in the key load.
		st := t.slots[s].stamp.Load()
		if t.slots[s].key.Load() == key {
			return 0, evictYield // inserted since acquire's scan
		}
		if st == stampLocked {
			busy = true
			continue
		}
		if st > idleBefore {
			continue
		}
		if !t.slots[s].stamp.CompareAndSwap(st, stampLocked) {
			busy = true // taken under us, maybe by key itself: look again
			continue
		}
		// We hold slot s: nobody else writes it until we store the stamp.
		old := t.slots[s].key.Load()
		t.slots[s].key.Store(key)
		if !t.sole(key, s, h) {
			t.slots[s].key.Store(old)
			t.slots[s].stamp.Store(st)
			return 0, evictYield
		}
		if t.clear != nil {
			t.clear(s)
		}
		t.slots[s].stamp.Store(fresh)
		t.evictions.Add(1)
		return s, evictDone
	}
	if busy {
		return 0, evictBusy
	}
	return 0, evictFull
}

// sole reports whether the intent to insert key at slot s survives the rule
// documented on evict.
func (t *keyTable) sole(key, s, h uint64) bool {
	for i := uint64(0); i < t.probe; i++ {
		u := (h + i) & t.mask
		if u == s {
			continue
		}
		for spin := 0; t.slots[u].key.Load() == key; spin++ {
			if u < s {
				return false // a lower intent, or published
			}
			if t.slots[u].stamp.Load() != stampLocked {
				// Published, or yielded (a yield restores the key first, so
				// the re-read tells them apart).
				if t.slots[u].key.Load() == key {
					return false
				}
				break
			}
			backoff(spin) // a higher intent: wait until it publishes or yields
		}
	}
	return true
}

// backoff is called by a goroutine that must retry a lookup because its slot
// was being handed over.
func backoff(retry int) {
	if retry&15 == 15 {
		runtime.Gosched()
	}
}

// ---------------------------------------------------------------------------
// RateLimiter

// RateLimitConfig configures a RateLimiter.
type RateLimitConfig struct {
	// Rate is the sustained rate in events (tokens) per second; > 0 and at
	// most 1e9. Fractional rates (0.5 = one event every two seconds) are fine.
	Rate float64
	// Burst is the bucket depth in events, >= 1; 0 means max(1, Rate). A
	// fractional depth is allowed: 2.5 allows 2 events at once and a third
	// half an interval later.
	Burst float64
	// MaxKeys caps the live keys; it is rounded up to a power of two
	// (default 1<<20, at most 1<<30). Memory is 16 bytes per key of that
	// capacity, allocated up front.
	MaxKeys int
	// IdleTTL: a key whose bucket has been full for this long may be evicted
	// (its state then equals a new key's, so eviction changes no decision).
	// Default: the time to refill a full bucket (Burst/Rate), at least 1s.
	IdleTTL time.Duration
	// OnFull decides an event whose key finds no free and no idle slot in
	// its probe range: OnFullDeny (the default) limits it, OnFullAllow lets
	// it through as if its bucket were fresh. Either way it counts in Full.
	OnFull OnFull
}

// RateLimitStats are cumulative counters of a RateLimiter.
type RateLimitStats struct {
	Keys      uint64 // live keys (slots in use; a slot, once used, is only ever handed over)
	Capacity  uint64 // slots (MaxKeys rounded up to a power of two)
	Evictions uint64 // idle keys replaced by new ones
	Allowed   uint64 // decisions that allowed the event (Full ones with OnFullAllow included)
	Limited   uint64 // decisions that denied the event (Full ones with OnFullDeny included)
	Full      uint64 // events whose key found no free and no idle slot: decided by OnFull
	Bytes     uint64 // memory held by the table
}

// RateLimiter is a per-key rate limiter implementing GCRA (the generic cell
// rate algorithm), which is exactly a token bucket of depth Burst refilled at
// Rate per second, stored as one int64 per key: the theoretical arrival time
// TAT. With interval T = 1e9/Rate ns and limit L = Burst*T, an event at now
// is allowed iff max(TAT, now) + T - now <= L, and then TAT becomes
// max(TAT, now) + T. TAT <= now means a full bucket, so a never-seen key
// (TAT 0) and an idle one behave the same.
//
// Allow is safe for concurrent use, takes no lock and does not allocate. Each
// decision is one CAS on the key's TAT; a failed CAS is retried with the new
// value, so concurrent callers lose no tokens and get no extra ones: over
// events at one fixed time exactly floor(Burst) are allowed, and over any
// schedule the allowed count is at most Burst + (latest now)/T. Keys live in
// a keyTable (see its invariants); with the table full and nothing idle the
// event is counted as Full and decided by OnFull: denied by default (fail
// closed: a flood of new keys cannot buy unlimited passage), or allowed as
// a fresh bucket with OnFullAllow.
//
// Rounding: T is 1e9/Rate rounded to whole nanoseconds (relative error below
// 1e-9 for Rate <= 1 event/s, below 5e-7 for 1000/s).
type RateLimiter struct {
	tab      keyTable
	interval int64 // T, ns per token
	limit    int64 // L = Burst*T
	idle     int64 // IdleTTL in ns, > 0
	clock    Clock
	onFull   OnFull
	stripes  [rlStripes]rlCounters
}

const rlStripes = 16

// rlCounters are striped by slot so cores deciding different keys do not
// share a cache line.
type rlCounters struct {
	allowed atomic.Uint64
	limited atomic.Uint64
	_       [48]byte
}

// RateLimitPlan is a validated RateLimitConfig: everything NewRateLimiter derives
// before it allocates, so that memory can be counted and a config refused
// without allocating.
type RateLimitPlan struct {
	interval, limit, idle int64
	capacity              uint64
	onFull                OnFull
}

// PlanRateLimiter validates cfg; its errors match ErrInvalidRateLimit.
func PlanRateLimiter(cfg RateLimitConfig) (RateLimitPlan, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidRateLimit, fmt.Sprintf(format, a...))
	}
	if math.IsNaN(cfg.Rate) || cfg.Rate <= 0 || cfg.Rate > 1e9 {
		return RateLimitPlan{}, bad("rate must be > 0 and <= 1e9 per second, got %v", cfg.Rate)
	}
	burst := cfg.Burst
	if burst == 0 {
		burst = max(1, cfg.Rate)
	}
	if math.IsNaN(burst) || burst < 1 {
		return RateLimitPlan{}, bad("burst must be >= 1, got %v", cfg.Burst)
	}
	interval := int64(math.Round(1e9 / cfg.Rate))
	lim := burst * float64(interval)
	if lim > 1<<61 {
		return RateLimitPlan{}, bad("burst %v at rate %v/s takes %v to refill, which is too long", burst, cfg.Rate, time.Duration(math.MaxInt64))
	}
	if cfg.IdleTTL < 0 {
		return RateLimitPlan{}, bad("idle_ttl must be >= 0, got %v", cfg.IdleTTL)
	}
	if cfg.OnFull >= numOnFull {
		return RateLimitPlan{}, bad("unknown on_full %d", cfg.OnFull)
	}
	idle := int64(cfg.IdleTTL)
	if idle == 0 {
		idle = max(int64(time.Second), int64(lim))
	}
	capacity, err := tableCapacity(cfg.MaxKeys)
	if err != nil {
		return RateLimitPlan{}, bad("%v", err)
	}
	return RateLimitPlan{interval: interval, limit: int64(lim), idle: idle, capacity: capacity, onFull: cfg.OnFull}, nil
}

// Capacity is the table's slots: MaxKeys rounded up to a power of two.
func (p *RateLimitPlan) Capacity() uint64 { return p.capacity }

// BytesPerKey is one table slot.
func (p *RateLimitPlan) BytesPerKey() uint64 { return rlBytesPerKey }

// Bytes is what Build allocates for the table.
func (p *RateLimitPlan) Bytes() uint64 { return rlBytesPerKey * p.capacity }

// rlBytesPerKey is one tableSlot (key and stamp).
const rlBytesPerKey = uint64(unsafe.Sizeof(tableSlot{}))

// Build allocates the limiter p plans.
func (p *RateLimitPlan) Build(clock Clock) *RateLimiter {
	if clock == nil {
		clock = SystemClock{}
	}
	r := &RateLimiter{interval: p.interval, limit: p.limit, idle: p.idle, clock: clock, onFull: p.onFull}
	r.tab.init(p.capacity, nil) // an idle TAT is already a fresh bucket: nothing to clear
	return r
}

// Bytes returns the memory NewRateLimiter(cfg) allocates for its table
// (validating cfg as NewRateLimiter does), without allocating it.
func (cfg RateLimitConfig) Bytes() (uint64, error) {
	p, err := PlanRateLimiter(cfg)
	if err != nil {
		return 0, err
	}
	return p.Bytes(), nil
}

// NewRateLimiter validates cfg and allocates the table. clock may be nil
// (SystemClock); it is used by AllowNow.
func NewRateLimiter(cfg RateLimitConfig, clock Clock) (*RateLimiter, error) {
	p, err := PlanRateLimiter(cfg)
	if err != nil {
		return nil, err
	}
	return p.Build(clock), nil
}

// Allow decides one event for key (from KeyHash, never 0) at time now (from
// the limiter's Clock). It returns true if the event is within the key's rate.
// A key that finds the table full is decided by OnFull (counted in Full).
// It does not allocate.
func (r *RateLimiter) Allow(key uint64, now int64) bool { return r.AllowOnFull(key, now, r.onFull) }

// AllowOnFull is Allow with the full-table policy given by the caller: a
// rule brings its own, so that a reload changing only on_full keeps the
// table.
func (r *RateLimiter) AllowOnFull(key uint64, now int64, onFull OnFull) bool {
	t := &r.tab
	for retry := 0; ; retry++ {
		// Idle: TAT <= now-IdleTTL. A fresh stamp of now is a full bucket and
		// greater than any idle TAT (IdleTTL > 0), as keyTable requires.
		s, ok := t.acquire(key, now-r.idle, now)
		if !ok {
			st := &r.stripes[key&(rlStripes-1)]
			if onFull == OnFullAllow {
				st.allowed.Add(1)
				return true
			}
			st.limited.Add(1)
			return false
		}
		st := &r.stripes[s&(rlStripes-1)]
		for {
			tat := t.slots[s].stamp.Load()
			if tat == stampLocked || t.slots[s].key.Load() != key {
				break // evicted or being evicted under us: look up again
			}
			next := max(tat, now) + r.interval
			if next-now > r.limit {
				// Denials write nothing, so they cannot disturb anyone.
				st.limited.Add(1)
				return false
			}
			if t.slots[s].stamp.CompareAndSwap(tat, next) {
				st.allowed.Add(1)
				return true
			}
			// Another decision for this key (or an eviction) came first.
		}
		backoff(retry)
	}
}

// AllowNow is Allow at the limiter clock's current time.
func (r *RateLimiter) AllowNow(key uint64) bool { return r.Allow(key, r.clock.Nanotime()) }

// Stats returns the counters. They are read one by one while decisions go on,
// so they are not a consistent snapshot.
func (r *RateLimiter) Stats() RateLimitStats {
	s := RateLimitStats{
		Keys:      r.tab.live.Load(),
		Capacity:  uint64(len(r.tab.slots)),
		Evictions: r.tab.evictions.Load(),
		Full:      r.tab.full.Load(),
		Bytes:     rlBytesPerKey * uint64(len(r.tab.slots)),
	}
	for i := range r.stripes {
		s.Allowed += r.stripes[i].allowed.Load()
		s.Limited += r.stripes[i].limited.Load()
	}
	return s
}
