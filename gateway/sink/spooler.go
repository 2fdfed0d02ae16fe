package sink

// The spooler puts a Kafka or NATS sink's disk spool (gateway/sink/spool) between
// the sink's writer goroutine and the broker.
//
// Flow. For each slab the writer pops, the spooler either sends it (hands
// it to the output, as without a spool) or stores it: appends its records
// to the spool and gives the slab back to its worker at once. It sends
// only while the spool is empty and wholly acknowledged, no record has
// failed since, and the sink is not congested: the output reports the
// broker down (NATS), or half the sink's slabs are held by the client
// awaiting acks (what the memory buffer can hold; Kafka has no other sign
// of an absent broker). Otherwise it stores, so records leave in the order
// they came. Once not congested, it replays: reads records from the
// spool's head into replay slabs of its own (owner -1) and sends them,
// with the message id each record was given when it was first sent or
// stored (NATS: Nats-Msg-Id, which the stream de-duplicates; Kafka: the
// id header, for consumers that do).
//
// Order. A key's records must reach the broker in the order they came,
// also when some fail (delivery_timeout, or given up at stop). So a record
// is never appended to the spool behind records that came after it:
//   - Every slab handed to the output is in order (send order), and slabs
//     are taken back from the output in that order (one that comes back
//     early waits for those before it).
//   - When the spooler first stores while sent slabs are still in flight,
//     or a sent slab comes back with a failed record, it adopts every sent
//     slab in order: appends their records to the spool (the spool is
//     empty then) and marks them read, as if they were replayed. Then
//     stored records follow them, and the spool holds everything after
//     the acked offset in order: the adopted and replayed slabs in flight
//     cover [acked, read) back to back, in send order.
//   - Such a slab that comes back whole moves the acked offset to its end.
//     One with a failed record (and every one after it) does not: the
//     broker's records of it go to the spool's delivered set, and once
//     every slab of [acked, read) is back, the replay rewinds to acked and
//     sends again what the broker does not have.
//
// Franz-go fails a partition's later records with an earlier one, and the
// spooler stops sending as soon as a resolver reports a failure, so what a
// rewind sends again does not overtake a record of its key. A record the
// spool cannot take (full) is dropped and counted: in SpoolDropped and in
// Dropped (new records) or Failed (records the broker failed).
//
// Stop. The writer drains its ring as usual (sending or storing), then
// the spooler waits up to min(delivery_timeout, 5s) for the records in
// flight (not when the broker is down), gives up on the rest (the output
// fails them at once, and they are rewound), and closes the spool; the
// next start replays it.
//
// Accounting. Records the spool holds are neither lost nor delivered:
// for each sink, at any time,
//
//	records Added + SpoolRecovered = Records + Dropped + TooBig + Failed
//	                                 + Spooled + InFlight + (in slabs)
//
// where SpoolRecovered is what the spool held at start, Spooled what it
// holds now that the broker does not have and the client does not hold
// (failed records waiting for the rewind included), InFlight what the
// client holds (replayed records included), and the last term the
// records in the workers' and the ring's slabs (0 after Close).
//
// Concurrency: everything here runs on the sink's writer goroutine, but
// slabSpool.failed and spooler.failing, which the output's resolvers set
// (each record's entry by the one resolver that resolves it, before the
// slab's last settle; the writer reads failed after the slab came back
// through done), and the counts, which Stats reads.

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/xgate/xgate/gateway/sink/output"
	"github.com/xgate/xgate/gateway/sink/spool"
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
	failed []bool        // per record: the broker failed it
	ids    output.MsgIDs // per record: its message id
	offs   []int64       // inSpool: per record, its spool offset
	replay bool          // a replay slab (owner -1)
	// inSpool: its records are in the spool (replayed or adopted) and
	// cover [start, end) with frames frames (records the replay skipped
	// as delivered included); ns is the spool time of the first.
	inSpool    bool
	start, end int64
	frames     int
	ns         int64
	back       bool // back from the output, waiting for those before it
	lost       bool // sent, and the spool had no room to adopt it

	failing *atomic.Bool // the spooler's: set with failed (spoolFailed)
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
	q     *spool.Queue
	block bool // on_full block: keep slabs until the spool has room
	limit int  // held slabs at or above this: congested
	held  int  // slabs handed to the output, not yet back
	grace time.Duration

	free     func(*slab) // gives a worker's slab back (set by run)
	replays  []*slab     // free replay slabs
	order    []*slab     // slabs handed to the output, in send order, not yet taken back
	waiting  []*slab     // block: slabs waiting for room, in order
	stopping bool

	// failing: a resolver failed a record since nothing was in flight
	// (set by resolvers: the spooler stops sending at once).
	failing atomic.Bool
	// resident: slabs in order whose records are in the spool, and the
	// frames of [acked, read). rewinding: one came back with a failed
	// record; failedBack: its failed records and those of the slabs
	// after it (Spooled counts them until the rewind).
	resident, frames int
	rewinding        bool
	rewindNs         int64
	failedBack       int

	// From the output (bind): the next message id, whether the broker is
	// down, and give up on what is in flight.
	msgID  func([]byte) []byte
	down   func() bool
	giveUp func()
	idBuf  []byte

	cnt spoolCounts
}

