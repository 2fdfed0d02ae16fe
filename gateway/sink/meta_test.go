package sink

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/output"
)

// topKeys returns the member names of a JSON object line in order, with
// duplicates (encoding/json would hide them).
func topKeys(t *testing.T, line []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%s: not an object (%v %v)", line, tok, err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	}
	return keys
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 {
		return nil
	}
	if got[len(got)-1] != '\n' {
		t.Fatalf("%s does not end in a newline: %q", path, got)
	}
	return bytes.Split(got[:len(got)-1], []byte("\n"))
}

var allMeta = MetaSpec{Src: true, RxTime: true, Queue: true, GatewayID: true, Rule: true, Verdict: true}

// TestSinkMeta: every meta field on raw and annotated records, with its
// value; clashes with the event's own members resolved by more '_'; events
// that are empty, pretty-printed or escape their member names; a datagram
// without a known source or queue.
func TestSinkMeta(t *testing.T) {
	dir := t.TempDir()
	raw, ann := filepath.Join(dir, "raw"), filepath.Join(dir, "ann")
	s := newTestSinks(t, []Spec{
		{Type: "file", Path: raw, What: "all", Format: "raw", Meta: allMeta, GatewayID: "gw-1"},
		{Type: "file", Path: ann, What: "all", Format: "annotated", Meta: allMeta, GatewayID: "gw-1"},
	}, 1)
	w := s.Writer(0)
	src := netip.MustParseAddrPort("198.18.0.2:40000")
	rx := monotonicNs() - uint64(time.Second)
	o := &Origin{Src: src, RxNs: rx, Queue: 3}
	type rec struct {
		d    engine.Decision
		o    *Origin
		keys []string // the raw record's members, in order
	}
	recs := []rec{
		{d: engine.Decision{Raw: []byte(`{"a":1}`), Action: engine.ActionAlert, Rule: "big"}, o: o,
			keys: []string{"a", "_src", "_rx_time", "_queue", "_gateway_id", "_rule", "_verdict"}},
		// Added fields (enrichment lists) first, then the meta fields.
		{d: engine.Decision{Raw: []byte(`{"a":1}`), Action: engine.ActionAlert, Rule: "big", Extra: []byte(`,"risk_tier":"high"`)}, o: o,
			keys: []string{"a", "risk_tier", "_src", "_rx_time", "_queue", "_gateway_id", "_rule", "_verdict"}},
		{d: engine.Decision{Raw: []byte(`{}`), Action: engine.ActionPass}, o: o,
			keys: []string{"_src", "_rx_time", "_queue", "_gateway_id", "_rule", "_verdict"}},
		// A sender's _src and (escaped) _rule are cut out: the record has
		// the gateway's. __src and a nested _rule are other names.
		{d: engine.Decision{Raw: []byte("{\n \"_src\": \"mine\",\n \"__src\": 2, \"n\": {\"_rule\": 1}, \"\\u005frule\": [\"_verdict\"] }  "),
			Action: engine.ActionDrop, Rule: "r\"q"}, o: o,
			keys: []string{"__src", "n", "_src", "_rx_time", "_queue", "_gateway_id", "_rule", "_verdict"}},
		// Only forged members: every one cut, the object stays valid.
		{d: engine.Decision{Raw: []byte(`{"_verdict":"pass","_src":"6.6.6.6:66"}`), Action: engine.ActionAlert, Rule: "big"}, o: o,
			keys: []string{"_src", "_rx_time", "_queue", "_gateway_id", "_rule", "_verdict"}},
		// Unknown source and queue: left out.
		{d: engine.Decision{Raw: []byte(`{"b":"x"}`), Action: engine.ActionBlock, Rule: "flood", Block: time.Second}, o: &Origin{Queue: -1},
			keys: []string{"b", "_rx_time", "_gateway_id", "_rule", "_verdict"}},
		{d: engine.Decision{Raw: []byte(`{"amount":`), Err: engine.ErrInvalidJSON}, o: o},
	}
	before := time.Now().Add(-time.Second)
	for i := range recs {
		w.AddFrom(&recs[i].d, recs[i].o)
	}
	w.FlushAll()
	closeSinks(t, s)
	after := time.Now()
	// Cut from the raw records: _src and \u005frule, then _verdict and _src.
	if st := s.Stats(); st[0].Replaced != 4 || st[1].Replaced != 0 {
		t.Errorf("replaced members: raw %d, annotated %d; want 4 and 0", st[0].Replaced, st[1].Replaced)
	}

	checkTime := func(v any) {
		t.Helper()
		tm, err := time.Parse(time.RFC3339Nano, v.(string))
		if err != nil || len(v.(string)) != len(output.RxTimeLayout) || tm.Before(before.Add(-time.Second)) || tm.After(after) {
			t.Errorf("rx_time %v (%v): want about %v", v, err, before)
		}
	}
	rawLines := readLines(t, raw)
	if len(rawLines) != len(recs) {
		t.Fatalf("%d raw lines for %d records", len(rawLines), len(recs))
	}
	for i, r := range recs {
		line := rawLines[i]
		if r.d.Err != engine.DecodeOK {
			if !bytes.Equal(line, r.d.Raw) {
				t.Errorf("raw reject %q, want the bytes alone %q", line, r.d.Raw)
			}
			continue
		}
		if got := topKeys(t, line); !slices.Equal(got, r.keys) {
			t.Errorf("record %d %s\nmembers %q\n   want %q", i, line, got, r.keys)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		for k, v := range m {
			switch strings.TrimLeft(k, "_") {
			case "src":
				if k == "_src" && v != src.String() { // the gateway's, never the sender's
					t.Errorf("%s = %v, want %v", k, v, src)
				}
			case "rx_time":
				checkTime(v)
			case "queue":
				if v != 3.0 {
					t.Errorf("queue %v", v)
				}
			case "gateway_id":
				if v != "gw-1" {
					t.Errorf("gateway_id %v", v)
				}
			case "verdict":
				if v != r.d.Action.String() {
					t.Errorf("verdict %v, want %v", v, r.d.Action)
				}
			}
		}
		if m["_rule"] != r.d.Rule {
			t.Errorf("record %d: rule %v, want %q", i, m, r.d.Rule)
		}
	}

	annLines := readLines(t, ann)
	if len(annLines) != len(recs) {
		t.Fatalf("%d annotated lines for %d records", len(annLines), len(recs))
	}
	for i, r := range recs {
		line := annLines[i]
		want := []string{"verdict", "rule", "value", "_src", "_rx_time", "_queue", "_gateway_id", "event"}
		switch {
		case r.d.Err != engine.DecodeOK:
			want = []string{"error", "raw", "_src", "_rx_time", "_queue", "_gateway_id"}
		case r.d.Action == engine.ActionBlock:
			want = []string{"verdict", "rule", "value", "block_ms", "_rx_time", "_gateway_id", "event"}
		}
		if got := topKeys(t, line); !slices.Equal(got, want) {
			t.Errorf("annotated %d %s\nmembers %q\n   want %q", i, line, got, want)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		checkTime(m["_rx_time"])
		if m["_gateway_id"] != "gw-1" {
			t.Errorf("gateway_id %v", m["_gateway_id"])
		}
	}
}

// TestSinkMetaKeyed: meta src, queue and rx_time go into a keyed record
// (the Kafka and NATS headers), and only when asked for and known.
func TestSinkMetaKeyed(t *testing.T) {
	s := keyedFileSinks(t, filepath.Join(t.TempDir(), "k"))
	w := s.Writer(0)
	d := engine.Decision{Raw: []byte(`{"user_id":"u-1"}`), Action: engine.ActionAlert, Rule: "big"}
	v6 := netip.MustParseAddrPort("[2001:db8::1]:5353")
	for _, c := range []struct {
		name             string
		meta             MetaSpec
		o                Origin
		src, queue, time bool
	}{
		{"none", MetaSpec{}, Origin{Src: v6, Queue: 2}, false, false, false},
		{"all", allMeta, Origin{Src: v6, Queue: 2}, true, true, true},
		{"unknown", allMeta, Origin{Queue: -1}, false, false, true},
		{"src only", MetaSpec{Src: true}, Origin{Src: v6, Queue: 7}, true, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			sk := s.sinks[0]
			sk.metaOn, sk.metaWant = c.meta.On(), c.meta.bits()
			ro := &recOrigin{o: &c.o, rxWall: w.rxWall(0)}
			b := make([]byte, 0, keyedBound(&d, classPass))
			b = sk.encodeKeyed(b, &d, classAlert, ro)
			if len(b) > keyedBound(&d, classAlert) {
				t.Fatalf("%d bytes beyond the bound", len(b))
			}
			var r output.Record
			output.Parse(b, &r)
			if !bytes.Equal(r.Value, d.Raw) || string(r.Rule) != "big" || string(r.Key) != "u-1" {
				t.Fatalf("record %+v", r)
			}
			if (r.Src != nil) != c.src || c.src && string(r.Src) != v6.String() {
				t.Errorf("src %q", r.Src)
			}
			if (r.Queue != nil) != c.queue || c.queue && string(r.Queue) != "2" {
				t.Errorf("queue %q", r.Queue)
			}
			if (r.RxTime != nil) != c.time {
				t.Errorf("rx_time %q", r.RxTime)
			}
			if c.time {
				tm, err := time.Parse(time.RFC3339Nano, string(r.RxTime))
				if err != nil || tm.UnixNano() != r.RxNs {
					t.Errorf("rx_time %q (%v) is not rx_ns %d", r.RxTime, err, r.RxNs)
				}
			}
		})
	}
}

// TestSinkRouteByRule: the table of who gets what with rules routing to
// sinks (to:) beside the sinks' what:. A routed sink gets the events of
// its rules whatever their verdict, once; what: routed gets nothing else.
func TestSinkRouteByRule(t *testing.T) {
	dir := t.TempDir()
	specs := []Spec{
		{Name: "alerts", Type: "file", Path: filepath.Join(dir, "alerts"), What: "alerts"},
		{Name: "fraud", Type: "file", Path: filepath.Join(dir, "fraud"), What: "routed"},
		{Name: "audit", Type: "file", Path: filepath.Join(dir, "audit"), What: "dropped"},
		{Type: "file", Path: filepath.Join(dir, "unnamed"), What: "routed"},
	}
	s := newTestSinks(t, specs, 1)
	routes := map[string][]string{
		"big-payment":  {"fraud"},
		"velocity":     {"fraud", "alerts"}, // an alert: alerts gets it once
		"flood":        {"audit", "fraud"},  // a block: audit gets it once
		"vip":          {"file:" + specs[3].Path},
		"not-deciding": {"audit"},
	}
	tbl, err := s.Routes(routes)
	if err != nil {
		t.Fatal(err)
	}
	s.SetRoutes(tbl)
	ds := []engine.Decision{
		{Raw: []byte(`{"i":0}`), Action: engine.ActionPass},
		{Raw: []byte(`{"i":1}`), Action: engine.ActionAlert, Rule: "big-payment"},
		{Raw: []byte(`{"i":2}`), Action: engine.ActionAlert, Rule: "velocity"},
		{Raw: []byte(`{"i":3}`), Action: engine.ActionBlock, Rule: "flood", Block: time.Second},
		{Raw: []byte(`{"i":4}`), Action: engine.ActionPass, Rule: "vip"},
		{Raw: []byte(`{"i":5}`), Action: engine.ActionDrop, Rule: "other"},
		{Raw: []byte(`{"i":6`), Err: engine.ErrInvalidJSON, Rule: "big-payment"}, // a reject is never routed
		{Raw: []byte(`{"i":7}`), Action: engine.ActionAlert, Rule: "unrouted"},
	}
	w := s.Writer(0)
	for i := range ds {
		w.Add(&ds[i])
	}
	w.FlushAll()
	closeSinks(t, s)
	want := map[string][]int{
		"alerts":  {1, 2, 7},
		"fraud":   {1, 2, 3},
		"audit":   {3, 5},
		"unnamed": {4},
	}
	for name, idx := range want {
		var got []int
		for _, line := range readLines(t, filepath.Join(dir, name)) {
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("%s: %q: %v", name, line, err)
			}
			if ev, ok := m["event"].(map[string]any); ok {
				m = ev
			}
			got = append(got, int(m["i"].(float64)))
		}
		if !slices.Equal(got, idx) {
			t.Errorf("sink %s got events %v, want %v", name, got, idx)
		}
	}

	// Routes to what is not a sink are refused.
	var re *RouteError
	if _, err := s.Routes(map[string][]string{"r": {"nope"}}); !errors.As(err, &re) || re.Sink != "nope" {
		t.Errorf("route to an unknown sink: %v", err)
	}
}

