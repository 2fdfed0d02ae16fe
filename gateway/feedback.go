package gateway

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/xgate/xgate/engine/ring"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway/metrics"
)

// Blocker enforces blocks in the kernel; *bpf.XDP is one.
type Blocker interface {
	// BlockBy blocks addr for ttl, recording the rule; bpf.ErrNeverBlock
	// when addr is in a never-block list.
	BlockBy(addr netip.Addr, ttl time.Duration, rule string) error
	// SweepExpired removes expired blocks and returns the next expiry
	// ahead (bpf.Ktime ns; 0: none).
	SweepExpired() (removed int, next uint64, err error)
}

// feedbackOp is a block or unblock by hand (BlockSource, UnblockSource),
// carried out by the run goroutine.
type feedbackOp struct {
	block bool // false: unblock
	addr  netip.Addr
	ttl   time.Duration
	done  chan error
}

type blockRequest struct {
	addr netip.Addr
	ttl  time.Duration
	rule string // the rule's name: a string of the compiled program, not a view
}

// feedback carries `block` verdicts from the workers to the XDP blocklist.
// Workers push requests into a bounded MPSC ring (never blocking: a full
// ring is counted) and poke the wake channel; one goroutine applies them,
// so the map update syscalls stay off the hot path. A source blocked
// already for at least half the requested time is not written again
// (deduped), and at most max sources are kept blocked by this path at once
// (over it: counted, not applied), so a spray of block verdicts cannot
// flush operator entries out of the LRU blocklist. Addresses in a
// never-block list are refused and counted (Refused).
//
// Nothing runs at rest: the goroutine sleeps until a worker pokes it or
// the earliest block expires, when it sweeps the expired entries out of
// the map and its prefilter (bpf.SweepExpired) and arms the timer for the
// next expiry; with no expiring block there is no timer.
type feedback struct {
	ring   *ring.MPSC[blockRequest]
	wake   chan struct{} // capacity 1: a poke while one is pending is dropped, harmlessly
	ops    chan feedbackOp
	closed chan struct{} // closed when run returns: ops are refused
	target Blocker       // nil: nothing enforces blocks (plain mode)
	max    atomic.Int64  // block_max: a reload may change it
	now    func() time.Time
	log    *slog.Logger

	// live is owned by the run goroutine: source → block expiry.
	live map[netip.Addr]time.Time
	// lastRefusedLog rate-limits the refusal log line (run goroutine).
	lastRefusedLog time.Time
	// due is the earliest expiry among the blocks applied since run last
	// looked (zero: none); run goroutine only.
	due time.Time

	requested, applied, deduped, ringFull, overLimit, failed, unenforced, refused, swept atomic.Uint64
}

func newFeedback(target Blocker, max int, log *slog.Logger) *feedback {
	q, _ := ring.NewMPSC[blockRequest](4096)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &feedback{ring: q, wake: make(chan struct{}, 1), ops: make(chan feedbackOp), closed: make(chan struct{}),
		target: target, now: time.Now, log: log, live: map[netip.Addr]time.Time{}}
	f.setMax(max)
	return f
}

// setMax sets block_max (<= 0: the default).
func (f *feedback) setMax(max int) {
	if max <= 0 {
		max = 16384
	}
	f.max.Store(int64(max))
}

// request is called by workers; it never blocks and never allocates.
func (f *feedback) request(addr netip.Addr, ttl time.Duration, rule string) {
	if !addr.IsValid() {
		return
	}
	f.requested.Add(1)
	if f.target == nil {
		f.unenforced.Add(1)
		return
	}
	if !f.ring.TryPush(blockRequest{addr, ttl, rule}) {
		f.ringFull.Add(1)
		return
	}
	f.poke()
}

// poke wakes the run goroutine without blocking.
func (f *feedback) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// errFeedbackStopped is returned by do once the gateway is stopping.
var errFeedbackStopped = errors.New("the gateway is stopping")

// do has the run goroutine carry out op and returns its result.
func (f *feedback) do(op feedbackOp) error {
	if f.target == nil {
		return ErrNoBlocklist
	}
	op.done = make(chan error, 1)
	select {
	case f.ops <- op:
		return <-op.done
	case <-f.closed:
		return errFeedbackStopped
	}
}