func newSpooler(sk *sink, sp Spec) (*spooler, error) {
	q, err := spool.Open(sp.Spool.Path, sp.Spool.MaxBytes, sp.Spool.Fsync != "never")
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
		msgID: func(b []byte) []byte { return b },
	}
	for range spoolReplaySlabs {
		p.replays = append(p.replays, &slab{
			buf:   make([]byte, 0, sk.slabSize),
			ends:  make([]uint32, 0, sk.slabSize/sinkKeyedRecordIndex),
			owner: -1,
		})
	}
	p.cnt.recovered.Store(uint64(q.Unread() - q.DeliveredFrom(q.ReadOffset())))
	p.publish()
	return p, nil
}

// bind takes what the spooler needs from the sink's output.
func (p *spooler) bind(out output.Output) {
	p.msgID, p.down, p.giveUp = out.NewMsgID, out.Down, out.GiveUp
}

// congested: the broker is down, or the client holds half the slabs.
func (p *spooler) congested() bool { return p.held >= p.limit || p.down() }

// sendable: a new slab may go to the broker directly (see Flow).
func (p *spooler) sendable() bool {
	q := p.q
	return len(p.waiting) == 0 && q.Unread() == 0 && q.Acked() == q.Tail() && p.resident == 0 &&
		!p.rewinding && !p.failing.Load() && !p.congested() && !(p.stopping && p.down())
}

// deliver sends or stores sl; it reports whether it keeps sl (false: the
// caller gives it back to its worker now).
func (p *spooler) deliver(sl *slab) bool {
	if p.sendable() {
		p.send(sl)
		return true
	}
	p.adopt() // what is in flight goes before sl in the spool
	if p.block && (len(p.waiting) > 0 || !p.q.Prepare(p.slabBytes(sl))) {
		p.waiting = append(p.waiting, sl) // in order, after those waiting
		return true
	}
	p.store(sl)
	return false
}

// state returns sl's slabSpool, made on first use.
func (p *spooler) state(sl *slab) *slabSpool {
	if sl.spool == nil {
		n := cap(sl.ends)
		sl.spool = &slabSpool{failed: make([]bool, n), failing: &p.failing}
	}
	return sl.spool
}

// send hands sl to the output; a slab not from the spool gets its message
// ids from the output.
func (p *spooler) send(sl *slab) {
	ss := p.state(sl)
	clear(ss.failed[:len(sl.ends)])
	ss.back = false
	if !ss.replay {
		ss.ids.Reset()
		ss.inSpool, ss.lost = false, false
	}
	p.held++
	p.order = append(p.order, sl)
	p.sk.out.write(sl)
}

