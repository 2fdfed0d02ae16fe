package engine

// Aggregate outputs: a window rule can emit its per-key aggregate as a
// record (WindowSpec.Emit).
//
//   - on_alert: whenever the rule fires, the worker that decided the event
//     adds an Aggregate beside its Decisions (Worker.Aggregates): the rule,
//     the key as the event has it, the aggregate the condition saw, and the
//     window [start, now]. Nothing is stored for it and nothing allocates.
//   - every_slide: after each slide boundary, one Emitter (one goroutine,
//     not a worker) walks the window's key table and reports the value of
//     every live key over the window that just completed, [start, end) with
//     end the boundary. With MinChange, a key is reported only when its
//     value moved by at least that much since the key's last report (its
//     first report always goes out). At most MaxKeys keys are reported per
//     slide; the rest are counted (EmitStats.Truncated).
//
// An every_slide window keeps what a walk needs and a plain window does
// not have:
//
//   - the key's text, per slot (keyText): written by the worker that finds
//     the slot's text belongs to another key (the key just took the slot),
//     so once per key and slot, not per event. Keys longer than
//     KeyBytes are cut to that and counted (WindowStats.KeyTruncated).
//   - one segment more per key than the window spans (Window.ring = n+1):
//     the first observation of step k+1 reuses the segment of step k+1-ring,
//     which for ring = n would be the oldest step of the window ending at k,
//     the one the walk reads. With n+1 segments that window stays whole
//     until step k+2 begins: the walk has one slide to run. A walk that
//     starts later (the process was stopped) reports the latest completed
//     window instead; it never mixes two.
//   - the newest step observed (Window.seen), raised by the workers with
//     one load per event and a CAS once per step; raising it wakes the
//     emitter (a send on a channel of one, never blocking). The emitter
//     sleeps until a boundary only when the window saw events since the
//     last window it reported, so an idle gateway does no periodic work.

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync/atomic"
	"unsafe"
)

// Emit modes (WindowSpec.Emit.Mode).
const (
	EmitNone       = ""
	EmitOnAlert    = "on_alert"
	EmitEverySlide = "every_slide"
)

// Defaults and bounds of EmitSpec.
const (
	DefaultEmitMaxKeys = 10000
	MaxEmitMaxKeys     = 1 << 24
	DefaultKeyBytes    = 64
	keyTextMin         = 8
	keyTextMax         = 1024
)

// EmitSpec makes a window rule emit its per-key aggregate as records.
type EmitSpec struct {
	// Mode (emit): EmitNone, EmitOnAlert or EmitEverySlide.
	Mode string
	// MinChange (emit_min_change; every_slide): report a key only when its
	// value differs by at least this much from the key's last report. 0:
	// every slide.
	MinChange float64
	// MaxKeys (emit_max_keys; every_slide): records per slide at most;
	// 0: DefaultEmitMaxKeys.
	MaxKeys int
	// MaxKeyBytes (max_key_bytes; every_slide): bytes of key text kept per
	// key; longer keys are cut to it and counted. 0: DefaultKeyBytes;
	// else 8..1024.
	MaxKeyBytes int
}

// check validates s and fills in its defaults.
func (s EmitSpec) check() (EmitSpec, error) {
	switch s.Mode {
	case EmitNone, EmitOnAlert:
		if s.MinChange != 0 || s.MaxKeys != 0 || s.MaxKeyBytes != 0 {
			return s, fmt.Errorf("emit_min_change, emit_max_keys and max_key_bytes belong to emit: every_slide")
		}
		return s, nil
	case EmitEverySlide:
	default:
		return s, fmt.Errorf("emit %q: want on_alert or every_slide", s.Mode)
	}
	if s.MinChange < 0 || math.IsNaN(s.MinChange) || math.IsInf(s.MinChange, 0) {
		return s, fmt.Errorf("emit_min_change %v: want a number >= 0", s.MinChange)
	}
	if s.MaxKeys == 0 {
		s.MaxKeys = DefaultEmitMaxKeys
	}
	if s.MaxKeys < 0 || s.MaxKeys > MaxEmitMaxKeys {
		return s, fmt.Errorf("emit_max_keys %d: want 1..%d", s.MaxKeys, MaxEmitMaxKeys)
	}
	if s.MaxKeyBytes == 0 {
		s.MaxKeyBytes = DefaultKeyBytes
	}
	if s.MaxKeyBytes < keyTextMin || s.MaxKeyBytes > keyTextMax {
		return s, fmt.Errorf("max_key_bytes %d: want %d..%d", s.MaxKeyBytes, keyTextMin, keyTextMax)
	}
	return s, nil
}

