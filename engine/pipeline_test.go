package engine

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func decideOne(t *testing.T, w *Worker, frame string, src netip.Addr) Decision {
	t.Helper()
	ds := w.Process([]byte(frame), src)
	if len(ds) != 1 {
		t.Fatalf("%d decisions for %s", len(ds), frame)
	}
	return ds[0]
}

func TestActions(t *testing.T) {
	rules := []RuleSpec{
		{Name: "allow", When: `user_id == "ok"`, Action: "pass"},
		{Name: "alert-big", When: `amount > 100`, Action: "alert"},
		{Name: "drop-refund", When: `event_type == "refund"`, Action: "drop"},
		{Name: "block-bot", When: `event_type == "bot"`, Action: "block 45s"},
		{Name: "allow-late", When: `event_type == "late"`, Action: "pass"},
	}
	e := mustEngine(t, Config{Rules: rules})
	w := e.NewWorker()
	for _, tc := range []struct {
		in     string
		action Action
		rule   string
		block  time.Duration
	}{
		{`{"user_id":"a","amount":5}`, ActionPass, "", 0},
		{`{"user_id":"ok","event_type":"refund","amount":500}`, ActionPass, "allow", 0},      // pass stops before drop
		{`{"user_id":"a","amount":500}`, ActionAlert, "alert-big", 0},                        // alert alone
		{`{"user_id":"a","amount":500,"event_type":"refund"}`, ActionDrop, "drop-refund", 0}, // drop overrides an earlier alert
		{`{"user_id":"a","event_type":"bot"}`, ActionBlock, "block-bot", 45 * time.Second},
		{`{"user_id":"a","amount":500,"event_type":"late"}`, ActionAlert, "alert-big", 0}, // a later pass keeps the alert
	} {
		d := decideOne(t, w, tc.in, netip.Addr{})
		if d.Err != DecodeOK || d.Action != tc.action || d.Rule != tc.rule || d.Block != tc.block {
			t.Errorf("%s: got %v %q %v (err %v), want %v %q %v", tc.in, d.Action, d.Rule, d.Block, d.Err, tc.action, tc.rule, tc.block)
		}
	}
	w.Flush()
	s := e.Stats()
	fired := map[string]uint64{}
	for _, r := range s.Rules {
		fired[r.Name] = r.Fired
	}
	want := map[string]uint64{"allow": 1, "alert-big": 3, "drop-refund": 1, "block-bot": 1, "allow-late": 1}
	for k, v := range want {
		if fired[k] != v {
			t.Errorf("rule %s fired %d, want %d", k, fired[k], v)
		}
	}
	if s.Verdicts != [NumActions]uint64{2, 1, 2, 1} || s.Events != 6 || s.Frames != 6 {
		t.Errorf("verdicts %v events %d frames %d", s.Verdicts, s.Events, s.Frames)
	}
}

// TestDecisionKey: a decision carries the schema key as the rules read it
// (unescaped string, number literal, first of duplicated keys when
// duplicates are allowed), "" when it is missing, and nothing for a reject.
func TestDecisionKey(t *testing.T) {
	e := mustEngine(t, Config{Schema: &Schema{Key: "user_id"}, Limits: Limits{AllowDuplicateKeys: true}})
	w := e.NewWorker()
	for _, tc := range []struct{ in, key string }{
		{`{"user_id":"u-1","amount":5}`, "u-1"},
		{`{"user_id":"u\u002d2\n"}`, "u-2\n"},
		{`{"user_id":12345}`, "12345"},
		{`{"user_id":-1.5e3}`, "-1.5e3"},
		{`{"user_id":"first","user_id":"second"}`, "first"},
		{`{"amount":5}`, ""},
	} {
		d := decideOne(t, w, tc.in, netip.Addr{})
		if d.Err != DecodeOK || d.Key != tc.key {
			t.Errorf("%s: key %q (err %v), want %q", tc.in, d.Key, d.Err, tc.key)
		}
	}
	// A key of another type makes the event a reject (wrong_type), as does
	// broken JSON: no key either way.
	for _, in := range []string{`{"user_id":"u-1",`, `{"user_id":true}`, `{"user_id":{"id":"x"}}`} {
		if d := decideOne(t, w, in, netip.Addr{}); d.Err == DecodeOK || d.Key != "" {
			t.Errorf("%s: err %v key %q, want a reject and no key", in, d.Err, d.Key)
		}
	}
	// By default a duplicated key is a reject.
	strict := mustEngine(t, Config{Schema: &Schema{Key: "user_id"}}).NewWorker()
	for _, in := range []string{`{"user_id":"first","user_id":"second"}`} {
		if d := decideOne(t, strict, in, netip.Addr{}); d.Err != ErrDuplicateKey || d.Key != "" {
			t.Errorf("%s: err %v key %q, want a reject and no key", in, d.Err, d.Key)
		}
	}
}

