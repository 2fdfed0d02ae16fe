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
	pair, g, stop := runIT(t, 2, mode, nil)
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
	if n := g.tap.clients(); n != 3 {
		t.Fatalf("%d tap clients, want 3", n)
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
	for _, c := range []*tapClient{alerts, passes, refunds} {
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

	// Every alert the engine decided reached the unthrottled client (the
	// ring is far larger than this traffic), the passes were sampled.
	if got, want := uint64(len(alerts.lines)), s.Engine.Verdicts[engine.ActionAlert]; got+g.tap.dropped.Load() < want {
		t.Errorf("alert client got %d lines, engine decided %d alerts (%d dropped)", got, want, g.tap.dropped.Load())
	}
	if max := passRate * (int(elapsed/time.Second) + 1); len(passes.lines) > max {
		t.Errorf("pass client got %d lines in %v at rate %d", len(passes.lines), elapsed, passRate)
	}
	// No one-second window holds more than the rate (by arrival time, with
	// slack for delivery jitter).
	for i := range passes.times {
		n := 0
		for j := i; j < len(passes.times) && passes.times[j].Sub(passes.times[i]) < 900*time.Millisecond; j++ {
			n++
		}
		if n > passRate {
			t.Fatalf("pass client: %d lines within 0.9s at rate %d", n, passRate)
		}
	}
	t.Logf("%s: %d alerts, %d passes (of %d), %d refunds in %v; tap dropped %d", mode, len(alerts.lines),
		len(passes.lines), s.Engine.Verdicts[engine.ActionPass], len(refunds.lines), elapsed, g.tap.dropped.Load())

	// The clients are gone: the workers stop offering.
	deadline := time.Now().Add(2 * time.Second)
	for g.tap.clients() != 0 || g.tap.mask.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("tap: %d clients, mask %#x after the clients left", g.tap.clients(), g.tap.mask.Load())
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

// bareWorker is a worker with the integration rules and no sockets.
func bareWorker(t testing.TB, tap *tapHub) *worker {
	cfg := itConfig(t, "lo", "socket", filepath.Join(t.TempDir(), "p"))
	e, err := engine.New(cfg.EngineConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &worker{id: 1, ew: e.NewWorker(), fb: newFeedback(nil, 0), tap: tap}
}

// With no tap client the worker path allocates nothing more than without
// a tap; with one, the matching events reach its channel.
func TestTapWorkerPath(t *testing.T) {
	payloads := itEvents(200)
	src := netip.MustParseAddr("198.18.0.1")
	run := func(w *worker) float64 {
		return testing.AllocsPerRun(20, func() {
			w.loadTap()
			for _, p := range payloads {
				w.decide(p, src, 0)
			}
		})
	}
	base := run(bareWorker(t, nil))
	hub := newTapHub()
	with := run(bareWorker(t, hub))
	if with > base {
		t.Errorf("no tap client: %v allocs per batch, %v without a tap", with, base)
	}
	t.Logf("allocs per batch of %d: %v without tap, %v with an idle tap", len(payloads), base, with)

	w := bareWorker(t, hub)
	sub := hub.subscribe(1<<engine.ActionAlert, "big-payment")
	defer hub.unsubscribe(sub)
	w.loadTap()
	w.decide([]byte(`{"user_id":"u1","event_type":"payment","amount":20000}`), src, 0)
	w.decide([]byte(`{"user_id":"u2","event_type":"click","amount":20000}`), src, 0)
	select {
	case ev := <-sub.ch:
		if ev.action != engine.ActionAlert || ev.rule != "big-payment" || ev.queue != 1 || ev.latencyUs != -1 ||
			string(ev.raw) != `{"user_id":"u1","event_type":"payment","amount":20000}` {
			t.Fatalf("tap event %+v", ev)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no tap event")
	}
	select {
	case ev := <-sub.ch:
		t.Fatalf("unexpected tap event %+v", ev)
	case <-time.After(50 * time.Millisecond):
	}
}

func BenchmarkWorkerDecideIdleTap(b *testing.B) {
	payloads := itEvents(64)
	src := netip.MustParseAddr("198.18.0.1")
	w := bareWorker(b, newTapHub())
	b.ReportAllocs()
	for b.Loop() {
		w.loadTap()
		for _, p := range payloads {
			w.decide(p, src, 0)
		}
	}
}
