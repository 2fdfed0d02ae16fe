// Package tap streams a sample of the gateway's decided events to HTTP
// clients (GET /tap): the lock-free hub the workers offer decisions to, the
// dispatcher that hands them to the clients, and the handler that writes
// them as NDJSON. The gateway creates one Hub, its workers call Load and
// Offer, and its HTTP server calls Serve.
package tap

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/engine/ring"
)

// The tap streams a sample of decided events to HTTP clients (GET /tap),
// like `vector tap`. Filtering and sampling happen where the events are
// decided, so a tap costs the workers only what it keeps:
//
//   - With no client the cost is one atomic load per receive batch (the
//     filter pointer, nil) and one nil check per decision.
//   - With clients, the workers load the immutable Filter once per batch
//     and test each decision against every client's verdicts and rule. A
//     decision no client wants costs those comparisons and nothing else.
//   - A wanted decision also takes one token from each matching client's
//     bucket (refilled by the dispatcher at the client's rate): over its
//     rate a client is not offered the event at all. So the workers copy at
//     most about sum(rate) events per second, whatever the traffic.
//   - The copy goes into a recycled buffer (Hub.free) and then into a
//     bounded, lossy MPSC ring; a full ring drops it (counted in
//     xgate_tap_dropped_total). No step blocks and, once buffers circulate,
//     none allocates.
//
// One dispatcher goroutine, running while clients are connected, drains the
// ring every drainEvery, refills the buckets, copies each event for the
// clients it was offered to, and recycles the worker's buffer; each
// client's handler enforces its rate exactly (a sliding one-second window)
// and writes NDJSON.

const (
	ringSize   = 4096 // events between the workers and the dispatcher
	clientBuf  = 1024 // events between the dispatcher and one client
	drainEvery = 5 * time.Millisecond
	MaxRate    = 10000 // lines per second, upper bound of ?rate=
	maxClients = 64    // bits of Event.to
	freeBufs   = 1024  // recycled copy buffers kept
	bufMin     = 512   // capacity of a new copy buffer, at least
	bufMax     = 4096  // larger buffers are not recycled
)

// Event is one decided event, copied out of the worker's frame: what a
// client receives (Sub.Events), its own copy; Serve writes it as a Line.
type Event struct {
	raw       []byte
	action    engine.Action
	rule      string
	queue     int
	latencyUs int64 // -1: no receive timestamp (not afxdp)
	// f and to say whom the worker offered the event to: bit i of to is
	// f.subs[i]. Unused in the events sent to a client.
	f  *Filter
	to uint64
}

// Line is one NDJSON line of /tap.
type Line struct {
	Event     json.RawMessage `json:"event"`
	Verdict   string          `json:"verdict"`
	Rule      string          `json:"rule"`
	Queue     int             `json:"queue"`
	LatencyUs *int64          `json:"latency_us,omitempty"`
}

// Filter is what the connected clients want, as the workers read it.
// Immutable once published in Hub.filter: (un)subscribing publishes a
// new one, so a worker sees one consistent set for a whole batch.
type Filter struct {
	verdicts uint32 // OR of the subs' verdicts: the quick reject
	subs     []*Sub // at most maxClients
}

// Wants says whether some client of f wants decisions of verdict a: the
// worker's quick reject before Offer.
func (f *Filter) Wants(a engine.Action) bool { return f.verdicts&(1<<a) != 0 }

// Hub is the tap of one gateway: the workers offer it decisions (Load,
// Wants, Offer), the /tap handler subscribes clients to it.

type Hub struct {
	// filter is nil when no client is connected. The workers load it once
	// per batch (Load); only Subscribe and Unsubscribe store it.
	filter  atomic.Pointer[Filter]
	ring    *ring.MPSC[Event]
	free    chan []byte   // copy buffers: dispatcher → workers (never blocks either)
	dropped atomic.Uint64 // ring full, or a client's buffer full
	clock   func() uint64 // CLOCK_MONOTONIC in ns, the clock of the receive stamps

	mu      sync.Mutex
	subs    map[*Sub]struct{}
	running bool // the dispatcher goroutine
}

// Sub is one client of the hub.
type Sub struct {
	verdicts uint32 // bit per engine.Action
	rule     string // "" any
	rate     int    // lines per second
	// tokens is how many more events the workers may offer this client.
	// Workers take one per offered event (Load, then Add(-1); racing
	// workers may push it a little below 0, which the refill absorbs); the
	// dispatcher adds rate per second up to a burst of rate.
	tokens atomic.Int64
	credit float64 // fractional tokens not yet added; dispatcher only, under Hub.mu
	ch     chan Event
}

// NewHub returns a hub with no client. clock reads CLOCK_MONOTONIC in ns,
// the clock of the receive timestamps Offer is given.
func NewHub(clock func() uint64) *Hub {
	r, err := ring.NewMPSC[Event](ringSize)
	if err != nil {
		panic(err) // constant capacity
	}
	return &Hub{ring: r, free: make(chan []byte, freeBufs), subs: map[*Sub]struct{}{}, clock: clock}
}

