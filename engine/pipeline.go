package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xgate/xgate/engine/lists"
	"github.com/xgate/xgate/engine/state"
)

// Config is everything the engine compiles: the schema, the input limits
// and the rules.
type Config struct {
	Schema *Schema // nil: DefaultSchema
	Limits Limits
	Rules  []RuleSpec
	Clock  Clock // nil: SystemClock
	// MemoryBudget caps the bytes of all rules' state tables together (see
	// Validate and Memory); New and Reload refuse a config over it with a
	// *BudgetError before allocating anything. 0: no budget.
	MemoryBudget uint64
	// Lists are the enrichment lists conditions and added fields may name,
	// by name (engine/lists). The program keeps the *List, not its contents:
	// List.Store changes what the rules see without a reload.
	Lists map[string]*lists.List
	// Enrich are the fields added to the record of every decided event
	// (enrich.go).
	Enrich []EnrichSpec
}

// Program is an immutable compiled Config. Workers read it through an
// atomic pointer, so a reload swaps it between two frames: every frame is
// decided wholly by one program, and no frame is skipped.
type Program struct {
	fs     *fieldSet
	lim    Limits
	rules  []*rule
	clock  Clock
	enrich []enrichField // top-level added fields
	// enriching: some rule or the top level adds fields.
	enriching bool
	// emitters are the every_slide window rules (emit.go).
	emitters []*rule
}

// Decision is the outcome for one object of a datagram.
//
// Raw is a view into the frame (see Value for the lifetime rules). For a
// decode error it holds the offending line.
type Decision struct {
	Raw    []byte
	Err    DecodeError // DecodeOK, or why Raw did not become an event
	Action Action      // meaningful when Err == DecodeOK
	Rule   string      // the deciding rule; "" when no rule fired (default pass)
	Block  time.Duration
	Value  float64 // the window aggregate when a window rule decided
	// Key is the event's schema key field as the rules read it: a string's
	// text (unescaped), a number's literal; "" when it is missing or of
	// another type, and for rejects. Like Raw it is a view (into the frame,
	// or the worker's scratch for an unescaped string): valid until the
	// worker's next Process call.
	Key string
	// Extra are the added fields (enrich.go) as JSON members, each with a
	// leading comma (`,"risk_tier":"high"`), to go before the closing brace
	// of Raw's object; nil when none. A view into the worker's buffer,
	// valid until its next Process call.
	Extra []byte
}

// Engine holds the current Program and the totals of all workers.
type Engine struct {
	prog  atomic.Pointer[Program]
	clock Clock

	mu     sync.Mutex             // guards totals map on compile and Stats
	totals map[string]*ruleTotals // by rule name, kept across reloads
	g      globalTotals
	// wake tells the Emitter that an every_slide window saw the first
	// event of a step (emit.go); capacity 1, sends never block.
	wake chan struct{}
}

// ruleTotals are shared by the rule of that name in every program
// generation, so a reload loses no count.
type ruleTotals struct {
	fired, missingKey, missingValue atomic.Uint64
	emitted                         atomic.Uint64 // aggregates emitted (on_alert and every_slide)
	emitTruncated, walks            atomic.Uint64 // every_slide (emit.go)
}

type globalTotals struct {
	frames, events atomic.Uint64
	decodeErrs     [NumDecodeErrors]atomic.Uint64
	verdicts       [NumActions]atomic.Uint64
	enrichPresent  atomic.Uint64
}

// New compiles cfg into a running engine.
func New(cfg Config) (*Engine, error) {
	e := &Engine{clock: cfg.Clock, totals: map[string]*ruleTotals{}, wake: make(chan struct{}, 1)}
	if e.clock == nil {
		e.clock = SystemClock{}
	}
	p, err := e.compile(cfg, nil)
	if err != nil {
		return nil, err
	}
	e.prog.Store(p)
	return e, nil
}

// Reload compiles cfg and swaps it in atomically. On error the running
// program is untouched. Rate limiters and windows of rules whose name and
// state configuration did not change keep their state: their tables are
// not allocated again. Only the tables of new or changed rules are
// allocated, after the whole config checked out (budget included); until
// the old program is collected, the tables of the rules it replaced are
// held too.
func (e *Engine) Reload(cfg Config) error {
	p, err := e.compile(cfg, e.prog.Load())
	if err != nil {
		return err
	}
	e.prog.Store(p)
	return nil
}

