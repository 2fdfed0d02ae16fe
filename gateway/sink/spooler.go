package sink

// The spooler puts a Kafka or NATS sink's disk spool (spool.go) between
// the sink's writer goroutine and the broker.
//
// Flow. For each slab the writer pops, the spooler either sends it (hands
// it to the output, as without a spool) or stores it: appends its records
// to the spool and gives the slab back to its worker at once. It stores
// while the spool holds records not yet replayed (so records leave in the
// order they came), and while the sink is congested: the output reports
// the broker down (NATS), or half the sink's slabs are held by the client
// awaiting acks (what the memory buffer can hold; Kafka has no other sign
// of an absent broker). Once not congested, it replays: reads records from
// the spool's head into replay slabs of its own (owner -1) and sends
// them, with the message id each record was given when it was first sent
// or stored, so that a replay of a record the broker already has is a
// duplicate the broker drops (NATS: Nats-Msg-Id in the stream's duplicate
// window; Kafka: at least once). A replay slab's records count as
// delivered in the spool (the acked offset) when it and every replay slab
// before it are back.
//
// A record the broker fails (delivery_timeout, or given up at stop) is
// not counted Failed: the output marks it in the slab's slabSpool, and
// when the slab comes back the spooler appends it to the spool again,
// with its message id. A record the spool cannot take (full) is dropped:
// counted in SpoolDropped and in Dropped (new records) or Failed (records
// the broker failed).
//
// Stop. The writer drains its ring as usual (sending or storing), then
// the spooler waits up to min(delivery_timeout, 5s) for the records in
// flight (not when the broker is down), gives up on the rest (the output
// fails them at once, and they go to the spool), and closes the spool;
// the next start replays it.
//
// Accounting. Records the spool holds are neither lost nor delivered:
// for each sink, at any time,
//
//	records Added + SpoolRecovered = Records + Dropped + TooBig + Failed
//	                                 + Spooled + InFlight + (in slabs)
//
// where SpoolRecovered is what the spool held at start, Spooled what it
// holds now (not yet replayed), InFlight what the client holds (replayed
// records included), and the last term the records in the workers' and
// the ring's slabs (0 after Close).
//
// Concurrency: everything here runs on the sink's writer goroutine, but
// slabSpool.failed, which the output's resolvers set (each record's entry
// by the one resolver that resolves it, before the slab's last settle;
// the writer reads it after the slab came back through done), and the
// counts, which Stats reads.

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/xgate/xgate/gateway/sink/output"
)

const (
	// spoolReplaySlabs is how many replay slabs a spooler has.
	spoolReplaySlabs = 4
	// spoolTickEvery is how often the writer wakes the spooler while it
	// has work (replay, room for waiting slabs, acks to save).
	spoolTickEvery = 50 * time.Millisecond
	// spoolStopMargin is what a stop leaves of Close's deadline after the
	// wait for records in flight.
	spoolStopMargin = time.Second
)

// slabSpool is a slab's spool state (slab.spool), made by the spooler
// when it first sends the slab.
type slabSpool struct {
	failed []bool   // per record: the broker failed it
	ids    []string // per record: its message id ("" for none: Kafka)
	replay bool     // a replay slab
	end    int64    // replay: the spool offset after its last record
	done   bool     // replay: back from the output
}

// spoolCounts are the spooler's counters, read by Stats.
type spoolCounts struct {
	records, bytes, oldest     atomic.Int64 // gauges
	replayed, recovered        atomic.Uint64
	dropped, droppedNew, fsync atomic.Uint64
	torn                       atomic.Uint64
}

type spooler struct {
	sk    *sink
	q     *spool
	block bool // on_full block: keep slabs until the spool has room
	limit int  // held slabs at or above this: congested
	held  int  // slabs handed to the output, not yet back
	grace time.Duration

	free        func(*slab) // gives a worker's slab back (set by run)
	replays     []*slab     // free replay slabs
	outstanding []*slab     // replay slabs sent, in spool order
	waiting     []*slab     // block: slabs waiting for room, in order
	stopping    bool

	// From the output (bind): the next message id (nil: records have
	// none), whether the broker is down, and give up on what is in flight.
	msgID  func([]byte) []byte
	down   func() bool
	giveUp func()
	idBuf  []byte

	cnt spoolCounts
}

// spoolOutput is what an output offers the spooler beyond asyncOutput.
type spoolOutput interface {
	GiveUp() // fail every record in flight now
}

