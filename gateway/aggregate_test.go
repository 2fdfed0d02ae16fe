//go:build linux

package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/sink/sinktest"
	"github.com/xgate/xgate/testenv"
)

// aggRecord is an aggregate record as a broker delivered it.
type aggRecord struct {
	Type        string  `json:"type"`
	Rule        string  `json:"rule"`
	Key         string  `json:"key"`
	Agg         string  `json:"agg"`
	Value       float64 `json:"value"`
	WindowStart string  `json:"window_start"`
	WindowEnd   string  `json:"window_end"`
	GatewayID   string  `json:"gateway_id"`
	// From the transport: the Kafka record key / NATS subject, and the
	// verdict and rule headers.
	tkey, verdict, hrule string
}

// TestAggregatesToBrokers runs a gateway (plain sockets on a test host)
// with an every_slide window and an on_alert window whose aggregates go
// to a NATS JetStream stream and a Kafka topic (kfake), sends events of
// several keys over several slides, and checks what both brokers hold
// against a reference computed from the same events: for every slide in
// which events arrived, one record per key with the sum over exactly the
// window that slide completed; one on_alert record per firing event with
// the count it fired on; the keys, subjects and headers of the contract.
//
// Events are sent just after a slide boundary of the engine's clock (the
// gateway's, in this process) and the test checks that the gateway
// decided them all before that slide ended: each event's slide is known.
func TestAggregatesToBrokers(t *testing.T) {
	if testing.Short() {
		t.Skip("sends over several one-second slides")
	}
	srv := sinktest.StartNATS(t)
	kport := sinktest.FreePort(t)
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(kport), kfake.SeedTopics(1, "aggs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	brokers := []string{fmt.Sprintf("127.0.0.1:%d", kport)}

	const slide = time.Second
	const n = 3 // window size 3s
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	yml := fmt.Sprintf(`
mode: plain
listen: {ports: [%d]}
gateway_id: gw-agg
rules:
  - name: velocity
    window: {key: user_id, size: 3s, slide: 1s, agg: sum(amount), max_keys: 1024, emit: every_slide}
    when: value > 1e15
    action: alert
  - name: burst
    window: {key: user_id, size: 1h, slide: 1m, agg: count, max_keys: 1024, emit: on_alert}
    when: value >= 3
    action: alert
sinks:
  - {name: agg-kafka, type: kafka, what: aggregates, brokers: [%q], topic: aggs, linger: 1ms}
  - {name: agg-nats, type: nats, what: aggregates, urls: [%q], subject: "xgate.aggs.{rule}.{key}", stream: AGGS, create_stream: true}
`, itPort, brokers[0], srv.URL())
	cfg, err := config.Parse("agg.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pin.Path = ""
	g, stop := startGateway(t, pair.B, cfg)
	waitReady(t, g)

	type ev struct {
		key  string
		amt  float64
		wall int64 // the engine's step start of the slide it was decided in, as Unix ns
	}
	var sent []ev
	clk := engine.SystemClock{}
	rng := rand.New(rand.NewPCG(7, 18))
	keys := []string{"u1", "u2", "u3", "user.with.dots", "u 5"}
	dst := netip.AddrPortFrom(pair.B.Addr, itPort)
	decided := func() uint64 {
		s, err := g.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return s.Engine.Events
	}
	rounds := []int{6, 4, 0, 0, 5, 7} // events per slide; two quiet slides
	for _, cnt := range rounds {
		// Start just after the next boundary.
		now := clk.Nanotime()
		next := (now/int64(slide) + 1) * int64(slide)
		time.Sleep(time.Duration(next-now) + 50*time.Millisecond)
		step := clk.Nanotime() / int64(slide)
		before := decided()
		for range cnt {
			e := ev{key: keys[rng.IntN(len(keys))], amt: float64(1 + rng.IntN(1000)), wall: engine.WallNs(clk, step*int64(slide))}
			p, _ := json.Marshal(map[string]any{"user_id": e.key, "amount": e.amt, "event_type": "payment"})
			if _, err := pair.A.SendUDP(dst, p, 1); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, e)
		}
		for decided() < before+uint64(cnt) {
			time.Sleep(5 * time.Millisecond)
		}
		if s := clk.Nanotime() / int64(slide); s != step {
			t.Fatalf("the gateway decided a round's events after its slide ended (step %d, now %d): the machine is too loaded for this test", step, s)
		}
	}
	// Let the last slide complete and be reported, then stop (which
	// flushes the sinks and waits for the brokers' acks).
	now := clk.Nanotime()
	time.Sleep(time.Duration((now/int64(slide)+1)*int64(slide)-now) + 200*time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	st, _ := g.Stats()
	for _, sk := range st.Sinks {
		if sk.Dropped+sk.Failed+sk.TooBig != 0 {
			t.Fatalf("sink %s lost records: %+v", sk.Name, sk)
		}
	}

	// The reference: velocity, for each slide with events, each key's sum
	// over the window that slide completed; burst: below.
	want := map[string]float64{}
	var eventSlides []int64
	for _, e := range sent {
		if !slices.Contains(eventSlides, e.wall) {
			eventSlides = append(eventSlides, e.wall)
		}
	}
	for _, end := range eventSlides { // end: the start of the slide; the window ends a slide later
		wEnd := end + int64(slide)
		wStart := wEnd - n*int64(slide)
		for _, e := range sent {
			if e.wall >= wStart && e.wall < wEnd {
				want[fmt.Sprintf("velocity|%s|%s|%s", e.key, fmtNs(wStart), fmtNs(wEnd))] += e.amt
			}
		}
	}
	// burst: one on_alert record per event from a key's third on. Two
	// workers may add a key's events at once, and each then reads the
	// count with both in it (a window's read is not ordered against
	// another worker's add), so the reference is per key: how many
	// records, each count between 3 and the key's total, the last the total.
	total := map[string]float64{}
	for _, e := range sent {
		total[e.key]++
	}
	burstWant := map[string]int{}
	for k, n := range total {
		if n >= 3 {
			burstWant[k] = int(n) - 2
		}
	}
	nBurst := 0
	for _, n := range burstWant {
		nBurst += n
	}
	var emitted uint64
	for _, r := range st.Engine.Rules {
		if r.Emit != nil {
			emitted += r.Emit.Emitted
		}
	}
	if emitted != uint64(len(want)+nBurst) {
		t.Errorf("engine emitted %d aggregates, the reference has %d", emitted, len(want)+nBurst)
	}

	check := func(name string, recs []aggRecord) {
		t.Helper()
		got := map[string]float64{}
		burstGot := map[string][]float64{}
		for _, r := range recs {
			if r.Type != "aggregate" || r.GatewayID != "gw-agg" || r.verdict != "aggregate" || r.hrule != r.Rule || r.tkey != r.Key {
				t.Errorf("%s: record %+v", name, r)
			}
			var id string
			switch r.Rule {
			case "velocity":
				id = fmt.Sprintf("velocity|%s|%s|%s", r.Key, r.WindowStart, r.WindowEnd)
				if r.Agg != "sum(amount)" {
					t.Errorf("%s: agg %q", name, r.Agg)
				}
			case "burst":
				burstGot[r.Key] = append(burstGot[r.Key], r.Value)
				continue
			}
			if _, dup := got[id]; dup {
				t.Errorf("%s: %s twice", name, id)
			}
			got[id] = r.Value
		}
		for id, v := range want {
			if g, ok := got[id]; !ok || g != v {
				t.Errorf("%s: %s = %v (present %v), want %v", name, id, g, ok, v)
			}
		}
		for id, v := range got {
			if _, ok := want[id]; !ok {
				t.Errorf("%s: unexpected %s = %v", name, id, v)
			}
		}
		for k, n := range burstWant {
			vs := burstGot[k]
			if len(vs) != n || slices.Max(vs) != total[k] || slices.Min(vs) < 3 {
				t.Errorf("%s: burst %s: counts %v, want %d records from 3 up to %v", name, k, vs, n, total[k])
			}
		}
		for k := range burstGot {
			if _, ok := burstWant[k]; !ok {
				t.Errorf("%s: burst records for %s, which sent fewer than 3 events", name, k)
			}
		}
		t.Logf("%s: %d aggregate records, as the reference", name, len(recs))
	}
	check("nats", natsAggregates(t, srv.URL(), len(want)+nBurst))
	check("kafka", kafkaAggregates(t, brokers, len(want)+nBurst))
}

func fmtNs(ns int64) string {
	return time.Unix(0, ns).UTC().Format("2006-01-02T15:04:05.000000000Z")
}

// natsAggregates reads the stream AGGS once it holds want messages (or
// 10 s passed); the subject's last token is the key as the subject
// template writes it ('.' and ' ' become '_').
func natsAggregates(t *testing.T, url string, want int) []aggRecord {
	t.Helper()
	var msgs []jetstream.Msg
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if msgs = sinktest.StreamMessages(t, url, "AGGS"); len(msgs) >= want || time.Now().After(deadline) {
			break
		}
	}
	var out []aggRecord
	for _, m := range msgs {
		var r aggRecord
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			t.Fatalf("nats message %q: %v", m.Data(), err)
		}
		h := m.Headers()
		r.verdict, r.hrule = h.Get("verdict"), h.Get("rule")
		parts := strings.SplitN(m.Subject(), ".", 4)
		if len(parts) != 4 || parts[0] != "xgate" || parts[1] != "aggs" || parts[2] != r.Rule {
			t.Fatalf("subject %q", m.Subject())
		}
		r.tkey = parts[3]
		if tok := strings.NewReplacer(".", "_", " ", "_").Replace(r.Key); tok == r.tkey {
			r.tkey = r.Key // the template's replacement of the key
		}
		out = append(out, r)
	}
	return out
}

// kafkaAggregates reads the topic aggs.
func kafkaAggregates(t *testing.T, brokers []string, want int) []aggRecord {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("aggs"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []aggRecord
	for deadline, idle := time.Now().Add(10*time.Second), 0; time.Now().Before(deadline) && (len(out) < want || idle < 3); {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		recs := fs.Records()
		if len(recs) == 0 {
			idle++
		}
		for _, kr := range recs {
			var r aggRecord
			if err := json.Unmarshal(kr.Value, &r); err != nil {
				t.Fatalf("kafka record %q: %v", kr.Value, err)
			}
			r.tkey = string(kr.Key)
			for _, h := range kr.Headers {
				switch h.Key {
				case "verdict":
					r.verdict = string(h.Value)
				case "rule":
					r.hrule = string(h.Value)
				}
			}
			out = append(out, r)
		}
	}
	return out
}
