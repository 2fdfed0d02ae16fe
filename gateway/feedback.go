package gateway

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/xgate/xgate/engine"
)

// Blocker enforces a block in the kernel; *bpf.XDP is one.
type Blocker interface {
	Block(addr netip.Addr, ttl time.Duration) error
}

type blockRequest struct {
	addr netip.Addr
	ttl  time.Duration
}

// feedback carries `block` verdicts from the workers to the XDP blocklist.
// Workers push requests into a bounded MPSC ring (never blocking: a full
// ring is counted); one goroutine applies them, so the map update syscalls
// stay off the hot path. A source blocked already for at least half the
// requested time is not written again (deduped), and at most max sources
// are kept blocked by this path at once (over it: counted, not applied),
// so a spray of block verdicts cannot flush operator entries out of the
// LRU blocklist.
type feedback struct {
	ring   *engine.MPSC[blockRequest]
	target Blocker // nil: nothing enforces blocks (plain mode)
	max    int
	now    func() time.Time

	// live is owned by the run goroutine: source → block expiry.
	live map[netip.Addr]time.Time

	requested, applied, deduped, ringFull, overLimit, failed, unenforced atomic.Uint64
}

// FeedbackStats counts what happened to block verdicts.
type FeedbackStats struct {
	Requested  uint64 // block verdicts with a source address
	Applied    uint64 // written into the XDP blocklist
	Deduped    uint64 // the source was blocked long enough already
	RingFull   uint64 // dropped: the feedback ring was full
	OverLimit  uint64 // dropped: block_max sources are blocked already
	Failed     uint64 // the map update failed
	Unenforced uint64 // no XDP program (plain mode): the event was dropped, the source not blocked
}

func newFeedback(target Blocker, max int) *feedback {
	ring, _ := engine.NewMPSC[blockRequest](4096)
	if max <= 0 {
		max = 16384
	}
	return &feedback{ring: ring, target: target, max: max, now: time.Now, live: map[netip.Addr]time.Time{}}
}

// request is called by workers; it never blocks and never allocates.
func (f *feedback) request(addr netip.Addr, ttl time.Duration) {
	if !addr.IsValid() {
		return
	}
	f.requested.Add(1)
	if f.target == nil {
		f.unenforced.Add(1)
		return
	}
	if !f.ring.TryPush(blockRequest{addr, ttl}) {
		f.ringFull.Add(1)
	}
}

// drain applies every queued request; it returns how many it handled.
func (f *feedback) drain() int {
	n := 0
	for {
		r, ok := f.ring.Pop()
		if !ok {
			return n
		}
		n++
		f.apply(r)
	}
}

func (f *feedback) apply(r blockRequest) {
	now := f.now()
	until := now.Add(r.ttl)
	if exp, ok := f.live[r.addr]; ok && exp.Sub(now) >= r.ttl/2 {
		f.deduped.Add(1)
		return
	}
	if _, ok := f.live[r.addr]; !ok && len(f.live) >= f.max {
		for a, exp := range f.live {
			if !exp.After(now) {
				delete(f.live, a)
			}
		}
		if len(f.live) >= f.max {
			f.overLimit.Add(1)
			return
		}
	}
	if err := f.target.Block(r.addr, r.ttl); err != nil {
		f.failed.Add(1)
		return
	}
	f.live[r.addr] = until
	f.applied.Add(1)
}

// run applies requests until stop is closed, then drains what is left.
func (f *feedback) run(stop <-chan struct{}) {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			f.drain()
			return
		case <-t.C:
			f.drain()
		}
	}
}

func (f *feedback) stats() FeedbackStats {
	return FeedbackStats{
		Requested: f.requested.Load(), Applied: f.applied.Load(), Deduped: f.deduped.Load(),
		RingFull: f.ringFull.Load(), OverLimit: f.overLimit.Load(), Failed: f.failed.Load(),
		Unenforced: f.unenforced.Load(),
	}
}
