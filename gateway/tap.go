package gateway

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

	"github.com/xgate/xgate/engine/ring"

	"github.com/xgate/xgate/engine"
)

// The tap streams a sample of decided events to HTTP clients (GET /tap),
// like `vector tap`. Filtering and sampling happen where the events are
// decided, so a tap costs the workers only what it keeps:
//
//   - With no client the cost is one atomic load per receive batch (the
//     filter pointer, nil) and one nil check per decision.
//   - With clients, the workers load the immutable tapFilter once per batch
//     and test each decision against every client's verdicts and rule. A
//     decision no client wants costs those comparisons and nothing else.
//   - A wanted decision also takes one token from each matching client's
//     bucket (refilled by the dispatcher at the client's rate): over its
//     rate a client is not offered the event at all. So the workers copy at
//     most about sum(rate) events per second, whatever the traffic.
//   - The copy goes into a recycled buffer (tapHub.free) and then into a
//     bounded, lossy MPSC ring; a full ring drops it (counted in
//     xgate_tap_dropped_total). No step blocks and, once buffers circulate,
//     none allocates.
//
// One dispatcher goroutine, running while clients are connected, drains the
// ring every tapDrainEvery, refills the buckets, copies each event for the
// clients it was offered to, and recycles the worker's buffer; each
// client's handler enforces its rate exactly (a sliding one-second window)
// and writes NDJSON.

const (
	tapRingSize   = 4096 // events between the workers and the dispatcher
	tapClientBuf  = 1024 // events between the dispatcher and one client
	tapDrainEvery = 5 * time.Millisecond
	tapMaxRate    = 10000 // lines per second, upper bound of ?rate=
	tapMaxClients = 64    // bits of tapEvent.to
	tapFreeBufs   = 1024  // recycled copy buffers kept
	tapBufMin     = 512   // capacity of a new copy buffer, at least
	tapBufMax     = 4096  // larger buffers are not recycled
)

// tapEvent is one decided event, copied out of the worker's frame.
type tapEvent struct {
	raw       []byte
	action    engine.Action
	rule      string
	queue     int
	latencyUs int64 // -1: no receive timestamp (not afxdp)
	// f and to say whom the worker offered the event to: bit i of to is
	// f.subs[i]. Unused in the events sent to a client.
	f  *tapFilter
	to uint64
}

// TapLine is one NDJSON line of /tap.
type TapLine struct {
	Event     json.RawMessage `json:"event"`
	Verdict   string          `json:"verdict"`
	Rule      string          `json:"rule"`
	Queue     int             `json:"queue"`
	LatencyUs *int64          `json:"latency_us,omitempty"`
}

// tapFilter is what the connected clients want, as the workers read it.
// Immutable once published in tapHub.filter: (un)subscribing publishes a
// new one, so a worker sees one consistent set for a whole batch.
type tapFilter struct {
	verdicts uint32    // OR of the subs' verdicts: the quick reject
	subs     []*tapSub // at most tapMaxClients
}

type tapHub struct {
	// filter is nil when no client is connected. The workers load it once
	// per batch (worker.loadTap); only subscribe and unsubscribe store it.
	filter  atomic.Pointer[tapFilter]
	ring    *ring.MPSC[tapEvent]
	free    chan []byte   // copy buffers: dispatcher → workers (never blocks either)
	dropped atomic.Uint64 // ring full, or a client's buffer full

	mu      sync.Mutex
	subs    map[*tapSub]struct{}
	running bool // the dispatcher goroutine
}

type tapSub struct {
	verdicts uint32 // bit per engine.Action
	rule     string // "" any
	rate     int    // lines per second
	// tokens is how many more events the workers may offer this client.
	// Workers take one per offered event (Load, then Add(-1); racing
	// workers may push it a little below 0, which the refill absorbs); the
	// dispatcher adds rate per second up to a burst of rate.
	tokens atomic.Int64
	credit float64 // fractional tokens not yet added; dispatcher only, under tapHub.mu
	ch     chan tapEvent
}

func newTapHub() *tapHub {
	r, err := ring.NewMPSC[tapEvent](tapRingSize)
	if err != nil {
		panic(err) // constant capacity
	}
	return &tapHub{ring: r, free: make(chan []byte, tapFreeBufs), subs: map[*tapSub]struct{}{}}
}

