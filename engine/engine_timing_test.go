package engine

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// benchEvent is the default event of DESIGN.md (144 bytes).
const benchEvent = `{"event_id":"e-000123","user_id":"u-48213","amount":1234.56,"currency":"USD","event_type":"payment","ts":1732550400123,"ip":"203.0.113.7"}`

var (
	benchSinkDecisions []Decision
	benchSinkFloat     float64
	benchSinkString    string
)

// fourFieldSchema reads the four fields BenchmarkDecode is about.
var fourFieldSchema = Schema{Key: "user_id", Amount: "amount", Type: "event_type", TS: "ts", Required: []Role{RoleKey}}

// BenchmarkDecode: one datagram with the default event, four fields
// extracted and type-checked, full validation of the rest.
func BenchmarkDecode(b *testing.B) {
	e := mustEngine(b, Config{Schema: &fourFieldSchema})
	w := e.NewWorker()
	frame := []byte(benchEvent)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		benchSinkDecisions = w.Process(frame, netip.Addr{})
	}
	if ds := w.Process(frame, netip.Addr{}); len(ds) != 1 || ds[0].Err != DecodeOK {
		b.Fatalf("decode failed: %v", errsOf(ds))
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mevents/s")
}

// BenchmarkDecodeParallel runs BenchmarkDecode on every P (-cpu 1,2).
func BenchmarkDecodeParallel(b *testing.B) {
	e := mustEngine(b, Config{Schema: &fourFieldSchema})
	frame := []byte(benchEvent)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := e.NewWorker()
		var ds []Decision
		for pb.Next() {
			ds = w.Process(frame, netip.Addr{})
		}
		w.Flush()
		_ = ds
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mevents/s")
}

type stdEvent struct {
	UserID    string  `json:"user_id"`
	Amount    float64 `json:"amount"`
	EventType string  `json:"event_type"`
	TS        int64   `json:"ts"`
}

// BenchmarkDecodeStdlib is the reference: encoding/json into a 4-field struct.
func BenchmarkDecodeStdlib(b *testing.B) {
	frame := []byte(benchEvent)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	var ev stdEvent
	for b.Loop() {
		ev = stdEvent{}
		if err := json.Unmarshal(frame, &ev); err != nil {
			b.Fatal(err)
		}
	}
	benchSinkString = ev.UserID
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mevents/s")
}

// BenchmarkDecodeGJSONForEach is gjson's own one-pass walk picking the same
// four keys from a zero-copy view, for comparison.
func BenchmarkDecodeGJSONForEach(b *testing.B) {
	frame := []byte(benchEvent)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		var user, typ string
		var amount, ts float64
		gjson.Parse(bytesView(frame)).ForEach(func(k, v gjson.Result) bool {
			switch k.Str {
			case "user_id":
				user = v.Str
			case "amount":
				amount = v.Num
			case "event_type":
				typ = v.Str
			case "ts":
				ts = v.Num
			}
			return true
		})
		benchSinkString, benchSinkFloat = user+typ[:0], amount+ts
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mevents/s")
}

// pipelineRules: four when rules, one per-user rate limit, one 60s/5s sum
// window — the BenchmarkPipeline configuration of the foundation issue.
func pipelineRules() []RuleSpec {
	return []RuleSpec{
		{Name: "big-payment", When: `event_type == "payment" && amount > 10000`, Action: "alert"},
		{Name: "bad-currency", When: `!(currency in ["USD","EUR","GBP","JPY"])`, Action: "drop"},
		{Name: "test-users", When: `user_id startsWith "test-"`, Action: "drop"},
		{Name: "refund-storm", When: `event_type == "refund" && amount >= 5000 || ip contains "198.51.100."`, Action: "alert"},
		{Name: "per-user-rate", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "100/s", Burst: 200}, Action: "drop"},
		{Name: "velocity", Window: &WindowSpec{Key: "user_id", Size: 60 * time.Second, Slide: 5 * time.Second, Agg: "sum(amount)"},
			When: "value > 50000", Action: "alert"},
	}
}

// zipfFrames builds n datagrams for users drawn from a Zipf law (s=1.1)
// over `users` ids, so a few users are hot and most are cold.
func zipfFrames(n, users int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	z := rand.NewZipf(r, 1.1, 1, uint64(users-1))
	types := []string{"payment", "payment", "payment", "login", "click", "refund"}
	curr := []string{"USD", "EUR", "GBP", "USD", "CHF"}
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = fmt.Appendf(nil, `{"event_id":"e-%06d","user_id":"u-%d","amount":%d.%02d,"currency":"%s","event_type":"%s","ts":%d,"ip":"203.0.113.%d"}`,
			i, z.Uint64(), r.IntN(20000), r.IntN(100), curr[r.IntN(len(curr))], types[r.IntN(len(types))],
			1732550400123+int64(i), r.IntN(256))
	}
	return frames
}

// BenchmarkPipeline: decode + 4 when rules + per-user rate limit + 60s/5s
// sum window over 100k users with a Zipf mix. The clock advances 1 µs per
// event, so windows slide and buckets refill during the run.
func BenchmarkPipeline(b *testing.B) {
	clk := &ManualClock{}
	e := mustEngine(b, Config{Rules: pipelineRules(), Clock: clk})
	w := e.NewWorker()
	frames := zipfFrames(1<<16, 100_000, 1)
	var bytes int
	for _, f := range frames {
		bytes += len(f)
	}
	// Warm the tables so the run measures steady state, not first inserts.
	for _, f := range frames {
		w.Process(f, netip.Addr{})
	}
	b.ReportAllocs()
	b.SetBytes(int64(bytes / len(frames)))
	i := 0
	for b.Loop() {
		clk.Advance(time.Microsecond)
		benchSinkDecisions = w.Process(frames[i&(len(frames)-1)], netip.Addr{})
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mevents/s")
}

// BenchmarkPipelineParallel shares one engine (limiters and windows) among
// one worker per P, as the gateway does with one worker per queue.
func BenchmarkPipelineParallel(b *testing.B) {
	e := mustEngine(b, Config{Rules: pipelineRules()})
	frames := zipfFrames(1<<16, 100_000, 1)
	w := e.NewWorker()
	for _, f := range frames {
		w.Process(f, netip.Addr{})
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(frames[0])))
	b.ResetTimer()
	seed := uint64(0)
	b.RunParallel(func(pb *testing.PB) {
		w := e.NewWorker()
		seed += 7919 // racy on purpose-free: only spreads start offsets
		i := int(seed)
		for pb.Next() {
			w.Process(frames[i&(len(frames)-1)], netip.Addr{})
			i++
		}
		w.Flush()
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mevents/s")
}
