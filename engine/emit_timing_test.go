package engine

import (
	"fmt"
	"testing"
	"time"
)

var benchSinkAggs []Aggregate

// BenchmarkEmitOnAlert: one event through a window rule that fires and
// emits its aggregate on_alert (the worker's cost of an aggregate emit,
// the sink encode aside: see gateway/sink BenchmarkAggregateEncode).
func BenchmarkEmitOnAlert(b *testing.B) {
	e := mustEngine(b, Config{Rules: []RuleSpec{{Name: "vel", Action: "alert", When: "value > 0",
		Window: &WindowSpec{Key: "user_id", Size: 60 * time.Second, Slide: 5 * time.Second, Agg: "sum(amount)", MaxKeys: 1 << 16,
			Emit: EmitSpec{Mode: EmitOnAlert}}}}})
	w := e.NewWorker()
	frame := []byte(benchEvent)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		benchSinkDecisions = w.Process(frame, netipZero)
		benchSinkAggs = w.Aggregates()
	}
	if len(benchSinkAggs) != 1 {
		b.Fatalf("%d aggregates, want 1", len(benchSinkAggs))
	}
}

// BenchmarkEmitOnAlertBaseline is BenchmarkEmitOnAlert without emit: the
// difference is the emit's cost.
func BenchmarkEmitOnAlertBaseline(b *testing.B) {
	e := mustEngine(b, Config{Rules: []RuleSpec{{Name: "vel", Action: "alert", When: "value > 0",
		Window: &WindowSpec{Key: "user_id", Size: 60 * time.Second, Slide: 5 * time.Second, Agg: "sum(amount)", MaxKeys: 1 << 16}}}})
	w := e.NewWorker()
	frame := []byte(benchEvent)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		benchSinkDecisions = w.Process(frame, netipZero)
	}
}

// BenchmarkEmitEverySlideEvent: the worker's cost per event of a window
// that emits every slide (step tracking, key text check), 1024 keys.
func BenchmarkEmitEverySlideEvent(b *testing.B) {
	e := mustEngine(b, Config{Rules: []RuleSpec{emitRule("vel", 60*time.Second, 5*time.Second, EmitSpec{Mode: EmitEverySlide})}})
	w := e.NewWorker()
	frames := make([][]byte, 1024)
	for i := range frames {
		frames[i] = fmt.Appendf(nil, `{"user_id":"user-%06d","amount":12.5}`, i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		benchSinkDecisions = w.Process(frames[i&1023], netipZero)
		i++
	}
}

// BenchmarkEmitWalk: one every_slide walk of a window with 10000 live keys
// in a 32768-slot table, reported per key.
func BenchmarkEmitWalk(b *testing.B) {
	const keys = 10000
	clk := &ManualClock{}
	r := emitRule("vel", 60*time.Second, 5*time.Second, EmitSpec{Mode: EmitEverySlide, MaxKeys: keys})
	r.Window.MaxKeys = 1 << 15
	e := mustEngine(b, Config{Clock: clk, Rules: []RuleSpec{r}})
	w := e.NewWorker()
	m := e.NewEmitter()
	frames := make([][]byte, keys)
	for i := range frames {
		frames[i] = fmt.Appendf(nil, `{"user_id":"user-%06d","amount":12.5}`, i)
	}
	var sum float64
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		clk.Advance(5 * time.Second)
		w.Process(frames[0], netipZero) // an event since the last walk
		clk.Advance(5 * time.Second)
		for _, f := range frames {
			w.Process(f, netipZero)
		}
		clk.Advance(5 * time.Second)
		b.StartTimer()
		n = 0
		m.Emit(clk.Nanotime(), func(a *Aggregate) { sum += a.Value; n++ })
	}
	if n != keys {
		b.Fatalf("walk reported %d keys, want %d", n, keys)
	}
	benchSinkFloat = sum
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/keys, "ns/key")
}