// TestWindowAggregations runs each aggregation through the pipeline with
// a manual clock and checks the value the deciding rule reports.
func TestWindowAggregations(t *testing.T) {
	type step struct {
		at     time.Duration
		amount string
		want   float64
	}
	cases := []struct {
		agg   string
		steps []step
	}{
		{"count", []step{{0, "1", 1}, {time.Second, "1", 2}, {9 * time.Second, "1", 3}, {10 * time.Second, "1", 3}, {30 * time.Second, "1", 1}}},
		{"sum(amount)", []step{{0, "10", 10}, {time.Second, "2.5", 12.5}, {10 * time.Second, "1", 3.5}, {21 * time.Second, "4", 4}}},
		{"min(amount)", []step{{0, "10", 10}, {time.Second, "3", 3}, {2 * time.Second, "7", 3}, {11 * time.Second, "9", 7}}},
		{"max(amount)", []step{{0, "-10", -10}, {time.Second, "-3", -3}, {2 * time.Second, "-7", -3}, {11 * time.Second, "-9", -7}}},
		{"avg(amount)", []step{{0, "10", 10}, {time.Second, "20", 15}, {5 * time.Second, "30", 20}, {10 * time.Second, "40", 30}}},
		{"distinct(amount)", []step{{0, "1", 1}, {time.Second, "1", 1}, {2 * time.Second, "2", 2}, {13 * time.Second, "2", 1}}},
	}
	for _, tc := range cases {
		t.Run(tc.agg, func(t *testing.T) {
			clk := &ManualClock{}
			e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{{Name: "w",
				Window: &WindowSpec{Key: "user_id", Size: 10 * time.Second, Slide: time.Second, Agg: tc.agg, MaxKeys: 64},
				When:   "value > -1e300", Action: "alert"}}})
			w := e.NewWorker()
			for i, s := range tc.steps {
				clk.Set(int64(s.at))
				d := decideOne(t, w, `{"user_id":"u","amount":`+s.amount+`}`, netip.Addr{})
				if d.Action != ActionAlert || d.Rule != "w" {
					t.Fatalf("step %d: %v %q", i, d.Action, d.Rule)
				}
				if math.Abs(d.Value-s.want) > 1e-9 {
					t.Errorf("step %d at %v: value %v, want %v", i, s.at, d.Value, s.want)
				}
			}
		})
	}
}

