package engine

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// emitRule is a window rule that never fires (when: value < -1 over
// positive amounts) and emits every slide.
func emitRule(name string, size, slide time.Duration, emit EmitSpec) RuleSpec {
	return RuleSpec{Name: name, Action: "alert", When: "value < -1",
		Window: &WindowSpec{Key: "user_id", Size: size, Slide: slide, Agg: "sum(amount)", MaxKeys: 1024, Emit: emit}}
}

type emitted struct {
	key        string
	value      float64
	start, end int64
	cut        bool
}

func collect(m *Emitter, now int64) map[string]emitted {
	out := map[string]emitted{}
	m.Emit(now, func(a *Aggregate) {
		k := strings.Clone(a.Key) // a view, valid during the call only
		if _, dup := out[k]; dup {
			panic("key emitted twice in one walk: " + k)
		}
		out[k] = emitted{k, a.Value, a.Start, a.End, a.Truncated}
	})
	return out
}

// TestEmitEverySlideMatchesReference sends random events of several keys
// across many slides and checks every report against sums computed here
// from the same observations: each walk reports, for every key with events
// in the window that just completed, the sum over exactly that window.
// Events of the next step that arrive before the walk (the usual race at
// a boundary) must not change the completed window.
func TestEmitEverySlideMatchesReference(t *testing.T) {
	const slide = time.Second
	const n = 4 // size 4s
	clk := &ManualClock{}
	base := int64(1_000_000) * int64(time.Second) // a "wall" time, ManualClock counts Unix ns
	clk.Set(base)
	e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{emitRule("vel", n*slide, slide, EmitSpec{Mode: EmitEverySlide})}})
	w := e.NewWorker()
	m := e.NewEmitter()
	if _, ok := m.Due(); ok {
		t.Fatalf("Due with no event seen")
	}
	type obs struct {
		step int64
		key  string
		amt  float64
	}
	var all []obs
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{"u1", "u2", "u3", "u-long-key-00000000000000000000000000000000000000000000009", "u5"}
	step0 := base / int64(slide)
	send := func(step int64, off time.Duration, key string, amt float64) {
		clk.Set(step*int64(slide) + int64(off))
		ds := w.Process(fmt.Appendf(nil, `{"user_id":%q,"amount":%g}`, key, amt), netipZero)
		if len(ds) != 1 || ds[0].Err != DecodeOK {
			t.Fatalf("process: %v", errsOf(ds))
		}
		all = append(all, obs{step, key, amt})
	}
	walks := 0
	done := int64(0)
	for s := step0; s < step0+20; s++ {
		// Steps 8..10 are quiet: nothing is due, no walk.
		quiet := s-step0 >= 8 && s-step0 <= 10
		if !quiet {
			for range 1 + rng.IntN(6) {
				k := keys[rng.IntN(len(keys))]
				// Amounts in quarters: float sums are exact whatever the order.
				send(s, time.Duration(rng.IntN(int(slide))), k, float64(rng.IntN(4000))/4)
			}
		}
		// The boundary: one event of the new step may come before the walk.
		bound := (s + 1) * int64(slide)
		if rng.IntN(2) == 0 && !quiet {
			send(s+1, 0, keys[rng.IntN(len(keys))], 1.25)
		}
		due, ok := m.Due()
		expect, later := false, false // an event in the window's steps since the last walk; after them
		for _, o := range all {
			expect = expect || o.step >= done && o.step <= s
			later = later || o.step > s
		}
		if !expect {
			if ok && !later {
				t.Fatalf("step %d: due at %d with no event since the last walk", s-step0, due)
			}
			clk.Set(bound + int64(time.Millisecond))
			if got := collect(m, clk.Nanotime()); len(got) != 0 {
				t.Fatalf("step %d: walked with no event since the last walk: %v", s-step0, got)
			}
			continue
		}
		if !ok || due > bound {
			t.Fatalf("step %d: due %d (%v), want <= the boundary %d", s-step0, due, ok, bound)
		}
		clk.Set(bound + int64(time.Millisecond))
		got := collect(m, clk.Nanotime())
		walks++
		done = s + 1
		want := map[string]float64{}
		for _, o := range all {
			if o.step > s-n && o.step <= s {
				want[o.key] += o.amt
			}
		}
		if len(got) != len(want) {
			t.Fatalf("window ending at step %d: got %d keys %v, want %d %v", s-step0, len(got), got, len(want), want)
		}
		for k, v := range want {
			g, ok := got[k]
			if !ok || g.value != v {
				t.Fatalf("window ending at step %d, key %s: got %+v, want %v (all %v)", s-step0, k, g, v, got)
			}
			if g.start != (s-n+1)*int64(slide) || g.end != bound {
				t.Fatalf("key %s: window [%d, %d), want [%d, %d)", k, g.start, g.end, (s-n+1)*int64(slide), bound)
			}
		}
		// Walked: nothing more until the next step's events.
		if again := collect(m, clk.Nanotime()); len(again) != 0 {
			t.Fatalf("second walk of one window reported %v", again)
		}
	}
	st := e.Stats().Rules[0]
	if st.Emit == nil || st.Emit.Walks != uint64(walks) || st.Emit.Truncated != 0 {
		t.Fatalf("emit stats %+v, want %d walks", st.Emit, walks)
	}
}

