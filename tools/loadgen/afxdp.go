//go:build linux

package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/xdp"
)

// The AF_XDP engine (EngineAFXDP): an AF_XDP socket bound in copy mode to
// a queue of the sending veth (the first free one), with a TX ring. Transmit copies a batch of
// the K frames into TX frames of the socket's UMEM and kicks the kernel
// (sendto), which builds an skb of each and hands it to veth's
// ndo_start_xmit in the same system call, at most 32 per call
// (xsk_generic_xmit), then returns the TX frame through the completion
// ring. So a frame is counted as sent once it is completed: the kernel
// took it off the ring and through the device's transmit. veth may still
// drop it there (the peer's ring full): that is the sending end's
// tx_dropped, Result.TxDropped. The peer needs no XDP program (frames
// arrive as skbs); with one (the gateway's), the skbs go to it through
// veth's NAPI ring.
//
// In copy mode completions come back in the order the frames were
// queued (a frame veth refuses as busy is put back at the head of the TX
// ring and sent again), so the frames sent are the first Sent of those
// queued, which gives ByKind and Counts.
//
// Pacing happens in the sending loop: every frame has its slot (1/Rate
// apart); the loop sends, at each turn, the frames whose slot has come
// (at most BatchSize), and waits for the next slot by spinning when it is
// near (spinWait) and sleeping when it is farther. After a delay it sends
// what is owed back to back only within paceSlack (or one batch's
// worth); the rest of the debt is made up at 1.5 × Rate.

// Sizes of the AF_XDP engine's socket.
const (
	xskTxRing    = 2048 // TX ring entries and TX frames: what may be in flight
	xskFrameSize = 2048 // UMEM chunk: frames are at most MaxFrame bytes
	xskRxRing    = 64   // the kernel wants RX and fill rings; nothing is received
)

// Bounds of the AF_XDP engine's waits.
const (
	// xskStall ends a Send whose frames the kernel has not taken for this
	// long (link down, a wedged driver): an error, not a hang.
	xskStall = 2 * time.Second
	// xskFlush is how long the end of a Send waits for the frames still
	// in flight to complete; those that do not are Refused.
	xskFlush = 2 * time.Second
	// spinWait: a pacing slot at most this far away is waited for by
	// spinning (time.Sleep overshoots by tens of µs); a farther one by
	// sleeping until spinWait before it.
	spinWait = 200 * time.Microsecond
	// xskRetries are the immediate retries of a Transmit that found no
	// free TX frame (completions come back within the kick's system
	// call in copy mode) before the loop sleeps xskBackoff between them.
	xskRetries = 64
	xskBackoff = 20 * time.Microsecond
)

// xskTx is the AF_XDP engine of a Gen.
type xskTx struct {
	sock  *xdp.Socket
	k     uint64
	batch int
	// win[i] is frame i mod K, for i < K + batch: a batch of up to batch
	// frames starting at frame p < K is the window win[p:p+n], so a
	// Transmit needs no slice built per batch.
	win [][]byte
	pos uint64 // the next frame to queue (< K), over the Gen's life
}

