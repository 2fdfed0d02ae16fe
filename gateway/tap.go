package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xgate/xgate/engine"
)

// The tap streams a sample of decided events to HTTP clients (GET /tap),
// like `vector tap`. The workers only offer copies to a bounded, lossy
// MPSC ring, and only while a client is connected: with none, the cost is
// one atomic load per receive batch. A full ring drops the copy (counted in
// xgate_tap_dropped_total); a slow or absent reader costs nothing else.
// One dispatcher goroutine, running while clients are connected, drains the
// ring and hands each event to the clients whose filter it matches; each
// client's handler rate-limits and writes NDJSON.

const (
	tapRingSize   = 4096 // events between the workers and the dispatcher
	tapClientBuf  = 1024 // events between the dispatcher and one client
	tapDrainEvery = 5 * time.Millisecond
	tapMaxRate    = 10000 // lines per second, upper bound of ?rate=
)

// tapEvent is one decided event, copied out of the worker's frame.
type tapEvent struct {
	raw       []byte
	action    engine.Action
	rule      string
	queue     int
	latencyUs int64 // -1: no receive timestamp (not afxdp)
}

// TapLine is one NDJSON line of /tap.
type TapLine struct {
	Event     json.RawMessage `json:"event"`
	Verdict   string          `json:"verdict"`
	Rule      string          `json:"rule"`
	Queue     int             `json:"queue"`
	LatencyUs *int64          `json:"latency_us,omitempty"`
}

type tapHub struct {
	// mask is the OR of the verdict bits the connected clients want; 0
	// when no client is connected. The workers load it once per batch.
	mask    atomic.Uint32
	ring    *engine.MPSC[tapEvent]
	dropped atomic.Uint64 // ring full, or a client's buffer full

	mu      sync.Mutex
	subs    map[*tapSub]struct{}
	running bool // the dispatcher goroutine
}

type tapSub struct {
	verdicts uint32 // bit per engine.Action
	rule     string // "" any
	ch       chan tapEvent
}

func newTapHub() *tapHub {
	r, err := engine.NewMPSC[tapEvent](tapRingSize)
	if err != nil {
		panic(err) // constant capacity
	}
	return &tapHub{ring: r, subs: map[*tapSub]struct{}{}}
}

// offer copies d into the ring; called by the workers when the batch's
// mask has d's verdict bit. rxNs is the XDP receive timestamp (0: none).
func (t *tapHub) offer(d *engine.Decision, queue int, rxNs uint64) {
	if t.ring.Len() >= t.ring.Cap() {
		t.dropped.Add(1) // full: do not even copy
		return
	}
	ev := tapEvent{raw: slices.Clone(d.Raw), action: d.Action, rule: d.Rule, queue: queue, latencyUs: -1}
	if rxNs != 0 {
		if now := monotonicNs(); now > rxNs {
			ev.latencyUs = int64((now - rxNs + 999) / 1000)
		}
	}
	if !t.ring.TryPush(ev) {
		t.dropped.Add(1)
	}
}

// subscribe registers a client and starts the dispatcher if needed.
func (t *tapHub) subscribe(verdicts uint32, rule string) *tapSub {
	s := &tapSub{verdicts: verdicts, rule: rule, ch: make(chan tapEvent, tapClientBuf)}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.subs[s] = struct{}{}
	t.updateMask()
	if !t.running {
		t.running = true
		go t.dispatch()
	}
	return s
}

func (t *tapHub) unsubscribe(s *tapSub) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.subs, s)
	t.updateMask()
}

func (t *tapHub) updateMask() {
	var m uint32
	for s := range t.subs {
		m |= s.verdicts
	}
	t.mask.Store(m)
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
	for range tick.C {
		t.mu.Lock()
		if len(t.subs) == 0 {
			t.running = false
			for t.ring.PopBatch(buf) > 0 {
			}
			clear(buf)
			t.mu.Unlock()
			return
		}
		for {
			n := t.ring.PopBatch(buf)
			if n == 0 {
				break
			}
			for _, ev := range buf[:n] {
				for s := range t.subs {
					if s.verdicts&(1<<ev.action) == 0 || (s.rule != "" && s.rule != ev.rule) {
						continue
					}
					select {
					case s.ch <- ev:
					default:
						t.dropped.Add(1)
					}
				}
			}
			clear(buf[:n])
		}
		t.mu.Unlock()
	}
}

// parseTapQuery reads ?verdict=a,b&rule=NAME&rate=N.
func parseTapQuery(r *http.Request) (verdicts uint32, rule string, rate int, err error) {
	q := r.URL.Query()
	rate = 100
	if v := q.Get("rate"); v != "" {
		if rate, err = strconv.Atoi(v); err != nil || rate <= 0 || rate > tapMaxRate {
			return 0, "", 0, fmt.Errorf("rate %q: want lines per second in 1..%d", v, tapMaxRate)
		}
	}
	rule = q.Get("rule")
	v := q.Get("verdict")
	if v == "" {
		return 1<<engine.NumActions - 1, rule, rate, nil
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
	verdicts, rule, rate, err := parseTapQuery(r)
	if err != nil {
		http.Error(w, "tap: "+err.Error(), http.StatusBadRequest)
		return
	}
	if g.tap == nil {
		http.Error(w, "tap: gateway not running", http.StatusServiceUnavailable)
		return
	}
	sub := g.tap.subscribe(verdicts, rule)
	defer g.tap.unsubscribe(sub)
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