// TestEmitMaxKeysTruncates: a slide reports at most emit_max_keys keys and
// counts the rest.
func TestEmitMaxKeysTruncates(t *testing.T) {
	clk := &ManualClock{}
	clk.Set(int64(10 * time.Second))
	e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{emitRule("vel", 2*time.Second, time.Second, EmitSpec{Mode: EmitEverySlide, MaxKeys: 5})}})
	w := e.NewWorker()
	m := e.NewEmitter()
	for i := range 20 {
		w.Process(fmt.Appendf(nil, `{"user_id":"k%d","amount":1}`, i), netipZero)
	}
	clk.Set(int64(11 * time.Second))
	if got := collect(m, clk.Nanotime()); len(got) != 5 {
		t.Fatalf("reported %d keys, want 5", len(got))
	}
	w.Flush()
	st := e.Stats().Rules[0].Emit
	if st.Emitted != 5 || st.Truncated != 15 {
		t.Fatalf("emitted %d truncated %d, want 5 and 15", st.Emitted, st.Truncated)
	}
}

// TestEmitKeyText: the key's text is kept per slot, cut at max_key_bytes
// (counted, flagged), and a source address key is its text form.
func TestEmitKeyText(t *testing.T) {
	clk := &ManualClock{}
	clk.Set(int64(10 * time.Second))
	r := emitRule("vel", 2*time.Second, time.Second, EmitSpec{Mode: EmitEverySlide, MaxKeyBytes: 8})
	src := emitRule("src", 2*time.Second, time.Second, EmitSpec{Mode: EmitEverySlide})
	src.Window.Key = SrcKey
	src.Window.Agg = "count"
	e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{r, src}})
	w := e.NewWorker()
	m := e.NewEmitter()
	a := netip.MustParseAddr("198.18.0.7")
	b := netip.MustParseAddr("2001:db8::1")
	for range 3 { // one store per key, whatever the events
		w.Process([]byte(`{"user_id":"a-very-long-user-id","amount":2}`), a)
		w.Process([]byte(`{"user_id":"short","amount":3}`), b)
	}
	clk.Set(int64(11 * time.Second))
	byRule := map[string]map[string]emitted{}
	m.Emit(clk.Nanotime(), func(x *Aggregate) {
		if byRule[x.Rule] == nil {
			byRule[x.Rule] = map[string]emitted{}
		}
		byRule[x.Rule][strings.Clone(x.Key)] = emitted{value: x.Value, cut: x.Truncated}
	})
	want := map[string]map[string]emitted{
		"vel": {"a-very-l": {value: 6, cut: true}, "short": {value: 9}},
		"src": {"198.18.0.7": {value: 3}, "2001:db8::1": {value: 3}},
	}
	if fmt.Sprint(byRule) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", byRule, want)
	}
	if st := e.Stats().Rules[0].Window; st.KeyTruncated != 1 {
		t.Fatalf("key truncated %d, want 1 (once per slot, not per event)", st.KeyTruncated)
	}
}

// TestEmitMinChange: with emit_min_change a key is reported on its first
// walk and then only when its value moved by at least that much.
func TestEmitMinChange(t *testing.T) {
	clk := &ManualClock{}
	clk.Set(int64(10 * time.Second))
	e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{emitRule("vel", 10*time.Second, time.Second, EmitSpec{Mode: EmitEverySlide, MinChange: 10})}})
	w := e.NewWorker()
	m := e.NewEmitter()
	var got []string
	for i, amt := range []float64{5, 4, 6, 20, 0.5} {
		clk.Set(int64(10+i)*int64(time.Second) + 1)
		w.Process(fmt.Appendf(nil, `{"user_id":"u","amount":%g}`, amt), netipZero)
		clk.Set(int64(11+i) * int64(time.Second))
		m.Emit(clk.Nanotime(), func(a *Aggregate) { got = append(got, fmt.Sprint(a.Value)) })
	}
	// Sums 5, 9, 15, 35, 35.5: reported 5, 15 (moved 10), 35 (moved 20).
	if strings.Join(got, " ") != "5 15 35" {
		t.Fatalf("reported %v, want [5 15 35]", got)
	}
}