func newSpooler(sk *sink, sp Spec) (*spooler, error) {
	q, err := openSpool(sp.Spool.Path, sp.Spool.MaxBytes, sp.Spool.Fsync != "never")
	if err != nil {
		return nil, err
	}
	p := &spooler{
		sk:    sk,
		q:     q,
		block: sp.OnFull == "block",
		limit: max(1, sk.slabs/2),
		grace: min(sp.DeliveryTimeout, 5*time.Second),
		down:  func() bool { return false },
	}
	for range spoolReplaySlabs {
		p.replays = append(p.replays, &slab{
			buf:   make([]byte, 0, sk.slabSize),
			ends:  make([]uint32, 0, sk.slabSize/sinkKeyedRecordIndex),
			owner: -1,
		})
	}
	p.cnt.recovered.Store(uint64(q.unread))
	p.publish()
	return p, nil
}

// bind takes what the spooler needs from the sink's output.
func (p *spooler) bind(out output.Output) {
	if o, ok := out.(interface{ NewMsgID([]byte) []byte }); ok {
		p.msgID = o.NewMsgID
	}
	if o, ok := out.(interface{ Down() bool }); ok {
		p.down = o.Down
	}
	if o, ok := out.(spoolOutput); ok {
		p.giveUp = o.GiveUp
	}
}

// congested: the broker is down, or the client holds half the slabs.
func (p *spooler) congested() bool { return p.held >= p.limit || p.down() }

// deliver sends or stores sl; it reports whether it keeps sl (false: the
// caller gives it back to its worker now).
func (p *spooler) deliver(sl *slab) bool {
	if len(p.waiting) > 0 || p.q.unread > 0 || p.congested() || p.stopping && p.down() {
		if p.block && (len(p.waiting) > 0 || !p.q.prepare(p.slabBytes(sl))) {
			p.waiting = append(p.waiting, sl) // in order, after those waiting
			return true
		}
		p.store(sl)
		return false
	}
	p.send(sl)
	return true
}

// state returns sl's slabSpool, made on first use.
func (p *spooler) state(sl *slab) *slabSpool {
	if sl.spool == nil {
		n := cap(sl.ends)
		sl.spool = &slabSpool{failed: make([]bool, n), ids: make([]string, n)}
	}
	return sl.spool
}

// send hands sl to the output.
func (p *spooler) send(sl *slab) {
	ss := p.state(sl)
	n := len(sl.ends)
	clear(ss.failed[:n])
	if !ss.replay {
		clear(ss.ids[:n])
	}
	p.held++
	p.sk.out.write(sl)
}

// store appends sl's records to the spool, each with a new message id;
// those the spool has no room for are dropped and counted.
func (p *spooler) store(sl *slab) {
	now := nanotime()
	from := 0
	for i, end := range sl.ends {
		var id []byte
		if p.msgID != nil {
			p.idBuf = p.msgID(p.idBuf[:0])
			id = p.idBuf
		}
		if !p.q.append(id, sl.buf[from:end], now) {
			n := uint64(len(sl.ends) - i)
			p.cnt.dropped.Add(n)
			p.cnt.droppedNew.Add(n)
			break
		}
		from = int(end)
	}
}

// slabBytes bounds the spool bytes of sl's records.
func (p *spooler) slabBytes(sl *slab) int64 {
	return int64(len(sl.buf)) + int64(len(sl.ends))*(spoolFrameHeader+spoolRecHeader+255)
}

// retryWaiting stores the waiting slabs the spool has room for now.
func (p *spooler) retryWaiting() {
	for len(p.waiting) > 0 && p.q.prepare(p.slabBytes(p.waiting[0])) {
		sl := p.waiting[0]
		p.waiting = p.waiting[1:]
		p.store(sl)
		p.free(sl)
	}
}

// returned takes sl back from the output: its failed records go to the
// spool again, a replay slab acknowledges its records in the spool. It
// reports whether sl goes back to its worker (false for replay slabs).
func (p *spooler) returned(sl *slab) bool {
	p.held--
	ss := sl.spool
	from := 0
	now := nanotime()
	for i, end := range sl.ends {
		if ss.failed[i] {
			if !p.q.append([]byte(ss.ids[i]), sl.buf[from:end], now) {
				p.cnt.dropped.Add(1)
				p.sk.cnt.failed.Add(1)
			}
		}
		from = int(end)
	}
	if !ss.replay {
		return true
	}
	ss.done = true
	for len(p.outstanding) > 0 && p.outstanding[0].spool.done {
		r := p.outstanding[0]
		p.outstanding = p.outstanding[1:]
		p.q.ack(r.spool.end)
		r.buf, r.ends = r.buf[:0], r.ends[:0]
		p.replays = append(p.replays, r)
	}
	return false
}

