package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/tap"
)

// tapClient reads /tap?query into lines until ctx ends.
type tapClient struct {
	mu    sync.Mutex
	lines []tap.Line
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
			var l tap.Line
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
	if n := g.tap.Clients(); n != 4 {
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

	check := func(name string, c *tapClient, ok func(tap.Line) bool) {
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
	check("alerts", alerts, func(l tap.Line) bool {
		return l.Verdict == "alert" && (l.Rule == "big-payment" || l.Rule == "velocity")
	})
	check("passes", passes, func(l tap.Line) bool { return l.Verdict == "pass" })
	check("refunds", refunds, func(l tap.Line) bool { return l.Verdict == "drop" && l.Rule == "refunds" })
	check("slow refunds", slowRefunds, func(l tap.Line) bool { return l.Verdict == "drop" && l.Rule == "refunds" })

	// Every alert the engine decided reached the unthrottled client (the
	// ring is far larger than this traffic), the passes were sampled.
	if got, want := uint64(len(alerts.lines)), s.Engine.Verdicts[engine.ActionAlert]; got+g.tap.Dropped() < want {
		t.Errorf("alert client got %d lines, engine decided %d alerts (%d dropped)", got, want, g.tap.Dropped())
	}
	checkRate(t, "pass client", passes, passRate, elapsed)
	// The slow client saw a sample of the refunds the fast one saw in full.
	checkRate(t, "slow refunds client", slowRefunds, slowRate, elapsed)
	if len(slowRefunds.lines) >= len(refunds.lines) {
		t.Errorf("slow refunds client got %d lines, the unthrottled one %d", len(slowRefunds.lines), len(refunds.lines))
	}
	t.Logf("%s: %d alerts, %d passes (of %d), %d refunds, %d sampled refunds in %v; tap dropped %d", mode,
		len(alerts.lines), len(passes.lines), s.Engine.Verdicts[engine.ActionPass], len(refunds.lines),
		len(slowRefunds.lines), elapsed, g.tap.Dropped())

	// The clients are gone: the workers stop offering.
	deadline := time.Now().Add(2 * time.Second)
	for g.tap.Clients() != 0 || g.tap.Load() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("tap: %d clients, filter %v after the clients left", g.tap.Clients(), g.tap.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	fams := scrape(t, g)
	if v := metricValue(t, fams, "xgate_tap_dropped_total"); v != float64(g.tap.Dropped()) {
		t.Errorf("xgate_tap_dropped_total %v, want %d", v, g.tap.Dropped())
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
func bareWorker(t testing.TB, hub *tap.Hub) *worker {
	cfg := itConfig(t, "lo", "socket", filepath.Join(t.TempDir(), "p"))
	e, err := engine.New(cfg.EngineConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &worker{id: 1, ew: e.NewWorker(), fb: newFeedback(nil, 0, nil), tap: hub}
}

// subscribeT subscribes to hub without starting its dispatcher: the test
// drives delivery with drainT.
func subscribeT(t testing.TB, hub *tap.Hub, verdicts uint32, rule string, rate int) *tap.Sub {
	t.Helper()
	s, err := hub.Subscribe(verdicts, rule, rate)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// drainT delivers what the workers offered and returns how many events
// each client received.
func drainT(hub *tap.Hub, subs ...*tap.Sub) []int {
	hub.Deliver()
	got := make([]int, len(subs))
	for i, s := range subs {
		for len(s.Events()) > 0 {
			<-s.Events()
			got[i]++
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
// The hub alone is held to the same in gateway/tap (TestTapHubOfferAllocs).
func TestTapWorkerAllocs(t *testing.T) {
	payloads := itEvents(200)
	src := netip.MustParseAddr("198.18.0.1")
	const runs = 20
	allocs := func(w *worker) float64 {
		return testing.AllocsPerRun(runs, func() { decideAll(w, payloads, src, 0) })
	}
	base := allocs(bareWorker(t, nil))
	hub := tap.NewHub(monotonicNs)
	w := bareWorker(t, hub)
	if n := allocs(w); n > base {
		t.Errorf("no tap client: %v allocs per batch, %v without a tap", n, base)
	}

	// A client for a rule that never decides, one for a verdict of no rule.
	other := subscribeT(t, hub, 1<<engine.ActionBlock, "", tap.MaxRate)
	nope := subscribeT(t, hub, 1<<engine.NumActions-1, "no-such-rule", tap.MaxRate)
	if n := allocs(w); n > base {
		t.Errorf("clients wanting nothing of the batch: %v allocs per batch, %v without a tap", n, base)
	}
	if got := drainT(hub, other, nope); got[0]+got[1] != 0 {
		t.Fatalf("clients wanting nothing got %d and %d events", got[0], got[1])
	}

	// A client of one rule: the first runs allocate copy buffers, which
	// the dispatcher hands back; the same runs again allocate nothing.
	refunds := subscribeT(t, hub, 1<<engine.NumActions-1, "refunds", tap.MaxRate)
	warm := allocs(w)
	offered := drainT(hub, refunds)[0]
	if offered == 0 || offered%(runs+1) != 0 || hub.Dropped() != 0 {
		t.Fatalf("refunds client: %d events over %d batches, %d dropped", offered, runs+1, hub.Dropped())
	}
	recycled := allocs(w)
	if recycled > base {
		t.Errorf("client offered %d events per batch: %v allocs per batch (%v before the buffers circulated), %v without a tap",
			offered/(runs+1), recycled, warm, base)
	}
	t.Logf("allocs per batch of %d: %v without tap; with a refunds client (%d events per batch) %v, then %v",
		len(payloads), base, offered/(runs+1), warm, recycled)
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
			hub := tap.NewHub(monotonicNs)
			w := bareWorker(b, hub)
			if c.rule != "" {
				s := subscribeT(b, hub, 1<<engine.NumActions-1, c.rule, tap.MaxRate)
				defer hub.Unsubscribe(s)
				hub.Run()
				done := make(chan struct{})
				defer close(done)
				go func() {
					for {
						select {
						case <-s.Events():
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