// Aggregate is one emitted window aggregate. Key is a view: valid until the
// worker's next Process call (on_alert), or during the Emitter's callback
// (every_slide).
type Aggregate struct {
	Rule  string
	Agg   string // as configured: "sum(amount)", "count"
	Key   string
	Value float64
	// Start and End bound the window in ns since the Unix epoch (see
	// WallNs): [Start, End) for every_slide, [Start, End] with End the
	// event's time for on_alert.
	Start, End int64
	// Truncated: Key was cut to the window's max_key_bytes.
	Truncated bool
}

// EmitStats are the counters of an emitting window rule.
type EmitStats struct {
	Mode      string
	Emitted   uint64 // aggregates emitted (records handed to the sinks)
	Truncated uint64 // every_slide: live keys left out because a slide reached emit_max_keys
	Walks     uint64 // every_slide: slides walked
}

// WallNs converts an engine clock reading to ns since the Unix epoch: the
// clock's own conversion when it has one (SystemClock), else the reading
// itself (a ManualClock in tests counts Unix ns).
func WallNs(c Clock, ns int64) int64 {
	if w, ok := c.(interface{ WallNs(int64) int64 }); ok {
		return w.WallNs(ns)
	}
	return ns
}

// ---------------------------------------------------------------------------
// Key text of an emitting window.

// keyText holds, per slot, the text of the key that owns it:
//
//	words[s*stride+0]  owner: the key hash the text belongs to; 0 while
//	                   being written (or never written)
//	words[s*stride+1]  length, bit 63 set if the key was cut
//	words[s*stride+2:] the bytes, 8 per word, little endian
//
// A seqlock without a counter: a writer stores owner = 0, the length and
// the bytes, then owner = key. A reader loads owner, copies, loads owner
// again and keeps the copy only if both loads equal the key it wants. Go's
// atomics are sequentially consistent, so a reader that saw any word of a
// later write also sees owner != key on its second load. Every word is an
// atomic, so readers never race with writers. Two workers writing the same
// new key concurrently write the same words.
type keyText struct {
	words     []atomic.Uint64
	stride    uint64
	max       int
	truncated atomic.Uint64
}

func keyTextWords(maxBytes int) uint64 { return 2 + uint64(maxBytes+7)/8 }

func newKeyText(capacity, stride uint64) *keyText {
	return &keyText{words: make([]atomic.Uint64, capacity*stride), stride: stride, max: int(stride-2) * 8}
}

// wants reports whether slot s does not hold key's text yet.
func (t *keyText) wants(s, key uint64) bool { return t.words[s*t.stride].Load() != key }

// store writes key's text into slot s (text cut to t.max).
func (t *keyText) store(s, key uint64, text []byte) {
	w := t.words[s*t.stride:][:t.stride]
	w[0].Store(0)
	n := uint64(len(text))
	if len(text) > t.max {
		text = text[:t.max]
		n = uint64(len(text)) | 1<<63
		t.truncated.Add(1)
	}
	w[1].Store(n)
	var buf [8]byte
	for i := 0; i*8 < len(text); i++ {
		c := copy(buf[:], text[i*8:])
		clear(buf[c:])
		w[2+i].Store(binary.LittleEndian.Uint64(buf[:]))
	}
	w[0].Store(key)
}

// load appends slot s's text to b if it belongs to key.
func (t *keyText) load(b []byte, s, key uint64) ([]byte, bool, bool) {
	w := t.words[s*t.stride:][:t.stride]
	if w[0].Load() != key {
		return b, false, false
	}
	n := w[1].Load()
	cut := n&(1<<63) != 0
	n &^= 1 << 63
	if n > uint64(t.max) {
		return b, false, false
	}
	at := len(b)
	var buf [8]byte
	for i := uint64(0); i*8 < n; i++ {
		binary.LittleEndian.PutUint64(buf[:], w[2+i].Load())
		b = append(b, buf[:min(8, n-i*8)]...)
	}
	if w[0].Load() != key {
		return b[:at], false, false
	}
	return b, cut, true
}

