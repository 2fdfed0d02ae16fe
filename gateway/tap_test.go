package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/engine"
)

// tapClient reads /tap?query into lines until ctx ends.
type tapClient struct {
	mu    sync.Mutex
	lines []TapLine
	times []time.Time
	err   error
	done  chan struct{}
}

func startTap(t *testing.T, ctx context.Context, g *Gateway, query string) *tapClient {
	t.Helper()
	c := &tapClient{done: make(chan struct{})}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+g.HTTPAddr()+"/tap?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok := g.httpToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/tap?%s: %s", query, resp.Status)
	}
	go func() {
		defer close(c.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var l TapLine
			err := json.Unmarshal(sc.Bytes(), &l)
			c.mu.Lock()
			if err != nil && c.err == nil {
				c.err = err
			}
			c.lines = append(c.lines, l)
			c.times = append(c.times, time.Now())
			c.mu.Unlock()
		}
	}()
	return c
}

func TestTap(t *testing.T) {
	for _, mode := range []string{"afxdp", "socket"} {
		t.Run(mode, func(t *testing.T) { runTap(t, mode) })
	}
}

func runTap(t *testing.T, mode string) {
	pair, g, stop := runIT(t, 2, mode, func(c *config.Config) { c.HTTP.Token = "tap-test-token-0123456789" })
	if code, _ := httpGet(t, g, "/tap?verdict=nope"); code != http.StatusBadRequest {
		t.Errorf("/tap?verdict=nope: %d, want 400", code)
	}
	if code, _ := httpGet(t, g, "/tap?rate=0"); code != http.StatusBadRequest {
		t.Errorf("/tap?rate=0: %d, want 400", code)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const passRate = 20
	alerts := startTap(t, ctx, g, "verdict=alert&rate=10000")
	passes := startTap(t, ctx, g, "verdict=pass&rate=20")
	refunds := startTap(t, ctx, g, "rule=refunds&rate=10000")
	const slowRate = 5
	slowRefunds := startTap(t, ctx, g, "rule=refunds&verdict=drop&rate=5")
	if n := g.tap.clients(); n != 4 {
		t.Fatalf("%d tap clients, want 4", n)
	}
	began := time.Now()

	tr := &itTraffic{payloads: itEvents(400)}
	sent := map[string]bool{}
	for _, p := range tr.payloads {
		sent[string(p)] = true
	}
	sendMix(t, pair.A, pair.B, tr, func() {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			if s, _ := g.Stats(); s.Feedback.Applied > 0 {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("block verdict not applied within 3s")
	})
	s := quiesce(t, g, tr.sent)
	time.Sleep(100 * time.Millisecond) // the dispatcher's last rounds
	cancel()
	for _, c := range []*tapClient{alerts, passes, refunds, slowRefunds} {
		<-c.done
		if c.err != nil {
			t.Fatalf("tap line: %v", c.err)
		}
	}
	elapsed := time.Since(began)

	check := func(name string, c *tapClient, ok func(TapLine) bool) {
		t.Helper()
		if len(c.lines) == 0 {
			t.Errorf("%s: no lines", name)
		}
		for _, l := range c.lines {
			if !ok(l) {
				t.Fatalf("%s: unexpected line %+v", name, l)
			}
			if !sent[string(l.Event)] && string(l.Event) != string(floodEvent) && string(l.Event) != `{"user_id":"b1","event_type":"bot"}` {
				t.Fatalf("%s: event %s was never sent", name, l.Event)
			}
			if (l.LatencyUs != nil) != (mode == "afxdp") {
				t.Fatalf("%s: latency_us %v on the %s path", name, l.LatencyUs, mode)
			}
			if l.Queue < 0 || l.Queue >= len(g.workers) {
				t.Fatalf("%s: queue %d", name, l.Queue)
			}
		}
	}
	check("alerts", alerts, func(l TapLine) bool {
		return l.Verdict == "alert" && (l.Rule == "big-payment" || l.Rule == "velocity")
	})
	check("passes", passes, func(l TapLine) bool { return l.Verdict == "pass" })
	check("refunds", refunds, func(l TapLine) bool { return l.Verdict == "drop" && l.Rule == "refunds" })
	check("slow refunds", slowRefunds, func(l TapLine) bool { return l.Verdict == "drop" && l.Rule == "refunds" })

	// Every alert the engine decided reached the unthrottled client (the
	// ring is far larger than this traffic), the passes were sampled.
	if got, want := uint64(len(alerts.lines)), s.Engine.Verdicts[engine.ActionAlert]; got+g.tap.dropped.Load() < want {
		t.Errorf("alert client got %d lines, engine decided %d alerts (%d dropped)", got, want, g.tap.dropped.Load())
	}
	checkRate(t, "pass client", passes, passRate, elapsed)
	// The slow client saw a sample of the refunds the fast one saw in full.
	checkRate(t, "slow refunds client", slowRefunds, slowRate, elapsed)
	if len(slowRefunds.lines) >= len(refunds.lines) {
		t.Errorf("slow refunds client got %d lines, the unthrottled one %d", len(slowRefunds.lines), len(refunds.lines))
	}
	t.Logf("%s: %d alerts, %d passes (of %d), %d refunds, %d sampled refunds in %v; tap dropped %d", mode,
		len(alerts.lines), len(passes.lines), s.Engine.Verdicts[engine.ActionPass], len(refunds.lines),
		len(slowRefunds.lines), elapsed, g.tap.dropped.Load())

	// The clients are gone: the workers stop offering.
	deadline := time.Now().Add(2 * time.Second)
	for g.tap.clients() != 0 || g.tap.filter.Load() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("tap: %d clients, filter %v after the clients left", g.tap.clients(), g.tap.filter.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	fams := scrape(t, g)
	if v := metricValue(t, fams, "xgate_tap_dropped_total"); v != float64(g.tap.dropped.Load()) {
		t.Errorf("xgate_tap_dropped_total %v, want %d", v, g.tap.dropped.Load())
	}

	// A stream in progress ends when the gateway stops.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	open := startTap(t, ctx2, g, "")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-open.done:
	case <-time.After(3 * time.Second):
		t.Fatal("tap stream still open after Stop")
	}
}

// checkRate: c got at most rate lines per second over elapsed, and no
// one-second window held more than rate (by arrival time, with slack for
// delivery jitter).
func checkRate(t *testing.T, name string, c *tapClient, rate int, elapsed time.Duration) {
	t.Helper()
	if max := rate * (int(elapsed/time.Second) + 1); len(c.lines) > max {
		t.Errorf("%s got %d lines in %v at rate %d", name, len(c.lines), elapsed, rate)
	}
	for i := range c.times {
		n := 0
		for j := i; j < len(c.times) && c.times[j].Sub(c.times[i]) < 900*time.Millisecond; j++ {
			n++
		}
		if n > rate {
			t.Fatalf("%s: %d lines within 0.9s at rate %d", name, n, rate)
		}
	}
}

// bareWorker is a worker with the integration rules and no sockets.
func bareWorker(t testing.TB, tap *tapHub) *worker {
	cfg := itConfig(t, "lo", "socket", filepath.Join(t.TempDir(), "p"))
	e, err := engine.New(cfg.EngineConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &worker{id: 1, ew: e.NewWorker(), fb: newFeedback(nil, 0, nil), tap: tap}
}

// subscribeT subscribes to hub without starting its dispatcher: the test
// drives delivery with drainT.
func subscribeT(t testing.TB, hub *tapHub, verdicts uint32, rule string, rate int) *tapSub {
	t.Helper()
	s, err := hub.subscribe(verdicts, rule, rate)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// drainT delivers what the workers offered and returns, per client, the
// events it received.
func drainT(hub *tapHub, subs ...*tapSub) [][]tapEvent {
	hub.mu.Lock()
	hub.deliver(make([]tapEvent, 256))
	hub.mu.Unlock()
	got := make([][]tapEvent, len(subs))
	for i, s := range subs {
		for len(s.ch) > 0 {
			got[i] = append(got[i], <-s.ch)
		}
	}
	return got
}

// decideAll runs payloads through w as one batch.
func decideAll(w *worker, payloads [][]byte, src netip.Addr, rxNs uint64) {
	w.loadTap()
	for _, p := range payloads {
		w.decide(p, netip.AddrPortFrom(src, 0), rxNs)
	}
}

// With no tap client, or with clients that want nothing of the batch, the
// worker path allocates nothing more than without a tap; with a client
// that is offered events, it allocates nothing once the copy buffers
// circulate (the dispatcher's per-client copies are off the hot path).
func TestTapWorkerAllocs(t *testing.T) {
	payloads := itEvents(200)
	src := netip.MustParseAddr("198.18.0.1")
	const runs = 20
	allocs := func(w *worker) float64 {
		return testing.AllocsPerRun(runs, func() { decideAll(w, payloads, src, 0) })
	}
	base := allocs(bareWorker(t, nil))
	hub := newTapHub()
	w := bareWorker(t, hub)
	if n := allocs(w); n > base {
		t.Errorf("no tap client: %v allocs per batch, %v without a tap", n, base)
	}

	// A client for a rule that never decides, one for a verdict of no rule.
	other := subscribeT(t, hub, 1<<engine.ActionBlock, "", tapMaxRate)
	nope := subscribeT(t, hub, 1<<engine.NumActions-1, "no-such-rule", tapMaxRate)
	if n := allocs(w); n > base {
		t.Errorf("clients wanting nothing of the batch: %v allocs per batch, %v without a tap", n, base)
	}
	if got := drainT(hub, other, nope); len(got[0])+len(got[1]) != 0 || len(hub.free) != 0 {
		t.Fatalf("clients wanting nothing got %d and %d events, %d buffers", len(got[0]), len(got[1]), len(hub.free))
	}

	// A client of one rule: the first runs allocate copy buffers, which
	// the dispatcher hands back; the same runs again allocate nothing.
	refunds := subscribeT(t, hub, 1<<engine.NumActions-1, "refunds", tapMaxRate)
	warm := allocs(w)
	got := drainT(hub, refunds)
	offered := len(got[0])
	if offered == 0 || offered%(runs+1) != 0 || len(hub.free) != offered {
		t.Fatalf("refunds client: %d events over %d batches, %d buffers recycled", offered, runs+1, len(hub.free))
	}
	recycled := allocs(w)
	if recycled > base {
		t.Errorf("client offered %d events per batch: %v allocs per batch (%v before the buffers circulated), %v without a tap",
			offered/(runs+1), recycled, warm, base)
	}
	t.Logf("allocs per batch of %d: %v without tap; with a refunds client (%d events per batch) %v, then %v",
		len(payloads), base, offered/(runs+1), warm, recycled)
}

// The workers filter by rule and verdict and sample at each client's rate
// before anything is copied: a client gets only its rule's events, at most
// its bucket's worth, refilled at its rate; the others are unaffected.
// (Both rules are stateless, so every batch decides the same.)
func TestTapSampling(t *testing.T) {
	payloads := itEvents(200)
	src := netip.MustParseAddr("198.18.0.1")

	// What the rules decide for these payloads, from a worker of its own.
	ref := bareWorker(t, nil)
	var refunds, alerts int
	for _, p := range payloads {
		for _, d := range ref.ew.Process(p, src) {
			switch {
			case d.Err != engine.DecodeOK:
			case d.Rule == "refunds":
				refunds++
			case d.Rule == "big-payment":
				alerts++
			}
		}
	}
	const rate = 5
	if refunds <= 2*rate || alerts == 0 {
		t.Fatalf("payloads decide %d refunds, %d alerts: too few for this test", refunds, alerts)
	}

	hub := newTapHub()
	w := bareWorker(t, hub)
	slow := subscribeT(t, hub, 1<<engine.NumActions-1, "refunds", rate)
	fast := subscribeT(t, hub, 1<<engine.ActionAlert, "big-payment", tapMaxRate)
	rxNs := monotonicNs() - 5000 // 5µs ago
	decideAll(w, payloads, src, rxNs)
	if n := hub.ring.Len(); n != rate+alerts {
		t.Errorf("workers offered %d events, want %d refunds (the bucket) + %d alerts", n, rate, alerts)
	}
	got := drainT(hub, slow, fast)
	if len(got[0]) != rate || len(got[1]) != alerts {
		t.Fatalf("got %d refunds (want %d), %d alerts (want %d)", len(got[0]), rate, len(got[1]), alerts)
	}
	for _, ev := range got[0] {
		if ev.rule != "refunds" || ev.action != engine.ActionDrop || ev.queue != 1 || ev.latencyUs < 5 ||
			!bytes.Contains(ev.raw, []byte(`"event_type":"refund"`)) {
			t.Fatalf("refunds client: event %+v (%s)", ev, ev.raw)
		}
	}
	for _, ev := range got[1] {
		if ev.action != engine.ActionAlert || ev.rule != "big-payment" {
			t.Fatalf("alerts client: event %+v (%s)", ev, ev.raw)
		}
	}

	// The bucket is empty: the next batch offers the slow client nothing.
	decideAll(w, payloads, src, 0)
	if got := drainT(hub, slow, fast); len(got[0]) != 0 || len(got[1]) != alerts {
		t.Errorf("empty bucket: got %d refunds, %d alerts (want 0, %d)", len(got[0]), len(got[1]), alerts)
	}
	// 100ms at 5/s is half a token, 200ms one, a second the whole bucket.
	for _, c := range []struct {
		dt   time.Duration
		want int
	}{{100 * time.Millisecond, 0}, {100 * time.Millisecond, 1}, {10 * time.Second, rate}} {
		hub.mu.Lock()
		hub.refill(c.dt)
		hub.mu.Unlock()
		decideAll(w, payloads, src, 0)
		if got := drainT(hub, slow, fast); len(got[0]) != c.want {
			t.Errorf("after a refill of %v: %d refunds, want %d", c.dt, len(got[0]), c.want)
		}
	}

	// A client that leaves between a batch and its delivery gets nothing
	// more; its copies are recycled.
	hub.mu.Lock()
	hub.refill(time.Second)
	hub.mu.Unlock()
	decideAll(w, payloads, src, 0)
	hub.unsubscribe(slow)
	free := len(hub.free)
	if got := drainT(hub, slow, fast); len(got[0]) != 0 || len(got[1]) != alerts || len(hub.free) != free+rate+alerts {
		t.Errorf("after leaving: %d refunds, %d alerts, %d buffers recycled (want 0, %d, %d)",
			len(got[0]), len(got[1]), len(hub.free)-free, alerts, rate+alerts)
	}
	hub.unsubscribe(fast)
	if hub.filter.Load() != nil {
		t.Error("no clients, yet a filter")
	}

	// At most tapMaxClients.
	for i := 0; i < tapMaxClients; i++ {
		subscribeT(t, hub, 1, "", 1)
	}
	if _, err := hub.subscribe(1, "", 1); err == nil {
		t.Errorf("client %d accepted", tapMaxClients+1)
	}
}

// The worker's decide loop with the tap: no client; a client that wants
// nothing of the traffic (its rule never decides); a client of one rule,
// sampled at the maximum rate, with the dispatcher running and the
// client's channel drained (its copies are counted too: they are the
// dispatcher's, bounded by the rate).
func BenchmarkWorkerDecideTap(b *testing.B) {
	payloads := itEvents(64)
	src := netip.MustParseAddr("198.18.0.1")
	for _, c := range []struct{ name, rule string }{{"idle", ""}, {"other-rule", "no-such-rule"}, {"refunds", "refunds"}} {
		b.Run(c.name, func(b *testing.B) {
			hub := newTapHub()
			w := bareWorker(b, hub)
			if c.rule != "" {
				s := subscribeT(b, hub, 1<<engine.NumActions-1, c.rule, tapMaxRate)
				defer hub.unsubscribe(s)
				hub.run()
				done := make(chan struct{})
				defer close(done)
				go func() {
					for {
						select {
						case <-s.ch:
						case <-done:
							return
						}
					}
				}()
			}
			b.ReportAllocs()
			for b.Loop() {
				decideAll(w, payloads, src, 0)
			}
		})
	}
}