// TestEmitOnAlert: a firing window rule adds its aggregate beside the
// decision, with the event's key and the window [start, now], and adds
// nothing when it does not fire; the worker allocates nothing for it.
func TestEmitOnAlert(t *testing.T) {
	clk := &ManualClock{}
	clk.Set(int64(100*time.Second) + 5)
	e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{{Name: "vel", Action: "alert", When: "value > 100",
		Window: &WindowSpec{Key: "user_id", Size: 60 * time.Second, Slide: 5 * time.Second, Agg: "sum( amount )", MaxKeys: 64,
			Emit: EmitSpec{Mode: EmitOnAlert}}}}})
	w := e.NewWorker()
	w.Process([]byte(`{"user_id":"u1","amount":60}`), netipZero)
	if n := len(w.Aggregates()); n != 0 {
		t.Fatalf("%d aggregates below the threshold", n)
	}
	w.Process([]byte(`{"user_id":"u1","amount":50}`), netipZero)
	ag := w.Aggregates()
	if len(ag) != 1 {
		t.Fatalf("%d aggregates, want 1", len(ag))
	}
	a := ag[0]
	if a.Rule != "vel" || a.Agg != "sum(amount)" || a.Key != "u1" || a.Value != 110 ||
		a.Start != int64(45*time.Second) || a.End != clk.Nanotime() {
		t.Fatalf("aggregate %+v", a)
	}
	frame := []byte(`{"user_id":"u2","amount":500}`)
	if n := testing.AllocsPerRun(100, func() { w.Process(frame, netipZero) }); n != 0 {
		t.Fatalf("%v allocations per event with an on_alert emit", n)
	}
	w.Flush()
	if st := e.Stats().Rules[0].Emit; st.Emitted != 102 {
		t.Fatalf("emitted %d, want 102", st.Emitted)
	}
}

// TestEmitEverySlideHotPathAllocs: an every_slide window costs the worker
// no allocation, new keys (key text) included.
func TestEmitEverySlideHotPathAllocs(t *testing.T) {
	clk := &ManualClock{}
	e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{emitRule("vel", 60*time.Second, 5*time.Second, EmitSpec{Mode: EmitEverySlide})}})
	w := e.NewWorker()
	frames := make([][]byte, 200)
	for i := range frames {
		frames[i] = fmt.Appendf(nil, `{"user_id":"user-%d","amount":1}`, i)
	}
	i := 0
	if n := testing.AllocsPerRun(100, func() {
		clk.Advance(time.Second) // new steps: the wake-up path too
		w.Process(frames[i%len(frames)], netipZero)
		i++
	}); n != 0 {
		t.Fatalf("%v allocations per event", n)
	}
}

// TestEmitSpecErrors: bad emit settings are refused with the rule named.
func TestEmitSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		emit EmitSpec
		want string
	}{
		{EmitSpec{Mode: "sometimes"}, `emit "sometimes": want on_alert or every_slide`},
		{EmitSpec{Mode: EmitOnAlert, MaxKeys: 3}, "belong to emit: every_slide"},
		{EmitSpec{MinChange: 3}, "belong to emit: every_slide"},
		{EmitSpec{Mode: EmitEverySlide, MinChange: -1}, "emit_min_change -1"},
		{EmitSpec{Mode: EmitEverySlide, MaxKeys: -1}, "emit_max_keys -1"},
		{EmitSpec{Mode: EmitEverySlide, MaxKeyBytes: 4}, "max_key_bytes 4: want 8..1024"},
	} {
		_, err := New(Config{Rules: []RuleSpec{emitRule("r", 2*time.Second, time.Second, tc.emit)}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `rule "r"`) {
			t.Errorf("%+v: got %v, want %q", tc.emit, err, tc.want)
		}
	}
}

// TestEmitReloadKeepsState: changing only emit_max_keys keeps the window;
// turning every_slide off and on rebuilds it.
func TestEmitReloadKeepsState(t *testing.T) {
	clk := &ManualClock{}
	clk.Set(int64(10 * time.Second))
	cfg := func(e EmitSpec) Config {
		return Config{Clock: clk, Rules: []RuleSpec{emitRule("vel", 4*time.Second, time.Second, e)}}
	}
	e := mustEngine(t, cfg(EmitSpec{Mode: EmitEverySlide}))
	w := e.NewWorker()
	w.Process([]byte(`{"user_id":"u","amount":7}`), netipZero)
	win := e.prog.Load().rules[0].window
	if err := e.Reload(cfg(EmitSpec{Mode: EmitEverySlide, MaxKeys: 3})); err != nil {
		t.Fatal(err)
	}
	if e.prog.Load().rules[0].window != win {
		t.Fatalf("emit_max_keys change rebuilt the window")
	}
	if err := e.Reload(cfg(EmitSpec{Mode: EmitOnAlert})); err != nil {
		t.Fatal(err)
	}
	if e.prog.Load().rules[0].window == win {
		t.Fatalf("every_slide off kept the window with key text")
	}
	if len(e.prog.Load().emitters) != 0 {
		t.Fatalf("on_alert window listed as an emitter")
	}
}
