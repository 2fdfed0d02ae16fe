package engine

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/xgate/xgate/engine/lists"
	"github.com/xgate/xgate/engine/state"
)

// Action is what a rule does to the event that fires it.
type Action uint8

const (
	ActionPass  Action = iota // accept and stop evaluating (an allow rule); also the default verdict
	ActionDrop                // discard and stop
	ActionAlert               // raise an alert and go on; the event passes unless a later rule drops it
	ActionBlock               // discard, stop, and ask the gateway to block the source in XDP
	NumActions
)

var actionNames = [NumActions]string{"pass", "drop", "alert", "block"}

func (a Action) String() string {
	if a < NumActions {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", a)
}

// RuleSpec is one rule as configured. Exactly one of three shapes:
//
//   - a filter rule: When alone; fires when the condition holds;
//   - a rate-limit rule: RateLimit, optionally When to choose the events
//     it counts; fires when the key is over its rate;
//   - a window rule: Window and When over `value` (the aggregate),
//     optionally Filter to choose the events the window sees; fires when
//     the condition holds after the event was added.
//
// Rules run in order. pass, drop and block end the evaluation; alert does
// not, so later rate limits and windows still see the event, and a later
// drop or block overrides the alert.
type RuleSpec struct {
	Name      string
	When      string
	Filter    string
	RateLimit *RateLimitSpec
	Window    *WindowSpec
	// Action: "pass", "drop", "alert" or "block <duration>" ("block 30s").
	Action string
	// Enrich: fields added to the record of an event the rule fires on
	// (see enrich.go).
	Enrich []EnrichSpec
}

// RateLimitSpec configures a per-key token bucket.
type RateLimitSpec struct {
	Key     string  // a field path, or "src_ip" for the packet's source address
	Rate    string  // "100/s", "6000/m", "10/ms", "1/h"
	Burst   float64 // bucket depth; default: one second's worth of rate (at least 1)
	MaxKeys int     // default 1<<20
	// OnFull: "deny" (default, also "") or "allow", see OnFull. Changing
	// only OnFull on reload keeps the rule's state.
	OnFull string
}

// WindowSpec configures a per-key sliding window.
type WindowSpec struct {
	Key     string // a field path, or "src_ip"
	Size    time.Duration
	Slide   time.Duration
	Agg     string // "count", "sum(amount)", "min(x)", "max(x)", "avg(x)", "distinct(ip)"
	MaxKeys int    // default 1<<20
	// OnFull: "deny" (default, also "") or "allow", see OnFull. Changing
	// only OnFull on reload keeps the rule's state.
	OnFull string
	// Emit makes the window an output (emit.go). Changing it on reload
	// keeps the state unless every_slide comes or goes, or its
	// max_key_bytes or the use of emit_min_change changes.
	Emit EmitSpec
}

// OnFull says what a rule does with an event whose key finds its state
// table full (see state.OnFull).
type OnFull = state.OnFull

const (
	OnFullDeny  = state.OnFullDeny  // fail closed (the default)
	OnFullAllow = state.OnFullAllow // fail open
)

// ParseOnFull reads "deny" or "allow"; "" is the default, deny.
func ParseOnFull(s string) (OnFull, error) { return state.ParseOnFull(s) }

// SrcKey names the packet's source address as a key.
const SrcKey = "src_ip"

// ParseRate reads "N/unit" with unit s, ms, m or h (also sec, min, hour)
// and returns events per second.
func ParseRate(s string) (float64, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("rate %q: want N/unit, e.g. 100/s", s)
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("rate %q: %q is not a positive number", s, num)
	}
	var per float64
	switch strings.TrimSpace(unit) {
	case "ms":
		per = 0.001
	case "s", "sec", "second":
		per = 1
	case "m", "min", "minute":
		per = 60
	case "h", "hour":
		per = 3600
	default:
		return 0, fmt.Errorf("rate %q: unit %q is not one of ms, s, m, h", s, unit)
	}
	return n / per, nil
}

// ParseAction reads "pass", "drop", "alert" or "block <duration>".
func ParseAction(s string) (Action, time.Duration, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, 0, fmt.Errorf("action is empty: want pass, drop, alert or block <duration>")
	}
	for a := Action(0); a < NumActions; a++ {
		if f[0] != actionNames[a] {
			continue
		}
		if a != ActionBlock {
			if len(f) > 1 {
				return 0, 0, fmt.Errorf("action %q: %s takes no argument", s, f[0])
			}
			return a, 0, nil
		}
		if len(f) != 2 {
			return 0, 0, fmt.Errorf("action %q: block needs a duration, e.g. block 30s", s)
		}
		d, err := time.ParseDuration(f[1])
		if err != nil || d <= 0 {
			return 0, 0, fmt.Errorf("action %q: %q is not a positive duration", s, f[1])
		}
		return a, d, nil
	}
	return 0, 0, fmt.Errorf("action %q: want pass, drop, alert or block <duration>", s)
}

