package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

func mustList(t testing.TB, name string, k ListKind, f ListFormat, text string) *List {
	t.Helper()
	d, err := ParseList(k, f, []byte(text), ListLimits{})
	if err != nil {
		t.Fatalf("ParseList %s: %v", name, err)
	}
	l, err := NewList(name, k, d)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestCIDRListContains(t *testing.T) {
	l := mustList(t, "p", ListCIDR, FormatLines, `# partners
198.51.100.0/24   # office
203.0.113.7
10.0.0.0/8
10.1.0.0/16        # inside the /8: merged
2001:db8::/32
::ffff:192.0.2.0/120
`)
	d := l.Load()
	if d.Len() != 6 {
		t.Errorf("Len %d, want 6", d.Len())
	}
	for _, c := range []struct {
		addr string
		in   bool
	}{
		{"198.51.100.0", true}, {"198.51.100.255", true}, {"198.51.101.0", false}, {"198.51.99.255", false},
		{"203.0.113.7", true}, {"203.0.113.8", false}, {"203.0.113.6", false},
		{"10.255.255.255", true}, {"11.0.0.0", false}, {"9.255.255.255", false},
		{"2001:db8::1", true}, {"2001:db9::", false}, {"::ffff:198.51.100.9", true},
		{"192.0.2.77", true}, {"192.0.3.1", false}, {"::", false}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
	} {
		if got := d.ContainsAddr(netip.MustParseAddr(c.addr)); got != c.in {
			t.Errorf("%s: in=%v, want %v", c.addr, got, c.in)
		}
	}
	if d.ContainsAddr(netip.Addr{}) {
		t.Error("the zero Addr is in the list")
	}
}

// TestCIDRListAgreesWithPrefixes: the merged ranges answer as a scan over
// the prefixes does, on random lists and addresses (near the edges too).
func TestCIDRListAgreesWithPrefixes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randAddr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.IntN(4)) // a small space: overlaps happen
			}
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(256)), byte(rng.IntN(256))})
	}
	for round := 0; round < 50; round++ {
		var text strings.Builder
		var pfx []netip.Prefix
		for i := 0; i < 1+rng.IntN(40); i++ {
			v6 := rng.IntN(3) == 0
			a := randAddr(v6)
			bits := 8 + rng.IntN(a.BitLen()-7)
			p := netip.PrefixFrom(a, bits).Masked()
			pfx = append(pfx, p)
			fmt.Fprintln(&text, p)
		}
		d, err := ParseList(ListCIDR, FormatLines, []byte(text.String()), ListLimits{})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2000; i++ {
			a := randAddr(rng.IntN(3) == 0)
			if i%2 == 0 { // an edge of a listed network, or next to it
				p := pfx[rng.IntN(len(pfx))]
				r := prefixRange(p)
				x := r.lo
				if rng.IntN(2) == 0 {
					x = r.hi
				}
				if nx, ok := x.addOne(); ok && rng.IntN(2) == 0 {
					x = nx
				}
				var b [16]byte
				for j := 0; j < 8; j++ {
					b[j] = byte(x.hi >> (56 - 8*j))
					b[8+j] = byte(x.lo >> (56 - 8*j))
				}
				a = netip.AddrFrom16(b).Unmap()
			}
			// IPv4 is v4-mapped, as in the XDP trie: an IPv6 network over
			// ::ffff:0:0/96 holds IPv4 addresses too.
			want := false
			for _, p := range pfx {
				want = want || p.Contains(a) || a.Is4() && p.Contains(netip.AddrFrom16(a.As16()))
			}
			if got := d.ContainsAddr(a); got != want {
				t.Fatalf("round %d: %v: got %v, want %v (list %v)", round, a, got, want, pfx)
			}
		}
	}
}

func TestSetAndMapLists(t *testing.T) {
	s := mustList(t, "vip", ListSet, FormatLines, "# vip users\nu-1\n  u-2  \n\nu-1\n42\n").Load()
	if s.Len() != 3 || !s.ContainsKey("u-2") || !s.ContainsKey("42") || s.ContainsKey("u-3") || s.ContainsKey("# vip users") {
		t.Errorf("set: len %d, u-2 %v, 42 %v", s.Len(), s.ContainsKey("u-2"), s.ContainsKey("42"))
	}
	m := mustList(t, "risk", ListMap, FormatCSV, "# user,tier\nu-1,high\nu-2, low\n\"u,3\",\"say \"\"hi\"\"\"\n").Load()
	if v := m.Lookup("u-1"); v.Kind != KindString || v.Str != "high" {
		t.Errorf("u-1: %+v", v)
	}
	if v := m.Lookup("u-2"); v.Str != "low" {
		t.Errorf("u-2: %+v", v)
	}
	if js, _ := m.lookupJSON("u,3"); js != `"say \"hi\""` {
		t.Errorf("u,3 as JSON: %s", js)
	}
	if v := m.Lookup("nobody"); v.Kind != KindMissing {
		t.Errorf("nobody: %+v", v)
	}
	j := mustList(t, "limits", ListMap, FormatJSON, `{"u-1": "high", "u-2": 12.5, "u-3": true, "u-<4>": "a&b"}`).Load()
	if v := j.Lookup("u-2"); v.Kind != KindNumber || v.Num != 12.5 {
		t.Errorf("u-2: %+v", v)
	}
	if v := j.Lookup("u-3"); v.Kind != KindBool || !v.Bool {
		t.Errorf("u-3: %+v", v)
	}
	if js, _ := j.lookupJSON("u-<4>"); js != `"a&b"` {
		t.Errorf("u-<4> as JSON: %s", js)
	}
}

func TestListParseErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		kind ListKind
		f    ListFormat
		text string
		line int
		msg  string
	}{
		{"bad network", ListCIDR, FormatLines, "10.0.0.0/8\n\n10.0.0.300/8\n", 3, `"10.0.0.300/8" is not a network`},
		{"zone", ListCIDR, FormatLines, "fe80::1%eth0\n", 1, "is not a network"},
		{"too many", ListCIDR, FormatLines, "10.0.0.1\n10.0.0.2\n10.0.0.3\n", 3, "more than 2 entries"},
		{"set too many", ListSet, FormatLines, "a\nb\nc\n", 3, "more than 2 entries"},
		{"csv one field", ListMap, FormatCSV, "a,1\nb\n", 2, "1 fields: want key,value"},
		{"csv three fields", ListMap, FormatCSV, "a,1,2\n", 1, "3 fields"},
		{"csv repeated", ListMap, FormatCSV, "a,1\nb,2\na,3\n", 3, `key "a" repeated (first on line 1)`},
		{"csv quote", ListMap, FormatCSV, "a,1\n\"b,2\n", 2, "quote"},
		{"csv empty key", ListMap, FormatCSV, " ,1\n", 1, "empty key"},
		{"json array", ListMap, FormatJSON, `["a"]`, 1, "want one JSON object"},
		{"json nested", ListMap, FormatJSON, "{\n\"a\": \"x\",\n\"b\": {\"c\": 1}\n}", 3, `key "b": want a string, number or boolean`},
		{"json syntax", ListMap, FormatJSON, "{\n\"a\": \"x\"\n\"b\": 1}", 3, "invalid JSON"},
		{"json truncated", ListMap, FormatJSON, "{\"a\": \"x\",\n", 2, "invalid JSON"},
		{"json trailing", ListMap, FormatJSON, "{\"a\": \"x\"}\n{}", 2, "something after the object"},
		{"json repeated", ListMap, FormatJSON, "{\"a\": 1,\n\"a\": 2}", 2, "repeated"},
		{"utf8", ListSet, FormatLines, "ok\n\xff\xfe\n", 2, "not valid UTF-8"},
		{"long key", ListSet, FormatLines, strings.Repeat("k", MaxListKey+1), 1, "at most 4096"},
		{"cidr as csv", ListCIDR, FormatCSV, "10.0.0.0/8\n", 0, "one network a line"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseList(c.kind, c.f, []byte(c.text), ListLimits{MaxEntries: 2})
			var le *ListError
			if !errors.As(err, &le) {
				t.Fatalf("error %v, want a *ListError", err)
			}
			if le.Line != c.line || !strings.Contains(le.Msg, c.msg) {
				t.Errorf("got line %d %q, want line %d containing %q", le.Line, le.Msg, c.line, c.msg)
			}
		})
	}
}

func TestListStoreKind(t *testing.T) {
	l := mustList(t, "p", ListCIDR, FormatLines, "10.0.0.0/8")
	set, _ := ParseList(ListSet, FormatLines, []byte("a"), ListLimits{})
	if err := l.Store(set); err == nil {
		t.Error("a set stored into a cidr list")
	}
	if err := l.Store(nil); err == nil {
		t.Error("nil stored")
	}
}

// listTestLists are the lists of the condition and pipeline tests.
func listTestLists(t testing.TB) map[string]*List {
	return map[string]*List{
		"partners":  mustList(t, "partners", ListCIDR, FormatLines, "198.51.100.0/24\n2001:db8::/32\n"),
		"vip":       mustList(t, "vip", ListSet, FormatLines, "u-1\nu-2\n7\n"),
		"risk_tier": mustList(t, "risk_tier", ListMap, FormatCSV, "u-1,high\nu-3,low\n"),
		"score":     mustList(t, "score", ListMap, FormatJSON, `{"u-1": 90, "u-3": 10}`),
	}
}

func TestListConditions(t *testing.T) {
	lists := listTestLists(t)
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
		e := mustEngine(t, Config{Lists: lists, Rules: []RuleSpec{{Name: "r", When: c.cond, Action: "drop"}}})
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
	lists := listTestLists(t)
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
		_, err := New(Config{Lists: lists, Rules: []RuleSpec{{Name: "r", When: c.cond, Action: "drop"}}})
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
	lists := listTestLists(t)
	e := mustEngine(t, Config{Lists: lists, Rules: []RuleSpec{{Name: "vip-only", When: `!(user_id in set("vip"))`, Action: "drop"}}})
	w := e.NewWorker()
	ev := []byte(`{"user_id":"u-9"}`)
	if ds := w.Process(ev, netip.Addr{}); ds[0].Action != ActionDrop {
		t.Fatalf("u-9 before: %v", ds[0].Action)
	}
	d, _ := ParseList(ListSet, FormatLines, []byte("u-9\n"), ListLimits{})
	if err := lists["vip"].Store(d); err != nil {
		t.Fatal(err)
	}
	if ds := w.Process(ev, netip.Addr{}); ds[0].Action != ActionPass {
		t.Fatalf("u-9 after: %v", ds[0].Action)
	}
}

func TestEnrich(t *testing.T) {
	lists := listTestLists(t)
	e := mustEngine(t, Config{Lists: lists,
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
	lists := listTestLists(t)
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
		_, err := New(Config{Lists: lists, Enrich: []EnrichSpec{c.spec}})
		var ee *EnrichError
		if !errors.As(err, &ee) || ee.Part != c.part || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%+v: error %v, want an EnrichError on %s containing %q", c.spec, err, c.part, c.msg)
		}
	}
	_, err := New(Config{Lists: lists, Rules: []RuleSpec{{Name: "r", When: "true == true", Action: "alert",
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