// adopt appends the records of the sent slabs in order that are not in
// the spool yet, and marks them read (see Order). A slab the spool has no
// room for stays out (lost: what of it fails is dropped and counted); a
// later one that fits is still adopted, which loses nothing of the order
// of what is delivered.
func (p *spooler) adopt() {
	now := nanotime()
	for _, sl := range p.order {
		ss := sl.spool
		if ss.inSpool || ss.lost {
			continue
		}
		if !p.q.Prepare(p.slabBytes(sl)) || ss.ids.Len() != len(sl.ends) {
			ss.lost = true
			continue
		}
		ss.offs = ss.offs[:0]
		from := 0
		for i, end := range sl.ends {
			off, ok := p.q.AppendSent(ss.ids.At(i), sl.buf[from:end], now)
			if !ok {
				// Cannot happen after prepare (and nothing unread: see
				// sendable), but a record must not be in flight twice.
				ss.lost = true
				break
			}
			if i == 0 {
				ss.start = off
			}
			ss.offs = append(ss.offs, off)
			from = int(end)
		}
		if ss.lost {
			continue
		}
		ss.inSpool, ss.end, ss.frames, ss.ns = true, p.q.ReadOffset(), len(sl.ends), now
		p.resident++
		p.frames += len(sl.ends)
	}
}