// noteStep raises w.seen to step k+1 and wakes the emitter when it does:
// one load per event, a CAS and a send on the first event of a step.
func (w *Window) noteStep(k uint64) {
	for {
		s := w.seen.Load()
		if s >= k+1 {
			return
		}
		if w.seen.CompareAndSwap(s, k+1) {
			for p := w.prev.Load(); p < s && !w.prev.CompareAndSwap(p, s); p = w.prev.Load() {
			}
			if w.wake != nil {
				select {
				case w.wake <- struct{}{}:
				default: // a wake-up is pending
				}
			}
			return
		}
	}
}

// keepText stores key's text in slot s if the slot holds another key's.
func (w *Window) keepText(s, key uint64, text []byte) {
	if w.text != nil && w.text.wants(s, key) {
		w.text.store(s, key, text)
	}
}

// ---------------------------------------------------------------------------
// The emitter's state of a window, kept with the window across reloads.

// emitState is touched by the Emitter goroutine only (its counters are the
// rule's totals, which outlive a rebuilt window).
type emitState struct {
	done uint64     // windows ending at steps < done are reported
	last []emitLast // per slot, with MinChange: the last reported value
}

// emitLast is a slot's last reported value and the key it was for.
type emitLast struct {
	key uint64
	val float64
}

// due returns the engine time of the next walk, false when the window saw
// no event since the last window it reported.
func (w *Window) due() (int64, bool) {
	if w.seen.Load() <= w.emit.done {
		return 0, false
	}
	return int64(w.emit.done+1) * w.slide, true
}

// walk reports the window that completed last before now if one of its
// steps since the last report had an observation: every live key's
// aggregate over it, through fn, at most emit_max_keys of them. A window
// whose new steps were all quiet is skipped, even when the current step
// has observations (those are reported with the window they complete).
func (w *Window) walk(now int64, r *rule, m *Emitter, fn func(*Aggregate)) {
	k := w.step(now)
	seen, done := w.seen.Load(), w.emit.done
	if k == 0 || seen <= done || k-1 < done {
		return
	}
	w.emit.done = k
	// An observation in steps done .. k-1: the newest one, or when the
	// newest is in the current step, the one before it.
	if !(seen-1 <= k-1 || w.prev.Load() > done) {
		return
	}
	end := k - 1 // the window of steps end-n+1 .. end, [start, (end+1)*slide)
	r.tot.walks.Add(1)
	a := &m.acc
	agg := &m.agg
	*agg = Aggregate{Rule: r.name, Agg: r.aggText,
		Start: WallNs(r.clock, int64(end+1-min(w.n, end+1))*w.slide), End: WallNs(r.clock, int64(end+1)*w.slide)}
	sent, left := 0, uint64(0)
	tab := &w.tab
	for s := range tab.slots {
		key := tab.slots[s].key.Load()
		if key == 0 {
			continue
		}
		*a = windowAcc{}
		w.gather(uint64(s), end, a)
		if a.count == 0 {
			continue
		}
		v := w.finish(a, 0, 0, false)
		if tab.slots[s].key.Load() != key {
			continue // evicted while we read
		}
		if w.emit.last != nil {
			l := &w.emit.last[s]
			if l.key == key && math.Abs(v-l.val) < r.emit.MinChange {
				continue
			}
		}
		if sent >= r.emit.MaxKeys {
			left++
			continue
		}
		text, cut, ok := w.text.load(m.buf[:0], uint64(s), key)
		m.buf = text
		if !ok {
			continue // its first writer has not stored the text yet: next slide
		}
		if w.emit.last != nil {
			w.emit.last[s] = emitLast{key: key, val: v}
		}
		agg.Key = unsafe.String(unsafe.SliceData(text), len(text))
		agg.Value, agg.Truncated = v, cut
		fn(agg)
		sent++
	}
	r.tot.emitted.Add(uint64(sent))
	r.tot.emitTruncated.Add(left)
}