// plan compiles cfg without allocating any state table and returns the
// program with its rules' state unbuilt, and the memory their tables need.
func plan(cfg Config, clock Clock) (*Program, Memory, error) {
	schema := DefaultSchema()
	if cfg.Schema != nil {
		schema = *cfg.Schema
	}
	fs, err := newFieldSet(schema)
	if err != nil {
		return nil, Memory{}, err
	}
	p := &Program{fs: fs, lim: cfg.Limits.withDefaults(), clock: clock}
	seen := map[string]bool{}
	names := enrichNames{}
	var errs []error
	for i, s := range cfg.Rules {
		if seen[s.Name] {
			errs = append(errs, fmt.Errorf("rule %d: name %q is used twice", i+1, s.Name))
			continue
		}
		seen[s.Name] = true
		r, err := compileRule(fs, cfg.Lists, names, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.enriching = p.enriching || len(r.enrich) > 0
		p.rules = append(p.rules, r)
	}
	if p.enrich, err = compileEnrich(fs, cfg.Lists, names, "", cfg.Enrich); err != nil {
		errs = append(errs, err)
	}
	p.enriching = p.enriching || len(p.enrich) > 0
	if len(errs) > 0 {
		return nil, Memory{}, errors.Join(errs...)
	}
	return p, memoryOf(p), nil
}

func (e *Engine) compile(cfg Config, prev *Program) (*Program, error) {
	p, mem, err := plan(cfg, e.clock)
	if err != nil {
		return nil, err
	}
	if err := mem.check(cfg.MemoryBudget); err != nil {
		return nil, err
	}
	for _, r := range p.rules {
		if prev != nil {
			for _, old := range prev.rules {
				if r.sameState(old) {
					r.limiter, r.window = old.limiter, old.window
				}
			}
		}
		if r.limiter == nil && r.window == nil {
			r.build(e.clock)
		}
		r.clock = e.clock
		if r.window != nil && r.window.Emitting() {
			r.window.SetWake(e.wake)
			p.emitters = append(p.emitters, r)
		}
	}
	e.mu.Lock()
	for _, r := range p.rules {
		t := e.totals[r.name]
		if t == nil {
			t = &ruleTotals{}
			e.totals[r.name] = t
		}
		r.tot = t
	}
	e.mu.Unlock()
	return p, nil
}

// Worker decides frames for one receive queue or socket. It owns its
// decoder, scratch memory and counters; it is not safe for concurrent use,
// and that is what makes it free of locks and allocations: run one per
// goroutine.
type Worker struct {
	eng       *Engine
	prog      *Program
	dec       *decoder
	ev        Event
	ctx       evalCtx
	decisions []Decision
	extra     []byte // the added fields of this frame's decisions (Decision.Extra)
	c         workerCounts
	unflushed int

	// Key hashes of the current event by slot, so rules sharing a key
	// (a rate limit and a window on user_id) hash it once. hashGen[slot]
	// == gen marks hashes[slot] as this event's.
	gen     uint32
	hashGen []uint32
	hashes  []uint64

	// on_alert aggregates of the current Process call (emit.go), and the
	// source address as key text, appended once per address and call.
	aggs      []Aggregate
	srcText   []byte
	srcAt     int
	srcTextOf netip.Addr
	srcTextOK bool
}

// workerCounts are plain counters written only by the worker goroutine and
// added into the Engine's atomics by flush (every flushEvery frames and on
// Flush), so the hot path pays no atomic operation per event.
type workerCounts struct {
	frames, events uint64
	decodeErrs     [NumDecodeErrors]uint64
	verdicts       [NumActions]uint64
	rules          []ruleCount
	enrichPresent  uint64
}

type ruleCount struct{ fired, missingKey, missingValue, emitted uint64 }

const flushEvery = 64

// NewWorker returns a worker bound to e.
func (e *Engine) NewWorker() *Worker {
	w := &Worker{eng: e, decisions: make([]Decision, 0, 64), extra: make([]byte, 0, 4096),
		aggs: make([]Aggregate, 0, 16), srcText: make([]byte, 0, 256)}
	w.switchProgram(e.prog.Load())
	return w
}

func (w *Worker) switchProgram(p *Program) {
	w.flush()
	w.prog = p
	w.dec = newDecoder(p.fs, p.lim)
	w.ev.values = make([]Value, len(p.fs.paths))
	w.hashGen = make([]uint32, len(p.fs.paths))
	w.hashes = make([]uint64, len(p.fs.paths))
	w.c.rules = make([]ruleCount, len(p.rules))
}

// Flush adds the worker's pending counts to the engine totals. Call it when
// the worker stops, or before reading Stats for an exact figure.
func (w *Worker) Flush() { w.flush() }

func (w *Worker) flush() {
	g := &w.eng.g
	c := &w.c
	g.frames.Add(c.frames)
	g.events.Add(c.events)
	if c.enrichPresent != 0 {
		g.enrichPresent.Add(c.enrichPresent)
	}
	for i := range c.decodeErrs {
		if c.decodeErrs[i] != 0 {
			g.decodeErrs[i].Add(c.decodeErrs[i])
		}
	}
	for i := range c.verdicts {
		if c.verdicts[i] != 0 {
			g.verdicts[i].Add(c.verdicts[i])
		}
	}
	if w.prog != nil {
		for i, rc := range c.rules {
			t := w.prog.rules[i].tot
			if rc.fired != 0 {
				t.fired.Add(rc.fired)
			}
			if rc.missingKey != 0 {
				t.missingKey.Add(rc.missingKey)
			}
			if rc.missingValue != 0 {
				t.missingValue.Add(rc.missingValue)
			}
			if rc.emitted != 0 {
				t.emitted.Add(rc.emitted)
			}
		}
	}
	rules := c.rules
	clear(rules)
	*c = workerCounts{rules: rules}
	w.unflushed = 0
}

// Process decodes and decides every object in frame. src is the packet's
// source address (the zero Addr if unknown). The returned slice and every
// view in it are valid until the next call to Process.
func (w *Worker) Process(frame []byte, src netip.Addr) []Decision {
	if p := w.eng.prog.Load(); p != w.prog {
		w.switchProgram(p)
	}
	p := w.prog
	w.decisions = w.decisions[:0]
	w.aggs = w.aggs[:0]
	w.srcText, w.srcTextOK = w.srcText[:0], false
	w.dec.scratch = w.dec.scratch[:0]
	w.extra = w.extra[:0]
	w.c.frames++
	if w.unflushed++; w.unflushed >= flushEvery {
		defer w.flush()
	}
	if len(frame) > p.lim.MaxDatagram {
		w.reject(frame, ErrOversized)
		return w.decisions
	}
	i := skipWS(frame, 0)
	if i == len(frame) {
		w.reject(frame, ErrEmpty)
		return w.decisions
	}
	src = src.Unmap()
	now := p.clock.Nanotime() // one clock read per frame
	for i < len(frame) {
		start := i
		if frame[i] != '{' {
			err := ErrInvalidJSON
			if c := frame[i]; c == '"' || c == '[' || c == '-' || c >= '0' && c <= '9' || c == 't' || c == 'f' || c == 'n' {
				err = ErrNotObject
			}
			end := resync(frame, i)
			w.reject(frame[start:end], err)
			i = skipWS(frame, end)
			continue
		}
		end, err := w.dec.object(frame, i, &w.ev)
		if err == DecodeOK {
			j := end
			for j < len(frame) && (frame[j] == ' ' || frame[j] == '\t' || frame[j] == '\r') {
				j++
			}
			switch {
			case j < len(frame) && frame[j] != '\n':
				err, end = ErrTrailingGarbage, j
			case end-start > p.lim.MaxEvent:
				err = ErrOversized
			default:
				err = w.checkRoles()
			}
		}
		if err != DecodeOK {
			e := resync(frame, end)
			w.reject(frame[start:e], err)
			i = skipWS(frame, e)
			continue
		}
		w.ev.Raw = frame[start:end]
		w.ev.Src = src
		w.decide(p, now, src)
		i = skipWS(frame, end)
	}
	return w.decisions
}

// resync finds where the next object may start after a bad one: the first
// newline at or after pos whose next line starts, unindented, with
// something other than whitespace or a closing '}' / ']' / ','. NDJSON lines
// start in column 0, while the inner lines of a pretty-printed object are
// indented and its last line is a bare '}', so a broken pretty-printed
// object counts as one error, and a broken NDJSON line as one per line.
func resync(b []byte, pos int) int {
	for pos < len(b) {
		if b[pos] == '\n' {
			if pos+1 == len(b) {
				return pos
			}
			switch b[pos+1] {
			case ' ', '\t', '\r', '\n', '}', ']', ',':
			default:
				return pos
			}
		}
		pos++
	}
	return len(b)
}

func (w *Worker) reject(raw []byte, err DecodeError) {
	w.c.decodeErrs[err]++
	w.decisions = append(w.decisions, Decision{Raw: raw, Err: err, Action: ActionDrop})
}

func (w *Worker) checkRoles() DecodeError {
	fs := w.prog.fs
	vals := w.ev.values
	for _, r := range fs.required {
		if vals[fs.roleSlot[r]].Kind == KindMissing {
			return ErrMissingField
		}
	}
	for r := Role(0); r < numRoles; r++ {
		if s := fs.roleSlot[r]; s >= 0 {
			if k := vals[s].Kind; k != KindMissing && !roleAccepts(r, k) {
				return ErrWrongType
			}
		}
	}
	return DecodeOK
}

// keySrcAddr returns the source address that keys rule r (keySrc) for the
// current event: src, or without one the schema's src field (unmapped);
// the zero Addr when there is neither.
func (w *Worker) keySrcAddr(r *rule, src netip.Addr) netip.Addr {
	if !src.IsValid() && r.keySlot >= 0 {
		if v := &w.ctx.vals[r.keySlot]; v.Kind == KindString {
			if addr, err := netip.ParseAddr(v.Str); err == nil {
				return addr.Unmap()
			}
		}
	}
	return src
}

// key returns the hash of rule r's key for the current event.
func (w *Worker) key(r *rule, src netip.Addr) (uint64, bool) {
	if r.keySrc {
		if src = w.keySrcAddr(r, src); !src.IsValid() {
			return 0, false
		}
		a := src.As16()
		return KeyHashBytes(a[:]), true
	}
	v := &w.ctx.vals[r.keySlot]
	if v.Kind != KindString && v.Kind != KindNumber {
		return 0, false
	}
	if w.hashGen[r.keySlot] == w.gen {
		return w.hashes[r.keySlot], true
	}
	h := KeyHash(v.Str)
	w.hashGen[r.keySlot], w.hashes[r.keySlot] = w.gen, h
	return h, true
}

func (w *Worker) decide(p *Program, now int64, src netip.Addr) {
	c := &w.ctx
	c.vals = w.ev.values
	c.value = 0
	c.src = src
	if w.gen++; w.gen == 0 { // wrapped: forget every cached hash
		clear(w.hashGen)
		w.gen = 1
	}
	d := Decision{Raw: w.ev.Raw, Action: ActionPass}
	if s := p.fs.roleSlot[RoleKey]; s >= 0 {
		if v := &w.ev.values[s]; v.Kind == KindString || v.Kind == KindNumber {
			d.Key = v.Str
		}
	}
	alerted := false
	extraAt := len(w.extra)
	var added uint64 // enrichNames bits of the fields added so far
rules:
	for ri, r := range p.rules {
		var fired bool
		switch r.kind {
		case kindFilter:
			fired = r.when(c)
		case kindRateLimit:
			if r.when != nil && !r.when(c) {
				continue
			}
			key, ok := w.key(r, src)
			if !ok {
				w.c.rules[ri].missingKey++
				continue
			}
			fired = !r.limiter.AllowOnFull(key, now, r.onFull)
		case kindWindow:
			if r.filter != nil && !r.filter(c) {
				continue
			}
			key, ok := w.key(r, src)
			if !ok {
				w.c.rules[ri].missingKey++
				continue
			}
			var x float64
			var dh uint64
			if r.aggSlot >= 0 {
				v := &c.vals[r.aggSlot]
				switch {
				case r.distinct && v.Kind != KindMissing:
					dh = KeyHash(v.Str) ^ uint64(v.Kind)
				case !r.distinct && v.Kind == KindNumber:
					x = v.Num
				default:
					w.c.rules[ri].missingValue++
					continue
				}
			}
			var tracked bool
			var slot uint64
			c.value, slot, tracked = r.window.AddAt(key, x, dh, now)
			if tracked && r.window.WantsText(slot, key) {
				if text, ok := w.keyText(r, src); ok {
					r.window.StoreText(slot, key, text)
				}
			}
			// A window that could not count the event cannot vouch for
			// it: with OnFullDeny the rule fires (see OnFull).
			fired = !tracked && r.onFull == OnFullDeny || r.when(c)
			if fired && r.emit.Mode == EmitOnAlert {
				w.emitOnAlert(r, ri, c.value, now, src)
			}
		}
		if !fired {
			continue
		}
		w.c.rules[ri].fired++
		if r.enrich != nil {
			w.addFields(r.enrich, c, &added)
		}
		switch r.action {
		case ActionAlert:
			if !alerted {
				alerted = true
				d.Action, d.Rule, d.Value = ActionAlert, r.name, c.value
			}
		case ActionPass:
			if !alerted {
				d.Rule = r.name
			}
			break rules
		default: // drop, block
			d.Action, d.Rule, d.Block, d.Value = r.action, r.name, r.block, c.value
			break rules
		}
	}
	if p.enriching {
		w.addFields(p.enrich, c, &added)
		if len(w.extra) > extraAt {
			d.Extra = w.extra[extraAt:len(w.extra):len(w.extra)]
		}
	}
	w.c.events++
	w.c.verdicts[d.Action]++
	w.decisions = append(w.decisions, d)
}

// Stats is a snapshot of the engine's counters. Counts of a worker that has
// not flushed yet (at most flushEvery frames) are not in it.
type Stats struct {
	Frames       uint64
	Events       uint64 // decoded and decided: the sum of Verdicts
	DecodeErrors [NumDecodeErrors]uint64
	Verdicts     [NumActions]uint64
	Rules        []RuleStats
	// EnrichPresent counts added fields the event already carried a
	// member of: the added value is written all the same and the sinks
	// cut the event's own (enrich.go).
	EnrichPresent uint64
}

// RuleStats describes one rule of the current program.
type RuleStats struct {
	Name         string
	Action       Action
	Fired        uint64
	MissingKey   uint64 // events the rule applied to that had no usable key
	MissingValue uint64 // window events without a usable aggregated field
	// OnFull is the rule's full-table policy; Limiter.Full / Window.Full
	// count the events it decided.
	OnFull  OnFull
	Limiter *state.RateLimitStats
	Window  *state.WindowStats
	Emit    *EmitStats // window rules with emit
}

// DecodeErrorTotal sums all decode errors.
func (s *Stats) DecodeErrorTotal() uint64 {
	var n uint64
	for _, v := range s.DecodeErrors {
		n += v
	}
	return n
}

// Stats returns the current totals.
func (e *Engine) Stats() Stats {
	var s Stats
	s.Frames = e.g.frames.Load()
	s.Events = e.g.events.Load()
	s.EnrichPresent = e.g.enrichPresent.Load()
	for i := range s.DecodeErrors {
		s.DecodeErrors[i] = e.g.decodeErrs[i].Load()
	}
	for i := range s.Verdicts {
		s.Verdicts[i] = e.g.verdicts[i].Load()
	}
	for _, r := range e.prog.Load().rules {
		rs := RuleStats{Name: r.name, Action: r.action, Fired: r.tot.fired.Load(),
			MissingKey: r.tot.missingKey.Load(), MissingValue: r.tot.missingValue.Load(), OnFull: r.onFull}
		if r.limiter != nil {
			ls := r.limiter.Stats()
			rs.Limiter = &ls
		}
		if r.window != nil {
			ws := r.window.Stats()
			rs.Window = &ws
		}
		if r.emit.Mode != EmitNone {
			rs.Emit = &EmitStats{Mode: r.emit.Mode, Emitted: r.tot.emitted.Load(),
				Truncated: r.tot.emitTruncated.Load(), Walks: r.tot.walks.Load()}
		}
		s.Rules = append(s.Rules, rs)
	}
	return s
}
