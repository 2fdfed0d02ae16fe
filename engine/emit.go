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
// An every_slide window (engine/state, emit.go) keeps what a walk needs and
// a plain window does not have:
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
	"fmt"
	"math"
	"net/netip"
	"strings"
	"unsafe"

	"github.com/xgate/xgate/engine/state"
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
	if s.MaxKeyBytes < state.KeyTextMin || s.MaxKeyBytes > state.KeyTextMax {
		return s, fmt.Errorf("max_key_bytes %d: want %d..%d", s.MaxKeyBytes, state.KeyTextMin, state.KeyTextMax)
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
// Emitter

// Emitter reports the every_slide windows of an Engine's current program.
// It is not safe for concurrent use: one goroutine (the gateway's emitter)
// calls Due and Emit.
type Emitter struct {
	eng *Engine
	agg Aggregate // the walk's record, here so that it is not allocated per walk
}

// NewEmitter returns the engine's emitter. Call it once.
func (e *Engine) NewEmitter() *Emitter {
	return &Emitter{eng: e}
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
		if t, ok := r.window.Due(); ok && (!found || t < next) {
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
		first := true
		walked, sent, left := r.window.Walk(now, r.emit.MinChange, r.emit.MaxKeys,
			func(start, end int64, key []byte, value float64, truncated bool) {
				if first { // one window per walk: its fields once
					m.agg = Aggregate{Rule: r.name, Agg: r.aggText, Start: WallNs(r.clock, start), End: WallNs(r.clock, end)}
					first = false
				}
				m.agg.Key = unsafe.String(unsafe.SliceData(key), len(key))
				m.agg.Value, m.agg.Truncated = value, truncated
				fn(&m.agg)
			})
		if walked {
			r.tot.walks.Add(1)
			r.tot.emitted.Add(uint64(sent))
			r.tot.emitTruncated.Add(left)
		}
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
	start := r.window.Start(now)
	w.aggs = append(w.aggs, Aggregate{Rule: r.name, Agg: r.aggText, Key: unsafe.String(unsafe.SliceData(text), len(text)),
		Value: value, Start: WallNs(r.clock, start), End: WallNs(r.clock, now)})
	w.c.rules[ri].emitted++
}

// keyText returns rule r's key for the current event as text: the field's
// text, or the source address formatted once per frame into the worker's
// scratch.
func (w *Worker) keyText(r *rule, src netip.Addr) ([]byte, bool) {
	if r.keySrc {
		if src = w.keySrcAddr(r, src); !src.IsValid() {
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