// Load returns what the clients want now, nil with no client: a worker
// loads it once per batch (one atomic load) and passes it to Offer for
// the batch's decisions that f.Wants.
func (t *Hub) Load() *Filter { return t.filter.Load() }

// Dropped returns how many decided events the tap lost: its ring or a
// client's buffer was full.
func (t *Hub) Dropped() uint64 { return t.dropped.Load() }

// Offer is called by a worker for a decision whose verdict some client of
// f wants. It offers a copy of the event to the clients whose rule matches
// and whose bucket has a token; with none, it returns without copying.
// rxNs is the XDP receive timestamp (0: none).
func (t *Hub) Offer(f *Filter, d *engine.Decision, queue int, rxNs uint64) {
	bit := uint32(1) << d.Action
	var to uint64
	for i, s := range f.subs {
		if s.verdicts&bit == 0 || (s.rule != "" && s.rule != d.Rule) {
			continue
		}
		if s.tokens.Load() <= 0 || s.tokens.Add(-1) < 0 {
			continue // over the client's rate: not sampled
		}
		to |= 1 << i
	}
	if to == 0 {
		return
	}
	if t.ring.Len() >= t.ring.Cap() {
		t.dropped.Add(1) // full: do not even copy
		return
	}
	var buf []byte
	select {
	case buf = <-t.free:
	default:
		buf = make([]byte, 0, max(len(d.Raw), bufMin))
	}
	ev := Event{raw: append(buf[:0], d.Raw...), action: d.Action, rule: d.Rule, queue: queue,
		latencyUs: -1, f: f, to: to}
	if rxNs != 0 {
		if now := t.clock(); now > rxNs {
			ev.latencyUs = int64((now - rxNs + 999) / 1000)
		}
	}
	if !t.ring.TryPush(ev) {
		t.dropped.Add(1)
		t.recycle(ev.raw)
	}
}

// recycle hands a copy buffer back to the workers, if it is worth keeping
// and the free list has room.
func (t *Hub) recycle(b []byte) {
	if cap(b) > bufMax {
		return
	}
	select {
	case t.free <- b[:0]:
	default:
	}
}

// errClients is returned by Subscribe when maxClients are connected.
var errClients = fmt.Errorf("too many clients (%d)", maxClients)

// Subscribe registers a client and publishes the new filter; the caller
// starts the dispatcher (Run) or delivers itself (Deliver). rate is the
// client's lines per second.
func (t *Hub) Subscribe(verdicts uint32, rule string, rate int) (*Sub, error) {
	s := &Sub{verdicts: verdicts, rule: rule, rate: rate, ch: make(chan Event, clientBuf)}
	s.tokens.Store(int64(rate))
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.subs) >= maxClients {
		return nil, errClients
	}
	t.subs[s] = struct{}{}
	t.publish()
	return s, nil
}

// Unsubscribe removes a client and publishes the new filter.
func (t *Hub) Unsubscribe(s *Sub) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.subs, s)
	t.publish()
}

// publish stores the filter of the current subs (nil for none). Under mu.
func (t *Hub) publish() {
	if len(t.subs) == 0 {
		t.filter.Store(nil)
		return
	}
	f := &Filter{subs: make([]*Sub, 0, len(t.subs))}
	for s := range t.subs {
		f.verdicts |= s.verdicts
		f.subs = append(f.subs, s)
	}
	t.filter.Store(f)
}

// Events returns the events delivered to s.
func (s *Sub) Events() <-chan Event { return s.ch }

// Run starts the dispatcher unless it is running.
func (t *Hub) Run() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		t.running = true
		go t.dispatch()
	}
}

// Clients returns the number of connected tap clients.
func (t *Hub) Clients() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.subs)
}

// dispatch drains the ring while clients are connected; the last one
// leaving ends it (what is left in the ring is discarded).
func (t *Hub) dispatch() {
	buf := make([]Event, 256)
	tick := time.NewTicker(drainEvery)
	defer tick.Stop()
	last := time.Now()
	for now := range tick.C {
		t.mu.Lock()
		if len(t.subs) == 0 {
			t.running = false
			t.deliver(buf) // to no one: recycles the buffers
			t.mu.Unlock()
			return
		}
		t.refill(now.Sub(last))
		last = now
		t.deliver(buf)
		t.mu.Unlock()
	}
}

// Deliver hands what the workers offered to its clients now, as the
// dispatcher does every drainEvery: for a caller that does not Run it.
func (t *Hub) Deliver() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.deliver(make([]Event, 256))
}

// refill adds dt's worth of tokens to every client's bucket, up to one
// second's worth. Under mu.
func (t *Hub) refill(dt time.Duration) {
	for s := range t.subs {
		s.credit += float64(s.rate) * dt.Seconds()
		whole := int64(s.credit)
		if whole == 0 {
			continue
		}
		s.credit -= float64(whole)
		for {
			cur := s.tokens.Load()
			n := min(cur+whole, int64(s.rate))
			if n <= cur || s.tokens.CompareAndSwap(cur, n) {
				break
			}
		}
	}
}