// handle carries out a hand-made block or unblock (run goroutine).
func (f *feedback) handle(op feedbackOp) error {
	if !op.block {
		delete(f.live, op.addr)
		bl, ok := f.target.(interface{ Unblock(netip.Addr) error })
		if !ok {
			return errors.New("this blocklist cannot unblock")
		}
		return bl.Unblock(op.addr)
	}
	if err := f.target.BlockBy(op.addr, op.ttl, bpf.ManualRule); err != nil {
		return err
	}
	if op.ttl > 0 {
		until := f.now().Add(op.ttl)
		f.live[op.addr] = until
		if f.due.IsZero() || until.Before(f.due) {
			f.due = until
		}
	} else {
		delete(f.live, op.addr) // permanent: verdicts for it are moot
	}
	return nil
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
	max := int(f.max.Load())
	if _, ok := f.live[r.addr]; !ok && len(f.live) >= max {
		for a, exp := range f.live {
			if !exp.After(now) {
				delete(f.live, a)
			}
		}
		if len(f.live) >= max {
			f.overLimit.Add(1)
			return
		}
	}
	if err := f.target.BlockBy(r.addr, r.ttl, r.rule); err != nil {
		if errors.Is(err, bpf.ErrNeverBlock) {
			f.refused.Add(1)
			if now.Sub(f.lastRefusedLog) >= 10*time.Second {
				f.lastRefusedLog = now
				f.log.Warn("block verdict refused: the source is in a never_block list (spoofed, or a partner to look at)",
					"source", r.addr, "rule", r.rule, "refused_total", f.refused.Load())
			}
			return
		}
		f.failed.Add(1)
		return
	}
	f.live[r.addr] = until
	f.applied.Add(1)
	if r.ttl > 0 && (f.due.IsZero() || until.Before(f.due)) {
		f.due = until
	}
}

// sweep removes expired blocks and returns when the next one expires
// (0: none expires).
func (f *feedback) sweep() time.Duration {
	if f.target == nil {
		return 0
	}
	removed, next, err := f.target.SweepExpired()
	if err != nil {
		f.log.Warn("sweeping expired blocks failed; retrying in 1s", "error", err)
		return time.Second
	}
	f.swept.Add(uint64(removed))
	if next == 0 {
		return 0
	}
	now := bpf.Ktime()
	if next <= now {
		return time.Millisecond
	}
	return time.Duration(next - now)
}

// run applies requests as workers poke it and sweeps expired blocks when
// they expire, until stop is closed; then it drains what is left.
func (f *feedback) run(stop <-chan struct{}) {
	defer close(f.closed)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var armedAt time.Time // when the armed timer fires; zero: not armed
	arm := func(d time.Duration) {
		if d <= 0 {
			return
		}
		at := f.now().Add(d)
		if !armedAt.IsZero() && !at.Before(armedAt) {
			return // an earlier sweep is due anyway; it re-arms for the rest
		}
		timer.Stop()
		timer.Reset(d)
		armedAt = at
	}
	// Blocks pinned by an earlier run may be waiting to expire.
	arm(f.sweep())
	for {
		select {
		case <-stop:
			f.drain()
			timer.Stop()
			return
		case op := <-f.ops:
			op.done <- f.handle(op)
			f.poke() // arm for its expiry below, on the next turn
		case <-f.wake:
			f.drain()
			if !f.due.IsZero() {
				// A little after the expiry: the program ignores an
				// expired entry already; the sweep only frees its slot.
				arm(f.due.Sub(f.now()) + time.Millisecond)
				f.due = time.Time{}
			}
		case <-timer.C:
			armedAt = time.Time{}
			arm(f.sweep())
		}
	}
}

func (f *feedback) stats() metrics.FeedbackStats {
	return metrics.FeedbackStats{
		Requested: f.requested.Load(), Applied: f.applied.Load(), Deduped: f.deduped.Load(),
		RingFull: f.ringFull.Load(), OverLimit: f.overLimit.Load(), Failed: f.failed.Load(),
		Unenforced: f.unenforced.Load(), Refused: f.refused.Load(), Swept: f.swept.Load(),
	}
}
