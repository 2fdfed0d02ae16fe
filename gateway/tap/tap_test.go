package tap

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/xgate/xgate/engine"
)

// testNow is the fake CLOCK_MONOTONIC of the tests' hubs.
const testNow = uint64(1_000_000_000)

func testHub() *Hub { return NewHub(func() uint64 { return testNow }) }

// decisions returns one batch as the engine decides it: passes by no rule,
// refunds dropped by rule "refunds", big payments alerted by rule
// "big-payment", interleaved.
func decisions(passes, refunds, alerts int) []engine.Decision {
	var ds []engine.Decision
	for i := 0; i < max(passes, refunds, alerts); i++ {
		if i < passes {
			ds = append(ds, engine.Decision{Action: engine.ActionPass,
				Raw: fmt.Appendf(nil, `{"user_id":"u-%d","event_type":"payment","amount":5}`, i)})
		}
		if i < refunds {
			ds = append(ds, engine.Decision{Action: engine.ActionDrop, Rule: "refunds",
				Raw: fmt.Appendf(nil, `{"user_id":"u-%d","event_type":"refund","amount":5}`, i)})
		}
		if i < alerts {
			ds = append(ds, engine.Decision{Action: engine.ActionAlert, Rule: "big-payment",
				Raw: fmt.Appendf(nil, `{"user_id":"u-%d","event_type":"payment","amount":50000}`, i)})
		}
	}
	return ds
}

// offerBatch does what a worker does with one batch of decisions: one Load,
// then Wants and Offer per decision.
func offerBatch(h *Hub, ds []engine.Decision, queue int, rxNs uint64) {
	f := h.Load()
	for i := range ds {
		if f != nil && f.Wants(ds[i].Action) {
			h.Offer(f, &ds[i], queue, rxNs)
		}
	}
}