// parseAgg reads "sum(amount)" into the aggregation and its field path.
func parseAgg(s string) (state.Agg, string, error) {
	s = strings.TrimSpace(s)
	name, arg := s, ""
	if i := strings.IndexByte(s, '('); i >= 0 {
		if !strings.HasSuffix(s, ")") {
			return 0, "", fmt.Errorf("agg %q: missing )", s)
		}
		name, arg = strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+1:len(s)-1])
	}
	agg, err := state.ParseAgg(name)
	if err != nil {
		return 0, "", fmt.Errorf("agg %q: %w", s, err)
	}
	if agg == state.AggCount {
		if arg != "" {
			return 0, "", fmt.Errorf("agg %q: count takes no field", s)
		}
		return agg, "", nil
	}
	if arg == "" {
		return 0, "", fmt.Errorf("agg %q: %s needs a field, e.g. %s(amount)", s, name, name)
	}
	if err := ValidPath(arg); err != nil {
		return 0, "", fmt.Errorf("agg %q: %w", s, err)
	}
	return agg, arg, nil
}

type ruleKind uint8

const (
	kindFilter ruleKind = iota
	kindRateLimit
	kindWindow
)

// rule is a compiled RuleSpec.
type rule struct {
	name   string
	kind   ruleKind
	action Action
	block  time.Duration
	when   pred // filter: condition; rate limit: which events count; window: over value
	filter pred // window: which events enter; nil = all

	keySlot int  // slot of the key field; -1 with keySrc
	keySrc  bool // key is the source address

	limiter  *state.RateLimiter
	window   *state.Window
	aggSlot  int // slot of the aggregated field; -1 for count
	distinct bool
	onFull   OnFull

	// Aggregate outputs (emit.go): the checked EmitSpec, the aggregation
	// as text for the records, the engine's clock for their times.
	emit    EmitSpec
	aggText string
	clock   Clock

	// The state's validated geometry: compileRule fills one of them and
	// allocates nothing; Engine.compile builds the state (or keeps the
	// previous program's) once the whole config is checked.
	rlPlan *state.RateLimitPlan
	wPlan  *state.WindowPlan

	enrich []enrichField // added when the rule fires

	spec RuleSpec    // as configured, to recognise an unchanged rule on reload
	tot  *ruleTotals // shared with the same-named rule of other generations
}

