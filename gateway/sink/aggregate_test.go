package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/output"
)

var testAgg = engine.Aggregate{Rule: "velocity", Agg: "sum(amount)", Key: `u"1`, Value: 1234.5,
	Start: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC).UnixNano(), End: time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC).UnixNano()}

// TestAggregateFileRecords: a file sink of what: aggregates gets each
// aggregate as one JSON line with the documented fields, from a worker's
// Writer and from the emitter's, and no event; a sink of events gets no
// aggregate.
func TestAggregateFileRecords(t *testing.T) {
	dir := t.TempDir()
	aggPath, evPath := filepath.Join(dir, "aggs.ndjson"), filepath.Join(dir, "events.ndjson")
	s, err := New([]Spec{
		{Type: "file", Path: aggPath, What: "aggregates", GatewayID: "gw-1", Fsync: "never"},
		{Type: "file", Path: evPath, What: "all", Fsync: "never"},
	}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !s.WantsAggregates() {
		t.Fatal("WantsAggregates false with a sink of aggregates")
	}
	w, em := s.Writer(1), s.EmitWriter()
	w.Add(&engine.Decision{Raw: []byte(`{"user_id":"u1"}`), Action: engine.ActionAlert, Rule: "velocity"})
	w.AddAggregate(&testAgg)
	cut := testAgg
	cut.Key, cut.Truncated, cut.Value = "u-cut", true, 3
	em.AddAggregate(&cut)
	w.FlushAll()
	em.FlushAll()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(aggPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("aggregate sink has %d lines: %q", len(lines), data)
	}
	want := `{"type":"aggregate","rule":"velocity","key":"u\"1","agg":"sum(amount)","value":1234.5,` +
		`"window_start":"2026-01-02T03:04:00.000000000Z","window_end":"2026-01-02T03:05:00.000000000Z","gateway_id":"gw-1"}`
	if lines[0] != want {
		t.Fatalf("record\n%s\nwant\n%s", lines[0], want)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &rec); err != nil || rec["key"] != "u-cut" || rec["key_truncated"] != true || rec["value"] != 3.0 {
		t.Fatalf("emitter's record %s: %v %v", lines[1], rec, err)
	}
	ev, _ := os.ReadFile(evPath)
	if bytes.Contains(ev, []byte("aggregate")) || bytes.Count(ev, []byte("\n")) != 1 {
		t.Fatalf("event sink holds %q", ev)
	}
	st := s.Stats()
	if st[0].Records != 2 || st[1].Records != 1 {
		t.Fatalf("records %d and %d, want 2 and 1", st[0].Records, st[1].Records)
	}
}

// TestAggregateEmitWriterOnlyAggregateSlabs: the emitter's Writer has
// slabs only in sinks of aggregates, so it costs no memory elsewhere; an
// event it were given there would be dropped and counted.
func TestAggregateEmitWriterOnlyAggregateSlabs(t *testing.T) {
	s, err := New([]Spec{{Type: "file", Path: filepath.Join(t.TempDir(), "e"), What: "all", Fsync: "never"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if s.WantsAggregates() {
		t.Fatal("WantsAggregates with no sink of aggregates")
	}
	if n := s.sinks[0].free[1].Len(); n != 0 {
		t.Fatalf("emitter has %d slabs in an event sink", n)
	}
	s.EmitWriter().Add(&engine.Decision{Raw: []byte(`{}`)})
	if st := s.Stats()[0]; st.Dropped != 1 {
		t.Fatalf("stats %+v, want 1 dropped", st)
	}
}

// TestAggregateAddAllocs: adding an aggregate allocates nothing.
func TestAggregateAddAllocs(t *testing.T) {
	s, err := New([]Spec{{Type: "file", Path: filepath.Join(t.TempDir(), "a"), What: "aggregates", Fsync: "never", OnFull: "block", BlockTimeout: time.Minute}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	w := s.Writer(0)
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		w.AddAggregate(&testAgg)
		if i++; i%64 == 0 {
			w.FlushAll()
		}
	}); n != 0 {
		t.Fatalf("%v allocations per aggregate", n)
	}
}

// BenchmarkAggregateEncode: one aggregate record encoded into a slab (the
// sink side of an emit), as JSON and as a keyed (Kafka/NATS) record.
func BenchmarkAggregateEncode(b *testing.B) {
	sk := &sink{gwJSON: appendJSONString(nil, []byte("gw-1"))}
	buf := make([]byte, 0, 4096)
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = sk.encodeAggregate(buf[:0], &testAgg)
		}
	})
	b.Run("keyed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = sk.encodeKeyedAggregate(buf[:0], &testAgg, 1767323045000000000)
		}
		var kr output.Record
		output.Parse(buf, &kr)
		if string(output.Verdicts[kr.Verdict]) != "aggregate" || string(kr.Key) != testAgg.Key || string(kr.Rule) != "velocity" || !json.Valid(kr.Value) {
			b.Fatalf("keyed record %+v", kr)
		}
	})
}
