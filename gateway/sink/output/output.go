// Package output is the contract between the sink core (gateway/sink: the
// workers' slabs, the writer goroutine, the spool) and the outputs that
// hand keyed records to a broker's client and learn later whether the
// broker took them (gateway/sink/kafka, gateway/sink/nats).
//
// The sink builds an output from its spec (New in the output's package,
// given a Sink and the output's Config) and its writer goroutine calls
// Write with one slab of records at a time. The output keeps the slab
// until every record of it is resolved — acknowledged, counted in
// Records and Bytes, or failed, counted in Errors and Failed (or marked
// for the spool) — and then releases it (Acks.Settled), which gives it
// back to the writer goroutine. So the sink's slab pool bounds the
// records buffered and in flight together.
package output

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Sink is what an output knows of the sink it writes for.
type Sink struct {
	// Slabs is the most slabs the output can hold at once (the sink's
	// pool, the spool's replay slabs included); SlabRecords the most
	// records one of them holds. Their product bounds the records in
	// flight.
	Slabs, SlabRecords int
	Counts             Counts
	// GatewayID names the gateway in the records' headers (and NATS
	// message ids); DeliveryTimeout is how long a record is retried
	// before it fails.
	GatewayID       string
	DeliveryTimeout time.Duration
	TLS             *tls.Config // nil: no TLS
	// Spooled: the sink has a disk spool, so the output starts while no
	// broker is reachable (records go to the spool meanwhile).
	Spooled bool
}

// Counts are the sink's counters that an output bumps as it resolves
// records: atomics of the sink's, read by its Stats from anywhere.
type Counts struct {
	Records, Bytes *atomic.Uint64 // acknowledged records and their bytes
	Errors         *atomic.Uint64 // failed deliveries
	Failed         *atomic.Uint64 // records lost (not spooled again)
}

// Output is a Kafka or NATS output as the sink's writer goroutine drives
// it. Write and Finish run on the writer goroutine only; Abort may come
// from Close's goroutine while they run, to make them return; GiveUp
// (the spool, at stop) from the writer goroutine.
type Output interface {
	// Write hands every record of sl to the client. The output owns sl
	// until it releases it (Acks.Settled, once every record is
	// resolved); sl.Buf and sl.Ends stay as they are until then.
	Write(sl *Slab)
	// Finish waits until every record written is resolved (or given up
	// after Abort) and closes the client; it is the last call.
	Finish() error
	Abort()  // stop retrying and waiting for the broker now
	GiveUp() // fail every record not yet acknowledged now (to the spool)
	// NewMsgID appends the next message id to b (writer goroutine only):
	// the spool's, for the records it stores without sending.
	NewMsgID(b []byte) []byte
	// Down reports whether the output knows it reaches no broker now
	// (NATS tells; Kafka has no such sign and says false).
	Down() bool
	InFlight() uint64
	LastError() error
	NoteError(error)
}

// Slab is one slab of keyed records (record.go) as an output sees it:
// views of the sink's slab, set before each Write.
//
// Ownership: from Write until its release the slab is the output's, and
// only the output's goroutines touch State, IDs and Failed; the sink does
// not touch the slab until the release has given it back.
type Slab struct {
	Buf  []byte   // the records, one after another
	Ends []uint32 // end offset in Buf of each record; cap bounds the count
	// State is the output's own state for this slab (its records as the
	// client wants them), made on the slab's first Write and kept with
	// the slab for the next.
	State any
	// The spool's state of the records (nil without a spool). IDs are
	// their message ids: with Replay (records from the spool) the ones
	// the spool kept, which the output uses; else the output gives each
	// record the next (IDs.AddNext, in record order), so that the spool
	// keeps it. Failed[i] marks record i failed, for the spool to send
	// again (SpoolFailed), and Failing tells the spooler at once.
	IDs     *MsgIDs
	Replay  bool
	Failed  []bool
	Failing *atomic.Bool

	release func() // gives the slab back to the sink's writer goroutine
}

// NewSlab makes the view of one of the sink's slabs; release gives that
// slab back to the writer goroutine and must never block.
func NewSlab(release func()) *Slab { return &Slab{release: release} }

// SpoolFailed marks record i failed for the spool, which sends it again
// (gateway/sink's spooler.go); false without a spool (the caller counts it
// Failed). Called by the one resolver of the record, before it settles.
func (sl *Slab) SpoolFailed(i int) bool {
	if sl.Failed == nil {
		return false
	}
	sl.Failed[i] = true
	sl.Failing.Store(true)
	return true
}

// Acks is the bookkeeping the outputs share: the records handed to the
// client and not yet resolved, the last delivery error, and the release
// of each slab once all of its records are resolved. An output embeds it
// for InFlight, LastError and NoteError. pending and Left.left are
// atomics: records are resolved on the client's goroutines.
type Acks struct {
	pending atomic.Int64
	lastErr atomic.Pointer[error]
}

// Left is an output's count of the records of one slab that are not yet
// resolved (part of the slab's State).
type Left struct {
	Slab *Slab
	left atomic.Int64
}

// Handed counts the n records of l.Slab as handed to the client; call it
// before the first of them is, since it may be resolved at once.
func (a *Acks) Handed(l *Left, n int) {
	l.left.Store(int64(n))
	a.pending.Add(int64(n))
}

// Settled counts one record of l.Slab resolved (acknowledged or failed,
// counted by the caller); the slab's last one releases it.
func (a *Acks) Settled(l *Left) {
	a.pending.Add(-1)
	if l.left.Add(-1) == 0 {
		l.Slab.release()
	}
}

// InFlight is the records handed to the client and not yet resolved.
func (a *Acks) InFlight() uint64 { return uint64(max(0, a.pending.Load())) }

// LastError is the last delivery error, nil if none.
func (a *Acks) LastError() error {
	if p := a.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// NoteError makes err the last error.
func (a *Acks) NoteError(err error) { a.lastErr.Store(&err) }

// Key is a config key that only one sink type has, and whether a config
// of that type (C) sets it to a non-zero value: the sink's checks report
// it on a sink of another type.
type Key[C any] struct {
	Name string
	Set  func(*C) bool
}

// Secret is value, or else the first line of file (a password or token
// kept out of the config).
func Secret(value, file string) (string, error) {
	if file == "" {
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%s: empty", file)
	}
	return line, nil
}
