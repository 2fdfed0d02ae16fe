package engine

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/xgate/xgate/engine/lists"
)

func mustList(t testing.TB, name string, k lists.ListKind, f lists.ListFormat, text string) *lists.List {
	t.Helper()
	d, err := lists.ParseList(k, f, []byte(text), lists.ListLimits{})
	if err != nil {
		t.Fatalf("lists.ParseList %s: %v", name, err)
	}
	l, err := lists.NewList(name, k, d)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// listTestLists are the lists of the condition and pipeline tests.
func listTestLists(t testing.TB) map[string]*lists.List {
	return map[string]*lists.List{
		"partners":  mustList(t, "partners", lists.ListCIDR, lists.FormatLines, "198.51.100.0/24\n2001:db8::/32\n"),
		"vip":       mustList(t, "vip", lists.ListSet, lists.FormatLines, "u-1\nu-2\n7\n"),
		"risk_tier": mustList(t, "risk_tier", lists.ListMap, lists.FormatCSV, "u-1,high\nu-3,low\n"),
		"score":     mustList(t, "score", lists.ListMap, lists.FormatJSON, `{"u-1": 90, "u-3": 10}`),
	}
}

func TestListConditions(t *testing.T) {
	ls := listTestLists(t)
	src := netip.MustParseAddr("198.51.100.9")
	for _, c := range []struct {
		cond  string
		event string
		src   netip.Addr
		want  bool
	}{
		{`ip in cidrs("partners")`, `{"user_id":"x","ip":"198.51.100.7"}`, netip.Addr{}, true},
		{`ip in cidrs("partners")`, `{"user_id":"x","ip":"198.51.101.7"}`, netip.Addr{}, false},
		{`ip in cidrs("partners")`, `{"user_id":"x","ip":"2001:db8::7"}`, netip.Addr{}, true},
		{`ip in cidrs("partners")`, `{"user_id":"x","ip":"not an address"}`, netip.Addr{}, false},
		{`ip in cidrs("partners")`, `{"user_id":"x","ip":"198.051.100.7"}`, netip.Addr{}, false},
		{`addr in cidrs("partners")`, `{"user_id":"x","addr":7}`, netip.Addr{}, false},
		{`ip in cidrs("partners")`, `{"user_id":"x"}`, netip.Addr{}, false},
		{`src_ip in cidrs("partners")`, `{"user_id":"x","ip":"10.0.0.1"}`, src, true},
		{`src_ip in cidrs("partners")`, `{"user_id":"x","ip":"198.51.100.1"}`, netip.MustParseAddr("10.0.0.1"), false},
		{`src_ip in cidrs("partners")`, `{"user_id":"x","ip":"198.51.100.1"}`, netip.Addr{}, true}, // schema src field
		{`!(src_ip in cidrs("partners"))`, `{"user_id":"x"}`, netip.MustParseAddr("::ffff:198.51.100.1"), false},
		{`user_id in set("vip")`, `{"user_id":"u-2"}`, netip.Addr{}, true},
		{`user_id in set("vip")`, `{"user_id":"u-3"}`, netip.Addr{}, false},
		{`user_id in set("vip")`, `{"user_id":7}`, netip.Addr{}, true},
		{`lookup("risk_tier", user_id) == "high"`, `{"user_id":"u-1"}`, netip.Addr{}, true},
		{`lookup("risk_tier", user_id) == "high"`, `{"user_id":"u-3"}`, netip.Addr{}, false},
		{`lookup("risk_tier", user_id) != "high"`, `{"user_id":"u-9"}`, netip.Addr{}, true},
		{`"high" == lookup("risk_tier", user_id)`, `{"user_id":"u-1"}`, netip.Addr{}, true},
		{`lookup("risk_tier", user_id) in ["high", "mid"]`, `{"user_id":"u-1"}`, netip.Addr{}, true},
		{`lookup("risk_tier", user_id) startsWith "hi"`, `{"user_id":"u-1"}`, netip.Addr{}, true},
		{`lookup("score", user_id) > 50`, `{"user_id":"u-1"}`, netip.Addr{}, true},
		{`lookup("score", user_id) > 50`, `{"user_id":"u-3"}`, netip.Addr{}, false},
		{`lookup("score", user_id) > 50`, `{"user_id":"u-4"}`, netip.Addr{}, false},
		{`set == 1 && lookup == 2`, `{"user_id":"x","set":1,"lookup":2}`, netip.Addr{}, true}, // still field names
	} {
		e := mustEngine(t, Config{Lists: ls, Rules: []RuleSpec{{Name: "r", When: c.cond, Action: "drop"}}})
		ds := e.NewWorker().Process([]byte(c.event), c.src)
		if len(ds) != 1 || ds[0].Err != DecodeOK {
			t.Fatalf("%s on %s: %v", c.cond, c.event, errsOf(ds))
		}
		if got := ds[0].Action == ActionDrop; got != c.want {
			t.Errorf("%s on %s from %v: %v, want %v", c.cond, c.event, c.src, got, c.want)
		}
	}
}

func TestListCompileErrors(t *testing.T) {
	ls := listTestLists(t)
	for _, c := range []struct{ cond, msg string }{
		{`ip in cidrs("nope")`, `unknown list "nope" (lists: partners, risk_tier, score, vip)`},
		{`ip in cidrs("vip")`, `list "vip" is a set list, not a cidr list: use set("vip")`},
		{`user_id in set("partners")`, `list "partners" is a cidr list, not a set list: use cidrs("partners")`},
		{`user_id in set("risk_tier")`, `list "risk_tier" is a map list, not a set list: use lookup("risk_tier")`},
		{`lookup("vip", user_id) == "x"`, `list "vip" is a set list, not a map list`},
		{`lookup("risk_tier", user_id)`, `lookup(…) is a value: compare it`},
		{`lookup(risk_tier, user_id) == "x"`, `lookup needs a list name in quotes`},
		{`lookup("risk_tier", "u-1") == "x"`, `lookup's key is a field`},
		{`lookup("risk_tier") == "x"`, `expected ","`},
		{`cidrs("partners")`, `cidrs(…) goes after in`},
		{`ip in cidrs("partners"`, `expected ")"`},
	} {
		_, err := New(Config{Lists: ls, Rules: []RuleSpec{{Name: "r", When: c.cond, Action: "drop"}}})
		var xe *ExprError
		if !errors.As(err, &xe) || !strings.Contains(xe.Msg, c.msg) {
			t.Errorf("%s: error %v, want an ExprError containing %q", c.cond, err, c.msg)
		}
	}
	if _, err := New(Config{Rules: []RuleSpec{{Name: "r", When: `ip in cidrs("p")`, Action: "drop"}}}); err == nil ||
		!strings.Contains(err.Error(), "no lists are configured") {
		t.Errorf("without lists: %v", err)
	}
}

// TestListSwapUnderWorker: Store changes the verdicts of the running
// program at once, without a reload.
func TestListSwapUnderWorker(t *testing.T) {
	ls := listTestLists(t)
	e := mustEngine(t, Config{Lists: ls, Rules: []RuleSpec{{Name: "vip-only", When: `!(user_id in set("vip"))`, Action: "drop"}}})
	w := e.NewWorker()
	ev := []byte(`{"user_id":"u-9"}`)
	if ds := w.Process(ev, netip.Addr{}); ds[0].Action != ActionDrop {
		t.Fatalf("u-9 before: %v", ds[0].Action)
	}
	d, _ := lists.ParseList(lists.ListSet, lists.FormatLines, []byte("u-9\n"), lists.ListLimits{})
	if err := ls["vip"].Store(d); err != nil {
		t.Fatal(err)
	}
	if ds := w.Process(ev, netip.Addr{}); ds[0].Action != ActionPass {
		t.Fatalf("u-9 after: %v", ds[0].Action)
	}
}

func TestEnrich(t *testing.T) {
	ls := listTestLists(t)
	e := mustEngine(t, Config{Lists: ls,
		Rules: []RuleSpec{
			{Name: "partner", When: `src_ip in cidrs("partners")`, Action: "alert",
				Enrich: []EnrichSpec{{Field: "tier", From: `lookup("risk_tier", user_id)`}, {Field: "partner", From: "true == true"}}},
			{Name: "big", When: `amount > 100`, Action: "drop"},
		},
		Enrich: []EnrichSpec{
			{Field: "risk_tier", From: `lookup("risk_tier", user_id)`},
			{Field: "vip", From: `user_id in set("vip")`},
			{Field: "score", From: `lookup("score", user_id)`},
			{Field: "tier", From: `lookup("risk_tier", user_id)`}, // the rule's comes first
			{Field: "partner", From: `false == true`},
		}})
	w := e.NewWorker()
	partner := netip.MustParseAddr("198.51.100.1")
	for _, c := range []struct {
		event string
		src   netip.Addr
		extra string
	}{
		{`{"user_id":"u-1"}`, netip.Addr{}, `,"risk_tier":"high","vip":true,"score":90,"tier":"high","partner":false`},
		{`{"user_id":"u-1"}`, partner, `,"tier":"high","partner":true,"risk_tier":"high","vip":true,"score":90`},
		{`{"user_id":"u-9","amount":500}`, netip.Addr{}, `,"vip":false,"partner":false`},
		// The event's own vip is no added field: the list's answer is
		// added all the same (the sinks cut the event's member).
		{`{"user_id":"u-3","vip":"own"}`, netip.Addr{}, `,"risk_tier":"low","vip":false,"score":10,"tier":"low","partner":false`},
	} {
		ds := w.Process([]byte(c.event), c.src)
		if len(ds) != 1 || ds[0].Err != DecodeOK {
			t.Fatalf("%s: %v", c.event, errsOf(ds))
		}
		if string(ds[0].Extra) != c.extra {
			t.Errorf("%s from %v:\n got %s\nwant %s", c.event, c.src, ds[0].Extra, c.extra)
		}
	}
	w.Flush()
	if s := e.Stats(); s.EnrichPresent != 1 {
		t.Errorf("EnrichPresent %d, want 1 (the event's own vip)", s.EnrichPresent)
	}
	// Two events of one datagram keep their own added fields.
	ds := w.Process([]byte("{\"user_id\":\"u-1\"}\n{\"user_id\":\"u-3\"}"), netip.Addr{})
	if len(ds) != 2 || !strings.Contains(string(ds[0].Extra), `"high"`) || !strings.Contains(string(ds[1].Extra), `"low"`) {
		t.Errorf("two events: %q / %q", ds[0].Extra, ds[1].Extra)
	}
	// Without added fields, Extra is nil.
	plain := mustEngine(t, Config{})
	if ds := plain.NewWorker().Process([]byte(`{"user_id":"u-1"}`), netip.Addr{}); ds[0].Extra != nil {
		t.Errorf("Extra without enrich: %q", ds[0].Extra)
	}
}

func TestEnrichErrors(t *testing.T) {
	ls := listTestLists(t)
	for _, c := range []struct {
		spec EnrichSpec
		part string
		msg  string
	}{
		{EnrichSpec{From: "true == true"}, "field", "missing"},
		{EnrichSpec{Field: "a.b", From: "true == true"}, "field", "without dots"},
		{EnrichSpec{Field: `a"b`, From: "true == true"}, "field", "plain top-level name"},
		{EnrichSpec{Field: "x"}, "from", "missing"},
		{EnrichSpec{Field: "x", From: `lookup("nope", user_id)`}, "from", `unknown list "nope"`},
		{EnrichSpec{Field: "x", From: `lookup("vip", user_id)`}, "from", `is a set list, not a map list`},
		{EnrichSpec{Field: "x", From: `"text"`}, "from", "not a condition"},
	} {
		_, err := New(Config{Lists: ls, Enrich: []EnrichSpec{c.spec}})
		var ee *EnrichError
		if !errors.As(err, &ee) || ee.Part != c.part || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%+v: error %v, want an EnrichError on %s containing %q", c.spec, err, c.part, c.msg)
		}
	}
	_, err := New(Config{Lists: ls, Rules: []RuleSpec{{Name: "r", When: "true == true", Action: "alert",
		Enrich: []EnrichSpec{{Field: "x", From: `lookup("nope", user_id)`}}}}})
	var ee *EnrichError
	if !errors.As(err, &ee) || ee.Rule != "r" || ee.Index != 0 {
		t.Errorf("rule enrich: %v", err)
	}
}

// TestListLookupsDoNotAllocate: every lookup kind, in conditions and in
// added fields, over the pipeline.
func TestListLookupsDoNotAllocate(t *testing.T) {
	e := mustEngine(t, listPipelineConfig(t))
	w := e.NewWorker()
	frame := []byte(benchEvent)
	src := netip.MustParseAddr("198.51.100.7")
	if n := testing.AllocsPerRun(1000, func() { w.Process(frame, src) }); n != 0 {
		t.Errorf("%v allocations per event, want 0", n)
	}
	if ds := w.Process(frame, src); ds[0].Action != ActionAlert || len(ds[0].Extra) == 0 {
		t.Errorf("the list rule did not fire: %+v", ds[0])
	}
}