// store appends sl's records to the spool, each with a new message id;
// those the spool has no room for are dropped and counted.
func (p *spooler) store(sl *slab) {
	now := nanotime()
	from := 0
	for i, end := range sl.ends {
		p.idBuf = p.msgID(p.idBuf[:0])
		if !p.q.Append(p.idBuf, sl.buf[from:end], now) {
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
	return spool.Bound(len(sl.buf), len(sl.ends))
}

// retryWaiting stores the waiting slabs the spool has room for now.
func (p *spooler) retryWaiting() {
	for len(p.waiting) > 0 && p.q.Prepare(p.slabBytes(p.waiting[0])) {
		sl := p.waiting[0]
		p.waiting = p.waiting[1:]
		p.store(sl)
		p.free(sl)
	}
}

// returned takes sl back from the output, then every slab at the front
// of the send order that is back (see Order).
func (p *spooler) returned(sl *slab) {
	p.held--
	sl.spool.back = true
	for len(p.order) > 0 && p.order[0].spool.back {
		s := p.order[0]
		ss := s.spool
		n := len(s.ends)
		failed := slices.Contains(ss.failed[:n], true)
		if failed && !ss.inSpool && !ss.lost {
			p.adopt()
		}
		p.order = slices.Delete(p.order, 0, 1) // a few dozen slabs at most
		switch {
		case ss.inSpool:
			p.settle(s, failed)
		case failed: // lost: the spool had no room
			for i := range n {
				if ss.failed[i] {
					p.cnt.dropped.Add(1)
					p.sk.cnt.failed.Add(1)
				}
			}
		}
		if s.owner >= 0 {
			p.free(s)
		} else {
			s.buf, s.ends = s.buf[:0], s.ends[:0]
			p.replays = append(p.replays, s)
		}
	}
	if len(p.order) == 0 && !p.rewinding {
		p.failing.Store(false)
	}
	p.maybeRewind()
}

// settle takes a slab of [acked, read) back in order: whole, it moves the
// acked offset; with a failed record (or after one), its delivered records
// go to the delivered set, and the rewind waits for the rest.
func (p *spooler) settle(s *slab, failed bool) {
	ss := s.spool
	p.resident--
	if !failed && !p.rewinding {
		p.q.Ack(ss.end)
		p.frames -= ss.frames
		return
	}
	if !p.rewinding {
		p.rewinding, p.rewindNs = true, ss.ns
	}
	for i := range len(s.ends) {
		switch {
		case ss.failed[i]:
			p.failedBack++
		case !p.q.AddDelivered(ss.offs[i]):
			// The delivered set is full: the record is sent again (at
			// least once), so until then it counts as not delivered, and
			// Records does not count it twice.
			p.sk.cnt.records.Add(^uint64(0))
			p.failedBack++
		}
	}
}

// maybeRewind rewinds the replay to the acked offset once every slab of
// [acked, read) is back.
func (p *spooler) maybeRewind() {
	if !p.rewinding || p.resident > 0 {
		return
	}
	p.q.Rewind(p.frames, p.rewindNs)
	p.frames, p.failedBack, p.rewinding = 0, 0, false
	if len(p.order) == 0 {
		p.failing.Store(false)
	}
}

// replay sends records from the spool's head while the sink is not
// congested and a replay slab is free; records the broker has (the
// delivered set) are skipped.
func (p *spooler) replay() {
	for !p.stopping && !p.rewinding && !p.failing.Load() && p.q.Unread() > 0 && len(p.replays) > 0 && !p.congested() {
		sl := p.replays[len(p.replays)-1]
		ss := p.state(sl)
		ss.ids.Reset()
		ss.offs = ss.offs[:0]
		start, frames, ns := p.q.ReadOffset(), 0, int64(0)
		for len(sl.ends) < cap(sl.ends) {
			r, ok, err := p.q.Peek()
			if err != nil || !ok {
				break // an error is counted by publish
			}
			if p.q.IsDelivered(r.Off) {
				p.q.Advance(r)
				frames++
				continue
			}
			if cap(sl.buf)-len(sl.buf) < len(r.Data) {
				if len(sl.ends) > 0 {
					break // the next replay slab takes it
				}
				// A record spooled with a larger buffer than this start's
				// (the slab size comes from buffer): the slab grows to it
				// once, or the spool would never drain.
				sl.buf = slices.Grow(sl.buf, len(r.Data))
			}
			if len(sl.ends) == 0 {
				ns = r.NS
			}
			sl.buf = append(sl.buf, r.Data...)
			ss.ids.Add(r.ID)
			ss.offs = append(ss.offs, r.Off)
			sl.ends = append(sl.ends, uint32(len(sl.buf)))
			p.q.Advance(r)
			frames++
		}
		if len(sl.ends) == 0 {
			// Only delivered records (or none): they join the last slab
			// in flight of [acked, read), or are acknowledged now.
			p.skipped(frames)
			return
		}
		p.replays = p.replays[:len(p.replays)-1]
		ss.replay, ss.inSpool, ss.lost = true, true, false
		ss.start, ss.end, ss.frames, ss.ns = start, p.q.ReadOffset(), frames, ns
		p.resident++
		p.frames += frames
		p.cnt.replayed.Add(uint64(len(sl.ends)))
		p.send(sl)
	}
}

// skipped takes frames delivered records the replay just passed, after
// the last slab of [acked, read).
func (p *spooler) skipped(frames int) {
	if frames == 0 {
		return
	}
	if p.resident == 0 {
		p.q.Ack(p.q.ReadOffset())
		return
	}
	for i := len(p.order) - 1; i >= 0; i-- {
		if ss := p.order[i].spool; ss.inSpool {
			ss.end = p.q.ReadOffset()
			ss.frames += frames
			p.frames += frames
			return
		}
	}
}

// afterRound writes what the round spooled (one write and fsync), then
// replays what it can.
func (p *spooler) afterRound() {
	p.retryWaiting()
	p.q.Flush() // an error is counted by publish
	p.replay()
	p.publish()
}

// busy reports whether the spooler wants a tick: records to replay or
// to store, acks not yet saved.
func (p *spooler) busy() bool {
	q := p.q
	return q.Unread() > 0 || len(p.waiting) > 0 || q.Pending()
}

// publish updates the gauges Stats reads, and counts what the spool lost.
func (p *spooler) publish() {
	q := p.q
	if errs, lost, err := q.TakeLost(); errs > 0 {
		p.sk.async.noteError(err)
		p.sk.cnt.errors.Add(errs)
		p.sk.cnt.failed.Add(lost)
	}
	p.cnt.records.Store(int64(q.Unread() - q.DeliveredFrom(q.ReadOffset()) + p.failedBack))
	p.cnt.bytes.Store(q.DiskBytes())
	p.cnt.oldest.Store(q.Oldest())
	p.cnt.fsync.Store(q.Fsyncs())
	p.cnt.torn.Store(q.TornBytes())
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
	p.maybeRewind()
	err := p.q.Close()
	p.publish()
	return err
}