func TestRateLimitByKeyAndSource(t *testing.T) {
	clk := &ManualClock{}
	e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{
		{Name: "per-src", RateLimit: &RateLimitSpec{Key: SrcKey, Rate: "1/s", Burst: 2, MaxKeys: 64}, Action: "block 10s"},
		{Name: "per-user", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "10/s", Burst: 1, MaxKeys: 64}, When: `event_type == "login"`, Action: "drop"},
	}})
	w := e.NewWorker()
	a := netip.MustParseAddr("198.18.0.1")
	b := netip.MustParseAddr("::ffff:198.18.0.2") // v4-mapped: the same key as 198.18.0.2
	get := func(frame string, src netip.Addr) string {
		d := decideOne(t, w, frame, src)
		return d.Action.String() + ":" + d.Rule
	}
	seq := []string{
		get(`{"user_id":"x"}`, a), get(`{"user_id":"x"}`, a), get(`{"user_id":"x"}`, a), // burst 2 then block
		get(`{"user_id":"y"}`, b), get(`{"user_id":"y"}`, netip.MustParseAddr("198.18.0.2")), get(`{"user_id":"y"}`, b),
	}
	want := []string{"pass:", "pass:", "block:per-src", "pass:", "pass:", "block:per-src"}
	if strings.Join(seq, " ") != strings.Join(want, " ") {
		t.Errorf("source limits: %v, want %v", seq, want)
	}
	clk.Advance(time.Second) // one token back for a
	if got := get(`{"user_id":"z","event_type":"login"}`, a); got != "pass:" {
		t.Errorf("after refill: %s", got)
	}
	// No packet source: falls back to the event's ip field.
	if got := get(`{"user_id":"q","ip":"198.18.0.1"}`, netip.Addr{}); got != "block:per-src" {
		t.Errorf("ip fallback shares the bucket of 198.18.0.1: %s", got)
	}
	// No source at all: the source rule is skipped (counted), the user rule
	// still applies: q's second login within 100ms is dropped.
	first := get(`{"user_id":"q","event_type":"login"}`, netip.Addr{})
	second := get(`{"user_id":"q","event_type":"login"}`, netip.Addr{})
	if first != "pass:" || second != "drop:per-user" {
		t.Errorf("two logins of q without a source: %s, %s", first, second)
	}
	w.Flush()
	if r := e.Stats().Rules[0]; r.MissingKey != 2 || r.Limiter == nil || r.Limiter.Limited != 3 {
		t.Errorf("per-src stats: %+v %+v", r, r.Limiter)
	}
}