// deliver empties the ring: each event goes, as its own copy, to the
// clients it was offered to that are still connected; the worker's buffer
// is recycled. Under mu.
func (t *Hub) deliver(buf []Event) {
	for {
		n := t.ring.PopBatch(buf)
		if n == 0 {
			return
		}
		for _, ev := range buf[:n] {
			for i, s := range ev.f.subs {
				if ev.to&(1<<i) == 0 {
					continue
				}
				if _, ok := t.subs[s]; !ok {
					continue // left since the worker's batch began
				}
				out := ev
				out.raw, out.f, out.to = slices.Clone(ev.raw), nil, 0
				select {
				case s.ch <- out:
				default:
					t.dropped.Add(1)
				}
			}
			t.recycle(ev.raw)
		}
		clear(buf[:n])
	}
}

// maxRule bounds the rule= of a tap query (rule names are config
// keys' values, far shorter).
const maxRule = 1024

// allVerdicts is the verdict mask of a query without verdict=.
const allVerdicts = 1<<engine.NumActions - 1

// parseQuery reads the raw query ?verdict=a,b&rule=NAME&rate=N. Each
// key at most once, no other key, and no malformed escape: a query the
// server would read differently from what the client meant (a typo'd or
// dropped verdict= streams every verdict) is an error instead. On success
// verdicts holds only bits of engine actions (all of them without
// verdict=), rate is in 1..MaxRate (100 without rate=) and rule is ""
// (any) or valid UTF-8 of at most maxRule bytes.
func parseQuery(raw string) (verdicts uint32, rule string, rate int, err error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return 0, "", 0, fmt.Errorf("query %q: %w", raw, err)
	}
	for k, vs := range q {
		switch {
		case k != "verdict" && k != "rule" && k != "rate":
			return 0, "", 0, fmt.Errorf("query parameter %q: want verdict, rule or rate", k)
		case len(vs) > 1:
			return 0, "", 0, fmt.Errorf("query parameter %s given %d times: want it once", k, len(vs))
		}
	}
	rate = 100
	if v := q.Get("rate"); v != "" {
		if rate, err = strconv.Atoi(v); err != nil || rate <= 0 || rate > MaxRate {
			return 0, "", 0, fmt.Errorf("rate %q: want lines per second in 1..%d", v, MaxRate)
		}
	}
	rule = q.Get("rule")
	if len(rule) > maxRule || !utf8.ValidString(rule) {
		return 0, "", 0, fmt.Errorf("rule %.40q: want a rule name (UTF-8, at most %d bytes)", rule, maxRule)
	}
	v := q.Get("verdict")
	if v == "" {
		return allVerdicts, rule, rate, nil
	}
	for name := range strings.SplitSeq(v, ",") {
		a, ok := parseAction(strings.TrimSpace(name))
		if !ok {
			return 0, "", 0, fmt.Errorf("verdict %q: want one of %s", name, strings.Join(actionNames(), ", "))
		}
		verdicts |= 1 << a
	}
	return verdicts, rule, rate, nil
}

func parseAction(s string) (engine.Action, bool) {
	for a := engine.Action(0); a < engine.NumActions; a++ {
		if a.String() == s {
			return a, true
		}
	}
	return 0, false
}

func actionNames() []string {
	var n []string
	for a := engine.Action(0); a < engine.NumActions; a++ {
		n = append(n, a.String())
	}
	return n
}

// Serve is GET /tap: it streams matching events as NDJSON, at most rate
// lines in any one-second window (a sliding window over the times of the
// last rate lines; events over it are skipped, not delayed), until the
// client goes away or the server shuts down (quit closed). A nil hub (no
// gateway running) answers 503 to a valid query.
func (t *Hub) Serve(w http.ResponseWriter, r *http.Request, quit <-chan struct{}) {
	verdicts, rule, rate, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		http.Error(w, "tap: "+err.Error(), http.StatusBadRequest)
		return
	}
	if t == nil {
		http.Error(w, "tap: gateway not running", http.StatusServiceUnavailable)
		return
	}
	sub, err := t.Subscribe(verdicts, rule, rate)
	if err != nil {
		http.Error(w, "tap: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer t.Unsubscribe(sub)
	t.Run()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()

	sent := make([]int64, rate) // monotonic ns of the last rate lines, a ring
	next, start := 0, time.Now()
	dirty := false // lines written but not flushed
	enc := json.NewEncoder(w)
	for {
		var ev Event
		select {
		case <-r.Context().Done():
			return
		case <-quit:
			return
		case ev = <-sub.ch:
		}
		now := int64(time.Since(start)) + 1 // > 0: 0 marks an unused slot
		if old := sent[next]; old == 0 || now-old >= int64(time.Second) {
			sent[next] = now
			next = (next + 1) % rate
			line := Line{Event: ev.raw, Verdict: ev.action.String(), Rule: ev.rule, Queue: ev.queue}
			if ev.latencyUs >= 0 {
				line.LatencyUs = &ev.latencyUs
			}
			if err := enc.Encode(&line); err != nil {
				return
			}
			dirty = true
		} // else: rate lines within the last second, this one is not sampled
		if dirty && len(sub.ch) == 0 {
			if err := rc.Flush(); err != nil {
				return
			}
			dirty = false
		}
	}
}