// compileRule checks and compiles s into fs. It allocates no state table:
// see rule.build.
func compileRule(fs *fieldSet, lists map[string]*lists.List, names enrichNames, s RuleSpec) (*rule, error) {
	if s.Name == "" {
		return nil, fmt.Errorf("rule without a name")
	}
	r := &rule{name: s.Name, keySlot: -1, aggSlot: -1, spec: s}
	var err error
	if r.action, r.block, err = ParseAction(s.Action); err != nil {
		return nil, fmt.Errorf("rule %q: %w", s.Name, err)
	}
	if s.RateLimit != nil && s.Window != nil {
		return nil, fmt.Errorf("rule %q: rate_limit and window cannot be in one rule", s.Name)
	}
	compile := func(src string, window bool) (pred, error) {
		if src == "" {
			return nil, nil
		}
		return compileCondition(fs, lists, s.Name, src, window)
	}
	setKey := func(key string) error {
		if key == "" {
			return fmt.Errorf("rule %q: key is empty: name a field (user_id) or %s", s.Name, SrcKey)
		}
		if key == SrcKey {
			r.keySrc = true
			if fs.roleSlot[RoleSrc] >= 0 {
				r.keySlot = fs.roleSlot[RoleSrc]
			}
			return nil
		}
		slot, err := fs.add(key)
		if err != nil {
			return fmt.Errorf("rule %q: key: %w", s.Name, err)
		}
		r.keySlot = slot
		return nil
	}
	switch {
	case s.RateLimit != nil:
		r.kind = kindRateLimit
		if s.Filter != "" {
			return nil, fmt.Errorf("rule %q: a rate limit chooses its events with when, not filter", s.Name)
		}
		if err := setKey(s.RateLimit.Key); err != nil {
			return nil, err
		}
		rate, err := ParseRate(s.RateLimit.Rate)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", s.Name, err)
		}
		burst := s.RateLimit.Burst
		if burst == 0 {
			burst = math.Max(1, rate)
		}
		if r.onFull, err = ParseOnFull(s.RateLimit.OnFull); err != nil {
			return nil, fmt.Errorf("rule %q: %w", s.Name, err)
		}
		plan, err := state.PlanRateLimiter(state.RateLimitConfig{Rate: rate, Burst: burst, MaxKeys: s.RateLimit.MaxKeys, OnFull: r.onFull})
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", s.Name, err)
		}
		r.rlPlan = &plan
		if r.when, err = compile(s.When, false); err != nil {
			return nil, err
		}
	case s.Window != nil:
		r.kind = kindWindow
		if err := setKey(s.Window.Key); err != nil {
			return nil, err
		}
		agg, field, err := parseAgg(s.Window.Agg)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", s.Name, err)
		}
		if field != "" {
			if r.aggSlot, err = fs.add(field); err != nil {
				return nil, fmt.Errorf("rule %q: agg: %w", s.Name, err)
			}
		}
		r.distinct = agg == state.AggDistinct
		if r.onFull, err = ParseOnFull(s.Window.OnFull); err != nil {
			return nil, fmt.Errorf("rule %q: %w", s.Name, err)
		}
		if r.emit, err = s.Window.Emit.check(); err != nil {
			return nil, fmt.Errorf("rule %q: %w", s.Name, err)
		}
		r.aggText = aggText(s.Window.Agg)
		every := r.emit.Mode == EmitEverySlide
		plan, err := state.PlanWindow(state.WindowConfig{Size: s.Window.Size, Slide: s.Window.Slide, Agg: agg, MaxKeys: s.Window.MaxKeys,
			Emitting: every, KeyBytes: r.emit.MaxKeyBytes, KeepLast: every && r.emit.MinChange > 0})
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", s.Name, err)
		}
		r.wPlan = &plan
		if s.When == "" {
			return nil, fmt.Errorf("rule %q: a window needs when, e.g. when: value > 100", s.Name)
		}
		if r.when, err = compile(s.When, true); err != nil {
			return nil, err
		}
		if r.filter, err = compile(s.Filter, false); err != nil {
			return nil, err
		}
	default:
		r.kind = kindFilter
		if s.Filter != "" {
			return nil, fmt.Errorf("rule %q: filter belongs to window rules; use when", s.Name)
		}
		if s.When == "" {
			return nil, fmt.Errorf("rule %q: needs when, rate_limit or window", s.Name)
		}
		if r.when, err = compile(s.When, false); err != nil {
			return nil, err
		}
	}
	if r.enrich, err = compileEnrich(fs, lists, names, s.Name, s.Enrich); err != nil {
		return nil, err
	}
	return r, nil
}

// sameState reports whether r and old configure the same limiter or window,
// so that a reload can keep old's state. OnFull is the rule's, not the
// state's: it may differ.
func (r *rule) sameState(old *rule) bool {
	if r.name != old.name || r.kind != old.kind {
		return false
	}
	switch r.kind {
	case kindRateLimit:
		a, b := *r.spec.RateLimit, *old.spec.RateLimit
		a.OnFull, b.OnFull = "", ""
		return a == b
	case kindWindow:
		a, b := *r.spec.Window, *old.spec.Window
		a.OnFull, b.OnFull = "", ""
		a.Emit, b.Emit = emitState0(r.emit), emitState0(old.emit)
		return a == b
	}
	return false
}

// emitState0 is what of an EmitSpec shapes a window's state: whether it
// keeps key text (and how much), and a last value per key.
func emitState0(e EmitSpec) EmitSpec {
	if e.Mode != EmitEverySlide {
		return EmitSpec{}
	}
	s := EmitSpec{Mode: e.Mode, MaxKeyBytes: e.MaxKeyBytes}
	if e.MinChange > 0 {
		s.MinChange = 1
	}
	return s
}

// bytes is the memory of the rule's state tables (0 for a filter).
func (r *rule) bytes() uint64 {
	switch {
	case r.rlPlan != nil:
		return r.rlPlan.Bytes()
	case r.wPlan != nil:
		return r.wPlan.Bytes()
	}
	return 0
}

// build allocates the rule's state tables.
func (r *rule) build(clock Clock) {
	switch {
	case r.rlPlan != nil:
		r.limiter = r.rlPlan.Build(clock)
	case r.wPlan != nil:
		r.window = r.wPlan.Build()
	}
}