// ---------------------------------------------------------------------------
// Emitter

// Emitter reports the every_slide windows of an Engine's current program.
// It is not safe for concurrent use: one goroutine (the gateway's emitter)
// calls Due and Emit.
type Emitter struct {
	eng *Engine
	buf []byte // key text being read
	// The walk's scratch, here so that it is not allocated per walk.
	acc windowAcc
	agg Aggregate
}

// NewEmitter returns the engine's emitter. Call it once.
func (e *Engine) NewEmitter() *Emitter {
	return &Emitter{eng: e, buf: make([]byte, 0, keyTextMax)}
}

// Wake receives when an every_slide window sees the first event of a step:
// the emitter's next Due may have changed.
func (m *Emitter) Wake() <-chan struct{} { return m.eng.wake }

// Clock returns the engine's clock, which Due and Emit read.
func (m *Emitter) Clock() Clock { return m.eng.clock }

// Due returns the engine clock time of the next slide boundary that may
// have something to report, false when there is none: no every_slide
// window saw an event since its last report. A time in the past means now
// (an Emit then may report nothing: see walk).
func (m *Emitter) Due() (int64, bool) {
	var next int64
	found := false
	for _, r := range m.eng.prog.Load().emitters {
		if t, ok := r.window.due(); ok && (!found || t < next) {
			next, found = t, true
		}
	}
	return next, found
}

// Emit reports, through fn, every every_slide window due at now (engine
// clock). The Aggregate and its Key are valid during the call only. fn
// must not call back into the Emitter.
func (m *Emitter) Emit(now int64, fn func(*Aggregate)) {
	for _, r := range m.eng.prog.Load().emitters {
		r.window.walk(now, r, m, fn)
	}
}

// ---------------------------------------------------------------------------
// The worker's side.

// emitOnAlert adds the aggregate of window rule r, which just fired for the
// current event at now, to the worker's aggregates.
func (w *Worker) emitOnAlert(r *rule, ri int, value float64, now int64, src netip.Addr) {
	text, ok := w.keyText(r, src)
	if !ok {
		return
	}
	k := r.window.step(now)
	start := int64(k+1-min(r.window.n, k+1)) * r.window.slide
	w.aggs = append(w.aggs, Aggregate{Rule: r.name, Agg: r.aggText, Key: unsafe.String(unsafe.SliceData(text), len(text)),
		Value: value, Start: WallNs(r.clock, start), End: WallNs(r.clock, now)})
	w.c.rules[ri].emitted++
}

// keyText returns rule r's key for the current event as text: the field's
// text, or the source address formatted once per frame into the worker's
// scratch.
func (w *Worker) keyText(r *rule, src netip.Addr) ([]byte, bool) {
	if r.keySrc {
		if !src.IsValid() && r.keySlot >= 0 {
			if v := &w.ctx.vals[r.keySlot]; v.Kind == KindString {
				if a, err := netip.ParseAddr(v.Str); err == nil {
					src = a.Unmap()
				}
			}
		}
		if !src.IsValid() {
			return nil, false
		}
		// Appended, never overwritten, during one Process call: earlier
		// views stay valid (a grown buffer leaves them on the old array).
		if !w.srcTextOK || w.srcTextOf != src {
			w.srcAt = len(w.srcText)
			w.srcText = src.AppendTo(w.srcText)
			w.srcTextOf, w.srcTextOK = src, true
		}
		return w.srcText[w.srcAt:len(w.srcText):len(w.srcText)], true
	}
	v := &w.ctx.vals[r.keySlot]
	if v.Kind != KindString && v.Kind != KindNumber {
		return nil, false
	}
	return unsafe.Slice(unsafe.StringData(v.Str), len(v.Str)), true
}

// Aggregates returns the on_alert aggregates of the last Process call, in
// the order their rules fired. The slice and the views in it are valid
// until the next Process call.
func (w *Worker) Aggregates() []Aggregate { return w.aggs }

// aggText is the aggregation as the config writes it, without spaces.
func aggText(s string) string { return strings.Join(strings.Fields(s), "") }