func TestRuleConfigErrors(t *testing.T) {
	w := &WindowSpec{Key: "user_id", Size: 60 * time.Second, Slide: 5 * time.Second, Agg: "sum(amount)"}
	rl := &RateLimitSpec{Key: "user_id", Rate: "100/s"}
	for _, tc := range []struct {
		spec RuleSpec
		msg  string
	}{
		{RuleSpec{When: "true", Action: "drop"}, "without a name"},
		{RuleSpec{Name: "r", When: "true", Action: "reject"}, "want pass, drop, alert or block"},
		{RuleSpec{Name: "r", When: "true", Action: "block"}, "block needs a duration"},
		{RuleSpec{Name: "r", When: "true", Action: "block -5s"}, "not a positive duration"},
		{RuleSpec{Name: "r", When: "true", Action: "drop now"}, "takes no argument"},
		{RuleSpec{Name: "r", Action: "drop"}, "needs when, rate_limit or window"},
		{RuleSpec{Name: "r", When: "true", Filter: "true", Action: "drop"}, "filter belongs to window rules"},
		{RuleSpec{Name: "r", RateLimit: rl, Window: w, Action: "drop"}, "cannot be in one rule"},
		{RuleSpec{Name: "r", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "100"}, Action: "drop"}, "want N/unit"},
		{RuleSpec{Name: "r", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "100/d"}, Action: "drop"}, "unit"},
		{RuleSpec{Name: "r", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "-1/s"}, Action: "drop"}, "not a positive number"},
		{RuleSpec{Name: "r", RateLimit: &RateLimitSpec{Rate: "1/s"}, Action: "drop"}, "key is empty"},
		{RuleSpec{Name: "r", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "1/s", Burst: 0.5}, Action: "drop"}, "burst"},
		{RuleSpec{Name: "r", RateLimit: rl, Filter: "true", Action: "drop"}, "with when, not filter"},
		{RuleSpec{Name: "r", Window: w, Action: "alert"}, "a window needs when"},
		{RuleSpec{Name: "r", Window: &WindowSpec{Key: "k", Size: 7 * time.Second, Slide: 5 * time.Second, Agg: "count"}, When: "value > 1", Action: "alert"}, "multiple"},
		{RuleSpec{Name: "r", Window: &WindowSpec{Key: "k", Size: 5 * time.Second, Slide: 5 * time.Second, Agg: "median(x)"}, When: "value > 1", Action: "alert"}, "unknown aggregation"},
		{RuleSpec{Name: "r", Window: &WindowSpec{Key: "k", Size: 5 * time.Second, Slide: 5 * time.Second, Agg: "sum"}, When: "value > 1", Action: "alert"}, "needs a field"},
		{RuleSpec{Name: "r", Window: &WindowSpec{Key: "k", Size: 5 * time.Second, Slide: 5 * time.Second, Agg: "count(x)"}, When: "value > 1", Action: "alert"}, "takes no field"},
		{RuleSpec{Name: "r", Window: &WindowSpec{Key: "k", Size: 5 * time.Second, Slide: 5 * time.Second, Agg: "sum(amount"}, When: "value > 1", Action: "alert"}, "missing )"},
		{RuleSpec{Name: "r", When: "amount >", Action: "drop"}, "column 9"},
	} {
		_, err := New(Config{Rules: []RuleSpec{tc.spec}})
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: error %v, want one containing %q", tc.spec, err, tc.msg)
		}
	}
	_, err := New(Config{Rules: []RuleSpec{{Name: "a", When: "true", Action: "drop"}, {Name: "a", When: "true", Action: "drop"}}})
	if err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Errorf("duplicate names: %v", err)
	}
	// Every bad rule is reported, not just the first.
	_, err = New(Config{Rules: []RuleSpec{{Name: "a", When: "x ==", Action: "drop"}, {Name: "b", When: "true", Action: "nope"}}})
	if err == nil || !strings.Contains(err.Error(), `rule "a"`) || !strings.Contains(err.Error(), `rule "b"`) {
		t.Errorf("want both errors: %v", err)
	}
	if _, err := New(Config{Schema: &Schema{Key: "", Required: []Role{RoleKey}}}); err == nil {
		t.Error("required role without a path accepted")
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"100/s": 100, "6000/m": 100, "10/ms": 10000, "3600/h": 1, " 0.5 / s ": 0.5, "1/sec": 1} {
		got, err := ParseRate(in)
		if err != nil || math.Abs(got-want) > 1e-9 {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestReload(t *testing.T) {
	clk := &ManualClock{}
	rl := &RateLimitSpec{Key: "user_id", Rate: "1/s", Burst: 1, MaxKeys: 64}
	e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{
		{Name: "rate", RateLimit: rl, Action: "drop"},
		{Name: "refunds", When: `event_type == "refund"`, Action: "drop"},
	}})
	w := e.NewWorker()
	ev := `{"user_id":"u","event_type":"refund"}`
	if d := decideOne(t, w, ev, netip.Addr{}); d.Rule != "refunds" {
		t.Fatalf("before reload: %+v", d)
	}
	// A bad config is rejected and the old rules keep running.
	if err := e.Reload(Config{Clock: clk, Rules: []RuleSpec{{Name: "x", When: "((", Action: "drop"}}}); err == nil {
		t.Fatal("bad config accepted")
	}
	if d := decideOne(t, w, `{"user_id":"v","event_type":"refund"}`, netip.Addr{}); d.Rule != "refunds" {
		t.Fatalf("after rejected reload: %+v", d)
	}
	// The new rules apply from the next frame; the unchanged limiter keeps
	// its state (u spent its token above, so it is still limited).
	if err := e.Reload(Config{Clock: clk, Rules: []RuleSpec{
		{Name: "rate", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "1/s", Burst: 1, MaxKeys: 64}, Action: "drop"},
		{Name: "refunds-alert", When: `event_type == "refund"`, Action: "alert"},
	}}); err != nil {
		t.Fatal(err)
	}
	if d := decideOne(t, w, ev, netip.Addr{}); d.Action != ActionDrop || d.Rule != "rate" {
		t.Fatalf("limiter state lost on reload: %+v", d)
	}
	if d := decideOne(t, w, `{"user_id":"new","event_type":"refund"}`, netip.Addr{}); d.Action != ActionAlert || d.Rule != "refunds-alert" {
		t.Fatalf("new rule not applied: %+v", d)
	}
	w.Flush()
	s := e.Stats()
	if s.Frames != 4 || s.Events != 4 || s.Rules[0].Fired != 1 || s.Rules[1].Fired != 1 {
		t.Fatalf("stats after reload: %+v", s)
	}
}