// openXSKTx opens the engine's socket on from's link, in from's namespace:
// on the first queue that holds no socket (one generator per queue at a
// time), else on queue 0 once its socket is gone (a generator just closed:
// the kernel releases the queue after a grace period).
func openXSKTx(from *testenv.Host, frames [][]byte, batch int) (*xskTx, error) {
	cfg := xdp.Config{FrameSize: xskFrameSize, Frames: xskRxRing, FillSize: xskRxRing, RxSize: xskRxRing,
		TxSize: xskTxRing, Bind: xdp.BindCopy, BusyRetry: -1}
	var s *xdp.Socket
	err := from.Do(func() error {
		var err error
		for q := 0; q < max(from.Queues, 1); q++ {
			if s, err = xdp.Open(from.Ifindex, q, cfg); !errors.Is(err, unix.EBUSY) {
				return err
			}
		}
		cfg.BusyRetry = 0 // the default wait
		s, err = xdp.Open(from.Ifindex, 0, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("loadgen: AF_XDP socket on %s (ifindex %d): %w", from.Link, from.Ifindex, err)
	}
	x := &xskTx{sock: s, k: uint64(len(frames)), batch: batch}
	x.win = make([][]byte, len(frames)+batch)
	for i := range x.win {
		x.win[i] = frames[i%len(frames)]
	}
	return x, nil
}

func (x *xskTx) close() error { return x.sock.Close() }

// pacer holds the slots of a paced send, in ns since its start.
type pacer struct {
	interval int64 // slot length at Rate
	fast     int64 // slot length while there is debt: 1.5 × Rate
	slack    int64 // how far behind the loop may send back to back
	next     int64 // slot of the next frame
	debt     int64 // ns of slots skipped after delays, still owed
}

func newPacer(rate float64, batch int) pacer {
	iv := max(1, int64(1e9/rate))
	return pacer{interval: iv, fast: max(1, iv*2/3), slack: max(iv*int64(batch), int64(paceSlack))}
}

func (p *pacer) step(next, debt int64) (int64, int64) {
	if debt > 0 {
		return next + p.fast, debt - (p.interval - p.fast)
	}
	return next + p.interval, debt
}

// due returns how many of at most limit frames have their slot at or
// before now. A schedule behind by more than slack is moved up to now −
// slack, and what it skipped becomes debt.
func (p *pacer) due(now int64, limit int) int {
	if now-p.next > p.slack {
		p.debt += now - p.slack - p.next
		p.next = now - p.slack
	}
	next, debt := p.next, p.debt
	k := 0
	for k < limit && next <= now {
		next, debt = p.step(next, debt)
		k++
	}
	return k
}

// took moves the schedule past k frames sent.
func (p *pacer) took(k int) {
	for ; k > 0; k-- {
		p.next, p.debt = p.step(p.next, p.debt)
	}
}

// send is Gen.Send's loop for the AF_XDP engine, on the sending thread.
func (x *xskTx) send(ctx context.Context, g *Gen, n uint64, res *Result) error {
	o := g.opts
	st0, err := x.sock.Stats()
	if err != nil {
		return fmt.Errorf("loadgen: AF_XDP stats: %w", err)
	}
	pos0 := x.pos
	var queued uint64
	start := time.Now()
	err = x.loop(ctx, o, n, start, &queued)

	// Wait for what is in flight, then count what completed.
	if ferr := x.sock.FlushTx(xskFlush); ferr != nil && !errors.Is(ferr, xdp.ErrTimeout) && err == nil {
		err = fmt.Errorf("loadgen: AF_XDP flush: %w", ferr)
	}
	res.Elapsed = time.Since(start)
	st1, serr := x.sock.Stats()
	if serr != nil && err == nil {
		err = fmt.Errorf("loadgen: AF_XDP stats: %w", serr)
	}
	sent := min(st1.TxCompleted-st0.TxCompleted, queued)
	res.Sent, res.Refused = sent, queued-sent
	full, rest := sent/x.k, sent%x.k
	for i := range g.counts {
		g.counts[i] += full
	}
	for j, f := uint64(0), pos0; j < rest; j++ {
		g.counts[f]++
		if f++; f == x.k {
			f = 0
		}
	}
	return err
}

// loop queues frames until n are queued (n = 0: no count), Duration has
// passed or ctx ends, paced at o.Rate; queued counts them.
func (x *xskTx) loop(ctx context.Context, o Options, n uint64, start time.Time, queued *uint64) error {
	done := ctx.Done()
	paced := o.Rate > 0
	var pc pacer
	if paced {
		pc = newPacer(o.Rate, x.batch)
	}
	var stallSince int64 // when Transmit last went from progress to none
	stalled := 0
	for n == 0 || *queued < n {
		select {
		case <-done:
			return nil // a cancelled Send is a short one, not a failure
		default:
		}
		now := int64(time.Since(start))
		if o.Duration > 0 && now >= int64(o.Duration) {
			return nil
		}
		k := x.batch
		if n > 0 {
			k = int(min(uint64(k), n-*queued))
		}
		if paced {
			if wait := pc.next - now; wait > 0 {
				// Not due yet: spin when the slot is near (bounded by
				// spinWait), else sleep most of the way.
				if wait > int64(spinWait) {
					time.Sleep(time.Duration(wait) - spinWait/2)
				}
				continue
			}
			k = pc.due(now, k)
		}
		q, err := x.sock.Transmit(x.win[x.pos : x.pos+uint64(k)])
		if q > 0 {
			*queued += uint64(q)
			x.pos = (x.pos + uint64(q)) % x.k
			if paced {
				pc.took(q)
			}
			stalled = 0
		}
		if err != nil {
			return fmt.Errorf("loadgen: AF_XDP transmit on %s: %w", o.From.Link, err)
		}
		if q == 0 {
			// No free TX frame: the kernel has not completed the ones in
			// flight yet. Transmit kicked it; retry, then back off.
			if stalled == 0 {
				stallSince = now
			}
			if now-stallSince > int64(xskStall) {
				return fmt.Errorf("loadgen: AF_XDP transmit on %s: no frame completed for %v (link down?)", o.From.Link, xskStall)
			}
			if stalled++; stalled > xskRetries {
				time.Sleep(xskBackoff)
			}
		}
	}
	return nil
}