// replay sends records from the spool's head while the sink is not
// congested and a replay slab is free.
func (p *spooler) replay() {
	for !p.stopping && p.q.unread > 0 && len(p.replays) > 0 && !p.congested() {
		sl := p.replays[len(p.replays)-1]
		ss := p.state(sl)
		for len(sl.ends) < cap(sl.ends) {
			r, ok, err := p.q.peek()
			if err != nil {
				break // counted by publish
			}
			if !ok {
				break
			}
			if cap(sl.buf)-len(sl.buf) < len(r.rec) {
				if len(sl.ends) > 0 {
					break // the next replay slab takes it
				}
				// A record spooled with a larger buffer than this start's
				// (the slab size comes from buffer): the slab grows to it
				// once, or the spool would never drain.
				sl.buf = slices.Grow(sl.buf, len(r.rec))
			}
			sl.buf = append(sl.buf, r.rec...)
			ss.ids[len(sl.ends)] = string(r.id)
			sl.ends = append(sl.ends, uint32(len(sl.buf)))
			p.q.advance(r)
		}
		if len(sl.ends) == 0 {
			return
		}
		p.replays = p.replays[:len(p.replays)-1]
		ss.replay, ss.done, ss.end = true, false, p.q.read
		p.outstanding = append(p.outstanding, sl)
		p.cnt.replayed.Add(uint64(len(sl.ends)))
		p.send(sl)
	}
}

// afterRound writes what the round spooled (one write and fsync), then
// replays what it can.
func (p *spooler) afterRound() {
	p.retryWaiting()
	p.q.flush() // an error is counted by publish
	p.replay()
	p.publish()
}

// busy reports whether the spooler wants a tick: records to replay or
// to store, acks not yet saved.
func (p *spooler) busy() bool {
	return p.q.unread > 0 || len(p.waiting) > 0 || p.q.acked != p.q.ackedSaved || p.q.wrecs > 0
}

// publish updates the gauges Stats reads, and counts what the spool lost.
func (p *spooler) publish() {
	if q := p.q; q.errs > 0 {
		p.sk.async.noteError(q.lastErr)
		p.sk.cnt.errors.Add(q.errs)
		p.sk.cnt.failed.Add(q.lostRecs)
		q.errs, q.lostRecs, q.lastErr = 0, 0, nil
	}
	p.cnt.records.Store(int64(p.q.unread))
	p.cnt.bytes.Store(p.q.disk)
	p.cnt.oldest.Store(p.q.oldest())
	p.cnt.fsync.Store(p.q.fsyncs)
	p.cnt.torn.Store(p.q.torn)
}

// stop runs after the writer drained its ring at Close: it waits for the
// records in flight a little (not when the broker is down), then gives up
// on them, so that they go to the spool rather than keep Close waiting
// for delivery_timeout. recycle takes the slabs the output gives back.
func (p *spooler) stop(back <-chan *slab, recycle func(*slab)) {
	p.stopping = true
	p.retryWaiting()
	deadline := time.Now().Add(p.grace)
	if by := p.sk.stopBy.Load(); by != 0 {
		// Leave Close's deadline room for giving up, the output's finish
		// and the spool's last write.
		if d := time.Unix(0, by).Add(-spoolStopMargin); d.Before(deadline) {
			deadline = d
		}
	}
	for p.held > 0 && !p.down() && time.Now().Before(deadline) {
		select {
		case sl := <-back:
			recycle(sl)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if p.held > 0 && p.giveUp != nil {
		p.giveUp()
	}
}

// close runs after the output finished and gave every slab back: what
// still waits for room is dropped, the spool written and closed.
func (p *spooler) close() error {
	p.retryWaiting()
	for _, sl := range p.waiting {
		n := uint64(len(sl.ends))
		p.cnt.dropped.Add(n)
		p.cnt.droppedNew.Add(n)
		p.free(sl)
	}
	p.waiting = nil
	err := p.q.close()
	p.publish()
	return err
}