// TestReloadUnderLoad swaps programs while workers decide frames: every
// frame is decided exactly once, by one program or the other, never lost.
func TestReloadUnderLoad(t *testing.T) {
	mk := func(action string) Config {
		return Config{Rules: []RuleSpec{
			{Name: "all", When: `amount >= 0`, Action: action},
			{Name: "rate", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "1000000/s", MaxKeys: 1 << 10}, Action: "drop"},
		}}
	}
	e := mustEngine(t, mk("alert"))
	const workers, frames = 4, 20000
	var wg sync.WaitGroup
	var decided atomic.Uint64
	stop := make(chan struct{})
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w := e.NewWorker()
			defer w.Flush()
			for j := 0; j < frames; j++ {
				for _, d := range w.Process(fmt.Appendf(nil, `{"user_id":"u%d","amount":%d}`, j%100, j), netip.Addr{}) {
					if d.Err != DecodeOK || (d.Action != ActionAlert && d.Action != ActionPass) || d.Rule != "all" {
						t.Errorf("unexpected decision %+v", d)
						return
					}
					decided.Add(1)
				}
			}
		}(i)
	}
	var reloads int
	go func() {
		defer close(stop)
		for k := 0; k < 200; k++ {
			a := "alert"
			if k%2 == 0 {
				a = "pass"
			}
			if err := e.Reload(mk(a)); err != nil {
				t.Error(err)
				return
			}
			reloads++
		}
	}()
	wg.Wait()
	<-stop
	s := e.Stats()
	if decided.Load() != workers*frames || s.Events != workers*frames || s.Frames != workers*frames {
		t.Fatalf("decided %d, stats events %d frames %d, want %d", decided.Load(), s.Events, s.Frames, workers*frames)
	}
	if s.Rules[0].Fired != workers*frames {
		t.Fatalf("rule all fired %d across %d reloads, want %d", s.Rules[0].Fired, reloads, workers*frames)
	}
}

func TestPipelineAllocs(t *testing.T) {
	clk := &ManualClock{}
	e := mustEngine(t, Config{Clock: clk, Rules: append(pipelineRules(),
		RuleSpec{Name: "src", RateLimit: &RateLimitSpec{Key: SrcKey, Rate: "10/s", MaxKeys: 64}, Action: "alert"},
		RuleSpec{Name: "d", Window: &WindowSpec{Key: "user_id", Size: time.Minute, Slide: time.Second, Agg: "distinct(ip)", MaxKeys: 1024}, When: "value > 5", Action: "alert"})})
	w := e.NewWorker()
	frames := zipfFrames(256, 1000, 3)
	src := netip.MustParseAddr("198.18.0.9")
	for _, f := range frames {
		w.Process(f, src)
	}
	i := 0
	allocs := testing.AllocsPerRun(2000, func() {
		clk.Advance(time.Millisecond)
		w.Process(frames[i%len(frames)], src)
		i++
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per event", allocs)
	}
}