// TestSinkMetaSpec: meta.gateway_id lets a non-keyed sink have a
// gateway_id; without it the key is still a keyed sinks' key; what: routed
// is a selection.
func TestSinkMetaSpec(t *testing.T) {
	for _, c := range []struct {
		sp  Spec
		key string // "" = accepted
	}{
		{Spec{Type: "stdout", What: "routed"}, ""},
		{Spec{Type: "stdout", What: "all", GatewayID: "g"}, "gateway_id"},
		{Spec{Type: "stdout", What: "all", GatewayID: "g", Meta: MetaSpec{GatewayID: true}}, ""},
		{Spec{Type: "stdout", What: "all", GatewayID: "a b", Meta: MetaSpec{GatewayID: true}}, "gateway_id"},
		{Spec{Type: "stdout", What: "route"}, "what"},
	} {
		errs := Check([]Spec{c.sp}, nil)
		switch {
		case c.key == "" && len(errs) > 0:
			t.Errorf("%+v: %v", c.sp, errs[0])
		case c.key != "" && (len(errs) == 0 || errs[0].Key != c.key):
			t.Errorf("%+v: %v, want a problem of %s", c.sp, errs, c.key)
		}
	}
	if sp := (Spec{Type: "stdout", What: "all", Meta: MetaSpec{GatewayID: true}}).WithDefaults(); sp.GatewayID == "" {
		t.Error("meta.gateway_id without gateway_id: no default id")
	}
}