func subscribeT(t testing.TB, h *Hub, verdicts uint32, rule string, rate int) *Sub {
	t.Helper()
	s, err := h.Subscribe(verdicts, rule, rate)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// drainT delivers what the workers offered and returns, per client, the
// events it received.
func drainT(h *Hub, subs ...*Sub) [][]Event {
	h.Deliver()
	got := make([][]Event, len(subs))
	for i, s := range subs {
		for len(s.ch) > 0 {
			got[i] = append(got[i], <-s.ch)
		}
	}
	return got
}

// The workers filter by rule and verdict and sample at each client's rate
// before anything is copied: a client gets only its rule's events, at most
// its bucket's worth, refilled at its rate; the others are unaffected.
func TestTapHubSampling(t *testing.T) {
	const refunds, alerts, rate = 30, 7, 5
	batch := decisions(50, refunds, alerts)
	hub := testHub()
	slow := subscribeT(t, hub, allVerdicts, "refunds", rate)
	fast := subscribeT(t, hub, 1<<engine.ActionAlert, "big-payment", MaxRate)
	offerBatch(hub, batch, 1, testNow-5000) // received 5µs ago
	if n := hub.ring.Len(); n != rate+alerts {
		t.Errorf("workers offered %d events, want %d refunds (the bucket) + %d alerts", n, rate, alerts)
	}
	got := drainT(hub, slow, fast)
	if len(got[0]) != rate || len(got[1]) != alerts {
		t.Fatalf("got %d refunds (want %d), %d alerts (want %d)", len(got[0]), rate, len(got[1]), alerts)
	}
	for _, ev := range got[0] {
		if ev.rule != "refunds" || ev.action != engine.ActionDrop || ev.queue != 1 || ev.latencyUs != 5 ||
			!bytes.Contains(ev.raw, []byte(`"event_type":"refund"`)) || ev.f != nil || ev.to != 0 {
			t.Fatalf("refunds client: event %+v (%s)", ev, ev.raw)
		}
	}
	for _, ev := range got[1] {
		if ev.action != engine.ActionAlert || ev.rule != "big-payment" {
			t.Fatalf("alerts client: event %+v (%s)", ev, ev.raw)
		}
	}
	// The client's copy is its own: the worker's buffer went back to the
	// free list and is overwritten by the next offer.
	if n := len(hub.free); n != rate+alerts {
		t.Errorf("%d buffers recycled, want %d", n, rate+alerts)
	}

	// The bucket is empty: the next batch offers the slow client nothing.
	offerBatch(hub, batch, 1, 0)
	if got := drainT(hub, slow, fast); len(got[0]) != 0 || len(got[1]) != alerts || got[1][0].latencyUs != -1 {
		t.Errorf("empty bucket: got %d refunds, %d alerts (want 0, %d), no receive time as %d",
			len(got[0]), len(got[1]), alerts, got[1][0].latencyUs)
	}
	// 100ms at 5/s is half a token, 200ms one, a second the whole bucket.
	for _, c := range []struct {
		dt   time.Duration
		want int
	}{{100 * time.Millisecond, 0}, {100 * time.Millisecond, 1}, {10 * time.Second, rate}} {
		hub.mu.Lock()
		hub.refill(c.dt)
		hub.mu.Unlock()
		offerBatch(hub, batch, 1, 0)
		if got := drainT(hub, slow, fast); len(got[0]) != c.want {
			t.Errorf("after a refill of %v: %d refunds, want %d", c.dt, len(got[0]), c.want)
		}
	}

	// A client that leaves between a batch and its delivery gets nothing
	// more; its copies are recycled.
	hub.mu.Lock()
	hub.refill(time.Second)
	hub.mu.Unlock()
	offerBatch(hub, batch, 1, 0)
	hub.Unsubscribe(slow)
	free := len(hub.free)
	if got := drainT(hub, slow, fast); len(got[0]) != 0 || len(got[1]) != alerts || len(hub.free) != free+rate+alerts {
		t.Errorf("after leaving: %d refunds, %d alerts, %d buffers recycled (want 0, %d, %d)",
			len(got[0]), len(got[1]), len(hub.free)-free, alerts, rate+alerts)
	}
	hub.Unsubscribe(fast)
	if hub.Load() != nil || hub.Clients() != 0 {
		t.Errorf("no clients, yet a filter (%v) or %d clients", hub.Load(), hub.Clients())
	}
	if hub.Dropped() != 0 {
		t.Errorf("%d dropped, want 0", hub.Dropped())
	}

	// At most maxClients.
	for range maxClients {
		subscribeT(t, hub, 1, "", 1)
	}
	if _, err := hub.Subscribe(1, "", 1); err == nil {
		t.Errorf("client %d accepted", maxClients+1)
	}
}

// Losses are counted, never waited for: a full ring drops the offer before
// copying it, a full client buffer drops the dispatcher's copy.
func TestTapHubDrops(t *testing.T) {
	const over = 10
	hub := testHub()
	s := subscribeT(t, hub, allVerdicts, "refunds", MaxRate)
	offerBatch(hub, decisions(0, ringSize+over, 0), 0, 0)
	if n, d := hub.ring.Len(), hub.Dropped(); n != ringSize || d != over {
		t.Fatalf("ring holds %d, dropped %d; want %d, %d", n, d, ringSize, over)
	}
	got := drainT(hub, s)
	if n, d := len(got[0]), hub.Dropped(); n != clientBuf || d != over+ringSize-clientBuf {
		t.Fatalf("client got %d, dropped %d; want %d, %d", n, d, clientBuf, over+ringSize-clientBuf)
	}
	if n := len(hub.free); n != min(ringSize, freeBufs) {
		t.Errorf("%d buffers recycled, want %d", n, min(ringSize, freeBufs))
	}
}

// A worker's offers allocate nothing with no client, with clients that
// want nothing of the batch, and, once the copy buffers circulate, with a
// client that is offered events (the dispatcher's per-client copies are
// off the hot path).
func TestTapHubOfferAllocs(t *testing.T) {
	const runs = 20
	batch := decisions(100, 10, 5)
	hub := testHub()
	allocs := func() float64 {
		return testing.AllocsPerRun(runs, func() { offerBatch(hub, batch, 1, testNow-1000) })
	}
	if n := allocs(); n != 0 {
		t.Errorf("no tap client: %v allocs per batch", n)
	}
	other := subscribeT(t, hub, 1<<engine.ActionBlock, "", MaxRate)
	nope := subscribeT(t, hub, allVerdicts, "no-such-rule", MaxRate)
	if n := allocs(); n != 0 {
		t.Errorf("clients wanting nothing of the batch: %v allocs per batch", n)
	}
	if got := drainT(hub, other, nope); len(got[0])+len(got[1]) != 0 || len(hub.free) != 0 {
		t.Fatalf("clients wanting nothing got %d and %d events, %d buffers", len(got[0]), len(got[1]), len(hub.free))
	}

	// The first runs allocate copy buffers, which delivery hands back; the
	// same runs again allocate nothing.
	refunds := subscribeT(t, hub, allVerdicts, "refunds", MaxRate)
	warm := allocs()
	offered := len(drainT(hub, refunds)[0])
	if offered != 10*(runs+1) || len(hub.free) != offered {
		t.Fatalf("refunds client: %d events over %d batches, %d buffers recycled", offered, runs+1, len(hub.free))
	}
	if n := allocs(); n != 0 {
		t.Errorf("client offered 10 events per batch: %v allocs per batch (%v before the buffers circulated)", n, warm)
	}
}

// Serve streams what its client asked for as NDJSON lines, refuses a bad
// query, answers 503 without a hub, and ends when the server shuts down.
func TestTapServe(t *testing.T) {
	hub := testHub()
	quit := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/none" {
			(*Hub)(nil).Serve(w, r, quit)
			return
		}
		hub.Serve(w, r, quit)
	}))
	defer srv.Close()
	for _, c := range []struct {
		path string
		code int
	}{{"/?verdict=nope", http.StatusBadRequest}, {"/?rate=0", http.StatusBadRequest},
		{"/none?verdict=drop", http.StatusServiceUnavailable}, {"/none?rate=0", http.StatusBadRequest}} {
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s: %s, want %d", c.path, resp.Status, c.code)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/?verdict=drop&rule=refunds&rate=3", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("%s, %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	// The handler subscribed before it answered; the dispatcher runs.
	if n := hub.Clients(); n != 1 {
		t.Fatalf("%d clients, want 1", n)
	}
	offerBatch(hub, decisions(5, 5, 5), 3, testNow-2500)
	sc := bufio.NewScanner(resp.Body)
	for i := range 3 { // the client's rate: its bucket holds 3
		if !sc.Scan() {
			t.Fatalf("line %d: %v", i, sc.Err())
		}
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, sc.Bytes())
		}
		want := fmt.Sprintf(`{"user_id":"u-%d","event_type":"refund","amount":5}`, i)
		if string(l.Event) != want || l.Verdict != "drop" || l.Rule != "refunds" || l.Queue != 3 ||
			l.LatencyUs == nil || *l.LatencyUs != 3 {
			t.Fatalf("line %d: %s", i, sc.Bytes())
		}
	}
	close(quit)
	if sc.Scan() {
		t.Fatalf("a line over the client's bucket: %s", sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("stream did not end cleanly at shutdown: %v", err)
	}
}