// offer is called by a worker for a decision whose verdict some client of
// f wants. It offers a copy of the event to the clients whose rule matches
// and whose bucket has a token; with none, it returns without copying.
// rxNs is the XDP receive timestamp (0: none).
func (t *tapHub) offer(f *tapFilter, d *engine.Decision, queue int, rxNs uint64) {
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
		buf = make([]byte, 0, max(len(d.Raw), tapBufMin))
	}
	ev := tapEvent{raw: append(buf[:0], d.Raw...), action: d.Action, rule: d.Rule, queue: queue,
		latencyUs: -1, f: f, to: to}
	if rxNs != 0 {
		if now := monotonicNs(); now > rxNs {
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
func (t *tapHub) recycle(b []byte) {
	if cap(b) > tapBufMax {
		return
	}
	select {
	case t.free <- b[:0]:
	default:
	}
}

// errTapClients is returned by subscribe when tapMaxClients are connected.
var errTapClients = fmt.Errorf("too many clients (%d)", tapMaxClients)

// subscribe registers a client and publishes the new filter; the caller
// starts the dispatcher (run). rate is the client's lines per second.
func (t *tapHub) subscribe(verdicts uint32, rule string, rate int) (*tapSub, error) {
	s := &tapSub{verdicts: verdicts, rule: rule, rate: rate, ch: make(chan tapEvent, tapClientBuf)}
	s.tokens.Store(int64(rate))
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.subs) >= tapMaxClients {
		return nil, errTapClients
	}
	t.subs[s] = struct{}{}
	t.publish()
	return s, nil
}

func (t *tapHub) unsubscribe(s *tapSub) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.subs, s)
	t.publish()
}

// publish stores the filter of the current subs (nil for none). Under mu.
func (t *tapHub) publish() {
	if len(t.subs) == 0 {
		t.filter.Store(nil)
		return
	}
	f := &tapFilter{subs: make([]*tapSub, 0, len(t.subs))}
	for s := range t.subs {
		f.verdicts |= s.verdicts
		f.subs = append(f.subs, s)
	}
	t.filter.Store(f)
}

// run starts the dispatcher unless it is running.
func (t *tapHub) run() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		t.running = true
		go t.dispatch()
	}
}

// clients returns the number of connected tap clients.
func (t *tapHub) clients() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.subs)
}

// dispatch drains the ring while clients are connected; the last one
// leaving ends it (what is left in the ring is discarded).
func (t *tapHub) dispatch() {
	buf := make([]tapEvent, 256)
	tick := time.NewTicker(tapDrainEvery)
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

// refill adds dt's worth of tokens to every client's bucket, up to one
// second's worth. Under mu.
func (t *tapHub) refill(dt time.Duration) {
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
func (t *tapHub) deliver(buf []tapEvent) {
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

// tapMaxRule bounds the rule= of a tap query (rule names are config
// keys' values, far shorter).
const tapMaxRule = 1024

// tapAllVerdicts is the verdict mask of a query without verdict=.
const tapAllVerdicts = 1<<engine.NumActions - 1

// parseTapQuery reads the raw query ?verdict=a,b&rule=NAME&rate=N. Each
// key at most once, no other key, and no malformed escape: a query the
// server would read differently from what the client meant (a typo'd or
// dropped verdict= streams every verdict) is an error instead. On success
// verdicts holds only bits of engine actions (all of them without
// verdict=), rate is in 1..tapMaxRate (100 without rate=) and rule is ""
// (any) or valid UTF-8 of at most tapMaxRule bytes.
func parseTapQuery(raw string) (verdicts uint32, rule string, rate int, err error) {
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
		if rate, err = strconv.Atoi(v); err != nil || rate <= 0 || rate > tapMaxRate {
			return 0, "", 0, fmt.Errorf("rate %q: want lines per second in 1..%d", v, tapMaxRate)
		}
	}
	rule = q.Get("rule")
	if len(rule) > tapMaxRule || !utf8.ValidString(rule) {
		return 0, "", 0, fmt.Errorf("rule %.40q: want a rule name (UTF-8, at most %d bytes)", rule, tapMaxRule)
	}
	v := q.Get("verdict")
	if v == "" {
		return tapAllVerdicts, rule, rate, nil
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

// serveTap streams matching events as NDJSON, at most rate lines in any
// one-second window (a sliding window over the times of the last rate
// lines; events over it are skipped, not delayed), until the client goes
// away or the server shuts down (quit closed).
func (g *Gateway) serveTap(w http.ResponseWriter, r *http.Request, quit <-chan struct{}) {
	verdicts, rule, rate, err := parseTapQuery(r.URL.RawQuery)
	if err != nil {
		http.Error(w, "tap: "+err.Error(), http.StatusBadRequest)
		return
	}
	if g.tap == nil {
		http.Error(w, "tap: gateway not running", http.StatusServiceUnavailable)
		return
	}
	sub, err := g.tap.subscribe(verdicts, rule, rate)
	if err != nil {
		http.Error(w, "tap: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer g.tap.unsubscribe(sub)
	g.tap.run()
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
		var ev tapEvent
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
			line := TapLine{Event: ev.raw, Verdict: ev.action.String(), Rule: ev.rule, Queue: ev.queue}
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