// TestStripReservedMany: an event of many forged members (the attack of a
// sender who wants the record encoder to work hard) loses them all in one
// pass and stays one valid object; nested and other names stay.
func TestStripReservedMany(t *testing.T) {
	sk := &sink{reserved: []string{"vip"}, metaOn: true, metaWant: allMeta.bits()}
	var ev bytes.Buffer
	ev.WriteString(`{"p":0,"n":{"vip":1,"_src":2}`)
	for range 1000 {
		ev.WriteString(`,"vip":1,"_src":"6.6.6.6:66"`)
	}
	ev.WriteString(`,"q":[1,{"_rule":3}]}`)
	raw := ev.Bytes()
	b := sk.stripReserved(append([]byte("prefix"), raw...), len("prefix"), true)
	want := `prefix{"p":0,"n":{"vip":1,"_src":2},"q":[1,{"_rule":3}]}`
	if string(b) != want {
		t.Fatalf("got %.200q", b)
	}
	if n := sk.cnt.replaced.Load(); n != 2000 {
		t.Errorf("replaced %d, want 2000", n)
	}
	// Only forged members: an empty object.
	if b := sk.stripReserved([]byte(`{"vip":1,"_verdict":"pass"}`), 0, true); string(b) != `{}` {
		t.Errorf("all cut: %q", b)
	}
	// Nothing to cut: the bytes as they were.
	in := `{ "a" : 1 , "b":[{"vip":2}] }`
	if b := sk.stripReserved([]byte(in), 0, true); string(b) != in {
		t.Errorf("nothing cut: %q", b)
	}
}

func BenchmarkStripReserved(b *testing.B) {
	sk := &sink{reserved: []string{"vip"}}
	var ev bytes.Buffer
	ev.WriteString(`{"p":0`)
	for range 1000 {
		ev.WriteString(`,"vip":1`)
	}
	ev.WriteString(`}`)
	raw := ev.Bytes()
	buf := make([]byte, 0, len(raw))
	b.ReportAllocs()
	for b.Loop() {
		buf = sk.stripReserved(append(buf[:0], raw...), 0, false)
	}
}
