package sink

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/xgate/xgate/engine/ring"

	"github.com/tidwall/gjson"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/output"
)

// Sinks write decided events out of the process: to a file (NDJSON, with
// fsync policy and rotation by size), to stdout, or forwarded over UDP.
//
// Data path. Each worker owns a Writer. For every sink that wants a
// Decision, Add encodes the record straight into the worker's current slab
// for that sink (a fixed 64 KiB byte buffer); a full slab, and every
// non-empty slab at Flush (end of the worker's batch), is pushed onto the
// sink's MPSC ring. The sink's one writer goroutine pops slabs, writes each
// with one write call (the slab is the buffer: no bufio), and pushes it back
// onto the free ring of the worker it came from (an SPSC ring per worker per
// sink: the writer produces, the worker consumes). Nothing is allocated per
// record or per batch.
//
// Memory. Each worker has a fixed pool of Buffer/slab-size slabs per sink
// (at least two), allocated by New and never grown, so the sinks hold
// at most Buffer × workers × sinks bytes of records (plus a 1/16 record
// index per slab). When a worker finds no free slab — the writer is behind —
// the sink's OnFull policy decides: "drop" counts the record in Dropped and
// goes on at once; "block" waits (yield, then short sleeps) up to
// BlockTimeout for the writer to return a slab, and then drops and counts.
//
// Accounting. For every sink, once the workers have made their last Flush
// and Close has returned nil:
//
//	records Added for it = Records + Dropped + TooBig + Failed
//
// (Failed: records lost to write errors; TooBig: records larger than a slab,
// which are dropped, never written in pieces.) While the sinks run, records
// still in slabs and, for Kafka and NATS, InFlight (handed to the client,
// not yet acknowledged or failed) make up the difference.
//
// Keyed records (Kafka and NATS sinks). These sinks need more than the
// bytes of a line: the schema's key field (Kafka's record key, NATS's
// subject), the verdict, the rule and the receive time. Add writes each
// record as a fixed header, then the rule, the key, the receive time as
// decimal text and the original event bytes (see output.HeaderLen), all copied
// into the slab as for the other sinks, so the worker still allocates
// nothing. The writer goroutine hands the records to the client library
// as views into the slab and keeps the slab until the broker has
// acknowledged or failed every record of it: only then does the slab go
// back to its worker's free ring (released by the output to the writer
// goroutine, async.go, which stays the free ring's only producer). So the
// slab pool bounds the records buffered and in flight together, and a slow
// or absent broker makes the worker's slabs run out, where OnFull applies
// as for any sink: records are dropped and counted, or the worker waits at
// most BlockTimeout. Memory stays bounded and no worker stalls longer.

// Stats are one sink's counters since New.
type Stats struct {
	Name      string // "file:/path", "stdout", "udp:host:port"
	Records   uint64 // records written (file, stdout) or sent (udp)
	Bytes     uint64 // bytes written or sent
	Dropped   uint64 // records dropped because no slab was free (writer behind)
	TooBig    uint64 // records dropped because they are larger than a slab
	Errors    uint64 // failed write, send, fsync, rotate calls
	Failed    uint64 // records lost to write or send errors (Kafka, NATS: not acknowledged within DeliveryTimeout)
	Rotations uint64
	Fsyncs    uint64
	// TornBytes (file) is what opening the file cut off its end: a last
	// record a crash or a full disk left half written.
	TornBytes uint64
	// Replaced counts event members cut out of records because the
	// gateway writes a field of that name (meta, enrich: reserved.go).
	Replaced uint64
	// InFlight (Kafka, NATS) is the records handed to the client and not
	// yet acknowledged or failed: a gauge, 0 once Close has returned nil.
	InFlight uint64
	// LastError (Kafka, NATS) is the last error a record failed or was
	// retried with, "" if none.
	LastError string
	// Down (NATS) says the sink reaches no server now: its records wait in
	// its buffer and are retried until delivery_timeout.
	Down bool

	// The disk spool (Kafka, NATS with spool:; spooler.go). Spool: the
	// sink has one. Spooled: records in it not yet replayed (a gauge);
	// SpoolBytes: its files' bytes; SpoolOldest: when its oldest record
	// not yet replayed was spooled (zero if none); SpoolReplayed: records
	// read back and sent; SpoolDropped: records it had no room for (also
	// counted in Dropped, or in Failed for records the broker failed);
	// SpoolRecovered: records it held at start (left by an earlier run).
	// Its fsyncs count in Fsyncs, the torn bytes cut at start in
	// TornBytes. While the sink runs,
	//	Added + SpoolRecovered = Records + Dropped + TooBig + Failed
	//	                         + Spooled + InFlight + (records in slabs)
	// and after Close the last two are 0.
	Spool                                       bool
	Spooled, SpoolBytes                         uint64
	SpoolOldest                                 time.Time
	SpoolReplayed, SpoolDropped, SpoolRecovered uint64
}

const (
	sinkSlabSize = 64 << 10
	// sinkRecordIndex is the average record size the per-slab record index
	// is sized for: a slab holds at most slabSize/sinkRecordIndex records
	// (1024 in a 64 KiB slab), so the index costs 1/16 of the slab.
	sinkRecordIndex = 64
	// sinkRejectMax is how many bytes of a rejected input an annotated
	// reject keeps.
	sinkRejectMax = 4 << 10
	// sinkPopBatch is how many slabs the writer takes per ring pop.
	sinkPopBatch = 16
	// sinkKeyedRecordIndex is sinkRecordIndex for keyed records (Kafka,
	// NATS), which carry a header, the rule and the key besides the event:
	// 512 records per 64 KiB slab.
	sinkKeyedRecordIndex = 128
)

// Record classes, as bits of sink.classes.
const (
	classPass      = 1 << iota // verdict pass
	classAlert                 // verdict alert (the event passes)
	classDrop                  // verdict drop or block
	classReject                // decode error
	classAggregate             // a window aggregate (aggregate.go)
)

func classOf(d *engine.Decision) uint8 {
	if d.Err != engine.DecodeOK {
		return classReject
	}
	switch d.Action {
	case engine.ActionPass:
		return classPass
	case engine.ActionAlert:
		return classAlert
	default: // drop, block
		return classDrop
	}
}

// slab is a fixed buffer of encoded records.
//
// Ownership. A slab is in exactly one place at any moment, and only its
// owner there touches buf and ends:
//
//  1. on the free ring (SPSC) of worker w for sink s: owned by nobody; only
//     worker w pops it from there;
//  2. Writer.cur[s] of worker w: owned by worker w alone, which appends
//     records to it;
//  3. on the sink's full ring (MPSC): in transit, touched by nobody; the
//     worker's push publishes every byte it wrote (the ring's seq store),
//     and the writer's pop acquires them;
//  4. popped by the sink's writer goroutine: owned by the writer alone,
//     which writes buf out, empties it and pushes it onto owner's free ring
//     (the ring's tail store publishes that the writer is done with it).
//
// So the moves are 1→2 (worker), 2→3 (worker), 3→4 (writer), 4→1 (writer),
// each through one atomic ring operation, and no slab is ever reachable by
// two goroutines that may touch it. owner never changes after New.
// The rings cannot overflow: the full ring holds every slab of every worker
// and each free ring every slab of its worker.
type slab struct {
	buf   []byte   // encoded records; cap is the slab size, never exceeded
	ends  []uint32 // end offset in buf of each record; cap bounds the record count
	owner int      // the worker whose pool this slab belongs to
	since int64    // nanotime of its first record (set by the worker)
	// view is the slab as a Kafka or NATS output sees it (async.go), made
	// on the slab's first write and touched only by the slab's owner of
	// state 4.
	view *output.Slab
	// spool is the spooler's state for this slab (spooler.go), nil
	// without a spool; owned as view is.
	spool *slabSpool
}

func (sl *slab) room(need int) bool {
	return cap(sl.buf)-len(sl.buf) >= need && len(sl.ends) < cap(sl.ends)
}

// workerCounts are counted by a worker (atomically, since Stats reads them
// from anywhere; only on the drop paths, never per written record), padded
// so that workers do not share a cache line.
type workerCounts struct {
	dropped atomic.Uint64
	tooBig  atomic.Uint64
	_       [48]byte
}

// sinkCounts are counted by the sink's writer goroutine.
type sinkCounts struct {
	records, bytes, errors, failed, rotations, fsyncs, tornCut, replaced atomic.Uint64
}

// sinkOutput is where a sink's writer goroutine puts slabs. Only the writer
// goroutine calls write, idle and finish; abort may be called from Close
// concurrently with them, to make a stuck write return.
type sinkOutput interface {
	write(sl *slab)       // write every record of sl, counting
	afterRound(now int64) // after a round of writes (fsync policy)
	idle(now int64)       // the ring is empty (interval fsync)
	tick() time.Duration  // how often idle wants to run; 0 = never
	finish() error        // last call: flush, fsync, close
	abort()               // close the underlying file or socket now
}

// sink is one configured output.
type sink struct {
	// stopBy is Close's deadline (unix ns; 0: none), set before stop is
	// closed: a spool's wait for records in flight ends before it, so
	// they are spooled, not cut off with the process.
	stopBy    atomic.Int64
	name      string
	classes   uint8
	annotated bool
	newline   bool // records end in '\n' (file, stdout; not udp)
	block     bool
	blockFor  time.Duration
	slabSize  int
	slabs     int // in the whole pool: every worker's

	// Keyed records (kafka, nats): keyPath is the key field as a gjson
	// path (escaped, so that gjson reads every character literally).
	keyed   bool
	keyPath string
	async   *asyncOutput // out, when it is one; nil otherwise
	spool   *spooler     // the disk spool (kafka, nats), nil if none

	// Metadata (meta.go): metaOn when any field is selected; metaWant the
	// fields of a raw record, metaAnn those of an annotated one.
	metaOn   bool
	metaWant [numMeta]bool
	metaAnn  [numMeta]bool
	// reserved are the field names enrich: may add (Spec.Reserved).
	reserved []string
	// gwJSON is the gateway id as a JSON string (quotes included), for
	// the meta field gateway_id and aggregate records.
	gwJSON []byte

	full  *ring.MPSC[*slab]   // workers → writer
	free  []*ring.SPSC[*slab] // per worker: writer → worker
	wcnt  []workerCounts      // per worker
	cnt   sinkCounts
	out   sinkOutput
	wake  chan struct{} // capacity 1: "the full ring may have slabs"
	stop  chan struct{} // closed by Close
	done  chan struct{} // closed when the writer goroutine has finished
	final error         // finish's error; read after done is closed
}

// Sinks is the set of configured sinks and their writer goroutines.
type Sinks struct {
	sinks     []*sink
	writers   []*Writer // one per worker, then the emitter's (aggregate.go)
	closeOnce sync.Once
	routes    routeSet // routing by rule (SetRoutes); nil: none
}

// Writer is one worker's handle on all sinks. It is not safe for
// concurrent use: exactly one goroutine (the worker) calls Add and Flush.
type Writer struct {
	id    int
	sinks []*sink
	cur   []*slab // per sink: the slab being filled (state 2), or nil
	// stalled, per sink with OnFull "block": a wait timed out and no slab
	// has come back since. The worker then drops at once instead of waiting
	// BlockTimeout for every record of a sink that is stuck.
	stalled []bool
	routes  *routeSet // the Sinks' routing by rule
	// Receive times of keyed records and of meta rx_time: monoToWall
	// converts an XDP timestamp (CLOCK_MONOTONIC) to ns since the Unix
	// epoch, refreshed on every Flush; batchWall is the wall clock read by
	// the batch's first such record without an XDP timestamp (0: not read
	// yet). timed: some sink needs receive times.
	timed      bool
	monoToWall int64
	batchWall  int64
}

// New checks specs (Check), fills in their defaults (Spec.WithDefaults),
// opens the files and sockets, allocates every
// slab and starts one writer goroutine per sink. workers is the number of
// Writers (one per worker goroutine).
func New(specs []Spec, workers int) (*Sinks, error) {
	if workers < 1 {
		return nil, fmt.Errorf("sinks: %d workers: want at least 1", workers)
	}
	if workers > 1<<16 {
		return nil, fmt.Errorf("sinks: %d workers: want at most %d", workers, 1<<16)
	}
	if errs := Check(specs, nil); len(errs) > 0 {
		joined := make([]error, len(errs))
		for i, e := range errs {
			joined[i] = e
		}
		return nil, errors.Join(joined...)
	}
	norm := make([]Spec, len(specs))
	for i, sp := range specs {
		norm[i] = sp.WithDefaults()
	}
	s := &Sinks{}
	for i, sp := range norm {
		sk, err := newSink(i, sp, workers)
		if err != nil {
			for _, o := range s.sinks {
				o.out.abort()
			}
			return nil, err
		}
		s.sinks = append(s.sinks, sk)
	}
	timed := false
	for _, sk := range s.sinks {
		timed = timed || sk.timed()
	}
	s.writers = make([]*Writer, workers+1)
	for w := range s.writers {
		s.writers[w] = &Writer{
			id:         w,
			sinks:      s.sinks,
			cur:        make([]*slab, len(s.sinks)),
			stalled:    make([]bool, len(s.sinks)),
			routes:     &s.routes,
			timed:      timed,
			monoToWall: monoToWall(),
		}
	}
	for _, sk := range s.sinks {
		go sk.run()
	}
	return s, nil
}

func newSink(i int, sp Spec, workers int) (*sink, error) {
	sk := &sink{
		annotated: sp.Format == "annotated",
		newline:   sp.Type == "file" || sp.Type == "stdout",
		block:     sp.OnFull == "block",
		blockFor:  sp.BlockTimeout,
		keyed:     sp.keyed(),
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	sk.reserved = sp.Reserved
	sk.gwJSON = appendJSONString(nil, []byte(sp.GatewayID))
	if sp.Meta.On() {
		sk.metaOn = true
		sk.metaWant = sp.Meta.bits()
		sk.metaAnn = annotatedMeta(sk.metaWant)
	}
	index := sinkRecordIndex
	if sk.keyed {
		sk.keyPath = gjsonPath(sp.KeyPath)
		index = sinkKeyedRecordIndex
	}
	switch sp.What {
	case "passed":
		sk.classes = classPass | classAlert
	case "alerts":
		sk.classes = classAlert
	case "dropped":
		sk.classes = classDrop
	case "rejects":
		sk.classes = classReject
	case "all":
		sk.classes = classPass | classAlert | classDrop | classReject
	case "routed":
		sk.classes = 0 // only what rules route to it (to:)
	case "aggregates":
		sk.classes = classAggregate
	}
	size, n := sinkSlabSize, int(sp.Buffer)/sinkSlabSize
	if n < 2 {
		size, n = int(sp.Buffer)/2, 2
	}
	sk.slabSize = size
	// The emitter's writer (the last) has slabs only in sinks of
	// aggregates: it writes nothing else.
	emitSlabs := 0
	if sk.classes&classAggregate != 0 {
		emitSlabs = n
	}
	sk.slabs = n*workers + emitSlabs
	var err error
	if sk.full, err = ring.NewMPSC[*slab](ceilPow2(max(2, sk.slabs))); err != nil {
		return nil, &SpecError{i, "buffer", err.Error()}
	}
	sk.free = make([]*ring.SPSC[*slab], workers+1)
	sk.wcnt = make([]workerCounts, workers+1)
	for w := range sk.free {
		if sk.free[w], err = ring.NewSPSC[*slab](ceilPow2(n)); err != nil {
			return nil, &SpecError{i, "buffer", err.Error()}
		}
		slabs := n
		if w == workers {
			slabs = emitSlabs
		}
		for range slabs {
			sk.free[w].Push(&slab{
				buf:   make([]byte, 0, size),
				ends:  make([]uint32, 0, size/index),
				owner: w,
			})
		}
	}
	sk.name = sp.Label()
	if sp.Spool.Path != "" {
		// Before the output, which sizes its channels by the slabs (the
		// replay slabs are some).
		if sk.spool, err = newSpooler(sk, sp); err != nil {
			return nil, fmt.Errorf("sinks[%d] (%s): %w", i, sk.name, err)
		}
		sk.slabs += spoolReplaySlabs
	}
	switch sp.Type {
	case "file":
		sk.out, err = openFileOutput(sk, sp)
	case "stdout":
		sk.out = newStdoutOutput(sk)
	case "udp":
		sk.out, err = dialUDPOutput(sk, sp)
	case "kafka", "nats":
		if sk.async, err = newAsyncOutput(sk, sp); err == nil {
			sk.out = sk.async
		}
	}
	if err != nil {
		if sk.spool != nil {
			sk.spool.q.Close()
		}
		return nil, fmt.Errorf("sinks[%d] (%s): %w", i, sk.name, err)
	}
	if sk.spool != nil {
		sk.spool.bind(sk.async.out)
	}
	return sk, nil
}

// slabRecords is how many records one slab of the sink holds at most.
func (sk *sink) slabRecords() int {
	if sk.keyed {
		return sk.slabSize / sinkKeyedRecordIndex
	}
	return sk.slabSize / sinkRecordIndex
}

// timed reports whether the sink's records need the receive time.
func (sk *sink) timed() bool { return sk.keyed || sk.metaWant[metaRxTime] }

func ceilPow2(n int) int {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(n-1))
}

// Writer returns the Writer of worker (0 ≤ worker < workers).
func (s *Sinks) Writer(worker int) *Writer { return s.writers[worker] }

// Add encodes d for every sink that wants it into this worker's current
// slab of that sink, copying every byte it keeps (d.Raw may be reused as
// soon as Add returns). A sink wants d when its what: selects d's verdict
// or d's deciding rule routes to it (SetRoutes); it gets d once either way.
// Add never allocates (but for a key field written with JSON escapes, which
// gjson unescapes into a new string); it blocks only for sinks with OnFull
// "block", at most their BlockTimeout.
//
// Keyed records (Kafka, NATS) get the time the worker's current batch met
// its first keyed record as their receive time; AddAt takes the packet's,
// AddFrom everything the worker knows of the datagram.
func (w *Writer) Add(d *engine.Decision) { w.AddFrom(d, &Origin{Queue: -1}) }

// AddAt is Add with the receive time of d's datagram: rxNs is the XDP
// program's timestamp (CLOCK_MONOTONIC ns, as in the AF_XDP metadata), 0
// when there is none. Keyed records carry it as ns since the Unix epoch.
func (w *Writer) AddAt(d *engine.Decision, rxNs uint64) {
	w.AddFrom(d, &Origin{RxNs: rxNs, Queue: -1})
}

// AddFrom is Add with the origin of d's datagram (source, receive time,
// queue), for the sinks' metadata (meta.go). o is not kept.
func (w *Writer) AddFrom(d *engine.Decision, o *Origin) {
	c := classOf(d)
	routed := w.routedTo(d)
	ro := recOrigin{o: o}
	for i, sk := range w.sinks {
		if sk.classes&c == 0 && (i >= maxRouted || routed&(1<<i) == 0) {
			continue
		}
		var need int
		if sk.keyed {
			need = keyedBound(d, c)
		} else {
			need = sk.bound(d, c) + sk.metaBound(d)
		}
		sl := w.slabFor(i, sk, need)
		if sl == nil {
			continue
		}
		if ro.rxWall == 0 && sk.timed() {
			ro.rxWall = w.rxWall(o.RxNs)
		}
		if sk.keyed {
			sl.buf = sk.encodeKeyed(sl.buf, d, c, &ro)
		} else {
			sl.buf = sk.encode(sl.buf, d, c, &ro)
		}
		sl.ends = append(sl.ends, uint32(len(sl.buf)))
	}
}

// rxWall returns the receive time of a keyed record in ns since the Unix
// epoch.
func (w *Writer) rxWall(rxNs uint64) int64 {
	if rxNs != 0 {
		return int64(rxNs) + w.monoToWall
	}
	if w.batchWall == 0 {
		w.batchWall = time.Now().UnixNano()
	}
	return w.batchWall
}

// newBatch forgets the batch's receive time and refreshes the clock
// offset (NTP may step the wall clock; the monotonic one runs on).
func (w *Writer) newBatch() {
	if w.timed {
		w.batchWall = 0
		w.monoToWall = monoToWall()
	}
}

// monoToWall is the wall clock minus CLOCK_MONOTONIC, in ns.
func monoToWall() int64 {
	mono := monotonicNs()
	return time.Now().UnixNano() - int64(mono)
}

// monotonicNs reads CLOCK_MONOTONIC, the clock of the XDP program's
// bpf_ktime_get_ns (the receive timestamps AddAt takes).
func monotonicNs() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail with a valid pointer
	return uint64(ts.Nano())
}

// slabFor returns the slab of sink i with room for a record of need
// bytes, nil (counted) when it is too big for any slab or none is free.
func (w *Writer) slabFor(i int, sk *sink, need int) *slab {
	if need > sk.slabSize {
		sk.wcnt[w.id].tooBig.Add(1)
		return nil
	}
	sl := w.cur[i]
	if sl == nil || !sl.room(need) {
		if sl = w.next(i, sk); sl == nil {
			sk.wcnt[w.id].dropped.Add(1)
			return nil
		}
	}
	if len(sl.ends) == 0 {
		sl.since = nanotime() // once per slab, not per record
	}
	return sl
}

// next hands the current slab of sink i (if any) over to the writer and
// takes a free one, waiting for it if the sink blocks; nil when none is free.
func (w *Writer) next(i int, sk *sink) *slab {
	if sl := w.cur[i]; sl != nil {
		if len(sl.ends) == 0 {
			return sl // an empty slab has room for any record up to slabSize
		}
		w.cur[i] = nil
		sk.handover(sl)
	}
	sl, ok := sk.free[w.id].Pop()
	if !ok && sk.block && !w.stalled[i] {
		sl, ok = sk.waitFree(w.id)
		w.stalled[i] = !ok
	}
	if !ok {
		return nil
	}
	w.stalled[i] = false
	w.cur[i] = sl
	return sl
}

// sinkMaxHold bounds how long Flush keeps a partly filled slab back while
// the writer is busy (a variable so that a test can take time out of it).
var sinkMaxHold = 2 * time.Millisecond

// Flush ends a worker batch. It hands each non-empty current slab over to
// its sink's writer, unless the writer still has slabs to write and this one
// is younger than sinkMaxHold: then the worker keeps filling it (handing it
// over would only queue it). Small batches (a few datagrams per receive)
// would otherwise use up the worker's slabs one per batch whenever the
// writer falls behind, and records would be dropped with most of the
// buffer empty.
//
// Kafka and NATS sinks keep a slab until the broker has acknowledged all
// of it, so for them the worker always fills a slab for up to sinkMaxHold:
// a slab per small batch would put few records in flight per slab, and
// the pool would run dry long before the memory it bounds was used.
func (w *Writer) Flush() {
	w.newBatch()
	var now int64
	for i, sl := range w.cur {
		if sl == nil || len(sl.ends) == 0 {
			continue
		}
		sk := w.sinks[i]
		if sk.async != nil || sk.full.Len() > 0 {
			if now == 0 {
				now = nanotime()
			}
			if now-sl.since < int64(sinkMaxHold) {
				continue
			}
		}
		w.cur[i] = nil
		sk.handover(sl)
	}
}

// FlushAll hands every non-empty current slab over: call it when the worker
// is idle (so no record waits for more traffic) and before it stops (Close
// drains only what was handed over).
func (w *Writer) FlushAll() {
	w.newBatch()
	for i, sl := range w.cur {
		if sl != nil && len(sl.ends) > 0 {
			w.cur[i] = nil
			w.sinks[i].handover(sl)
		}
	}
}

// handover moves sl from its worker to the full ring and wakes the writer.
func (sk *sink) handover(sl *slab) {
	if !sk.full.TryPush(sl) {
		// Cannot happen: the ring has room for every slab of every worker.
		panic("gateway: sink ring smaller than its slab pool")
	}
	select {
	case sk.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// waitFree polls worker's free ring until a slab comes back or BlockTimeout
// passes: yields first, then sleeps in short steps.
func (sk *sink) waitFree(worker int) (*slab, bool) {
	deadline := time.Now().Add(sk.blockFor)
	for spin := 0; ; spin++ {
		if spin < 64 {
			runtime.Gosched()
		} else {
			time.Sleep(20 * time.Microsecond)
		}
		if sl, ok := sk.free[worker].Pop(); ok {
			return sl, true
		}
		if spin%16 == 15 && time.Now().After(deadline) {
			return nil, false
		}
	}
}

// run is the sink's writer goroutine.
func (sk *sink) run() {
	defer close(sk.done)
	var batch [sinkPopBatch]*slab
	// The output's tick (a file's fsync interval) is a timer armed by a
	// round that wrote, and again while the output is still dirty: an idle
	// sink wakes no one.
	every := sk.out.tick()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	armed := false
	arm := func() {
		if every > 0 && !armed {
			timer.Reset(every)
			armed = true
		}
	}
	var back <-chan *slab // slabs an async output is done with
	if sk.async != nil {
		back = sk.async.done()
	}
	free := func(sl *slab) {
		sl.buf, sl.ends = sl.buf[:0], sl.ends[:0]
		sk.free[sl.owner].Push(sl) // cannot fail: the ring holds the whole pool
	}
	recycle := free
	// With a spool, slabs go through the spooler (spooler.go), which
	// wants a tick while it has records to replay or to store.
	sp := sk.spool
	var spoolTick <-chan time.Time
	var spoolTimer *time.Timer
	spoolArmed := false
	armSpool := func() {}
	if sp != nil {
		sp.free = free
		recycle = sp.returned // which gives back the worker slabs
		spoolTimer = time.NewTimer(time.Hour)
		spoolTimer.Stop()
		defer spoolTimer.Stop()
		spoolTick = spoolTimer.C
		armSpool = func() {
			if !spoolArmed && sp.busy() {
				spoolTimer.Reset(spoolTickEvery)
				spoolArmed = true
			}
		}
		sp.replay() // what a previous run left
		armSpool()
	}
	returned := func() {
		for {
			select {
			case sl := <-back:
				recycle(sl)
			default:
				return
			}
		}
	}
	round := func() bool {
		returned()
		n := sk.full.PopBatch(batch[:])
		for _, sl := range batch[:n] {
			switch {
			case sp != nil:
				if !sp.deliver(sl) {
					free(sl)
				}
			default:
				sk.out.write(sl)
				if sk.async == nil {
					recycle(sl)
				}
			}
		}
		clear(batch[:n])
		if n > 0 {
			sk.out.afterRound(nanotime())
			arm()
		}
		if sp != nil {
			sp.afterRound()
			armSpool()
		}
		return n > 0
	}
	for {
		if round() {
			continue
		}
		select {
		case <-sk.wake:
		case sl := <-back:
			recycle(sl)
			if sp != nil {
				returned()
				sp.afterRound()
				armSpool()
			}
		case <-spoolTick:
			spoolArmed = false
			sp.afterRound()
			armSpool()
		case <-timer.C:
			armed = false
			sk.out.idle(nanotime())
			if d, ok := sk.out.(interface{ isDirty() bool }); ok && d.isDirty() {
				arm()
			}
		case <-sk.stop:
			if sp != nil {
				sp.stopping = true // replay no more: what is left stays spooled
			}
			for round() {
			}
			if sp != nil {
				sp.stop(back, recycle)
			}
			sk.final = sk.out.finish()
			returned()
			if sp != nil {
				if err := sp.close(); err != nil {
					sk.final = errors.Join(sk.final, err)
				}
			}
			return
		}
	}
}

func nanotime() int64 { return time.Now().UnixNano() }

// Close stops the writers after they have written every slab already
// handed over (workers must have called Flush and stopped), then fsyncs
// (unless "never") and closes files and sockets; Kafka and NATS sinks
// first wait until the broker has acknowledged every record, or
// DeliveryTimeout has failed it. If ctx ends first, it closes the files
// and sockets under the stuck writers (so their writes fail and the
// goroutines end; a Kafka or NATS sink stops retrying and counts what is
// left failed) and returns an error wrapping ctx.Err().
// Records still in a worker's unflushed slab are not written.
func (s *Sinks) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		for _, sk := range s.sinks {
			if d, ok := ctx.Deadline(); ok {
				sk.stopBy.Store(d.UnixNano()) // the spooler's wait ends before it
			}
			close(sk.stop)
		}
	})
	var errs []error
	for i, sk := range s.sinks {
		select {
		case <-sk.done:
			if sk.final != nil {
				errs = append(errs, fmt.Errorf("sinks[%d] (%s): %w", i, sk.name, sk.final))
			}
		case <-ctx.Done():
			var stuck []string
			for _, o := range s.sinks[i:] {
				select {
				case <-o.done:
				default:
					stuck = append(stuck, o.name)
					o.out.abort()
				}
			}
			return fmt.Errorf("close sinks: %v still writing: %w", stuck, ctx.Err())
		}
	}
	return errors.Join(errs...)
}

// Stats returns every sink's counters, in the order of the specs.
func (s *Sinks) Stats() []Stats {
	out := make([]Stats, len(s.sinks))
	for i, sk := range s.sinks {
		st := Stats{
			Name:      sk.name,
			Records:   sk.cnt.records.Load(),
			Bytes:     sk.cnt.bytes.Load(),
			Errors:    sk.cnt.errors.Load(),
			Failed:    sk.cnt.failed.Load(),
			Rotations: sk.cnt.rotations.Load(),
			Fsyncs:    sk.cnt.fsyncs.Load(),
			TornBytes: sk.cnt.tornCut.Load(),
			Replaced:  sk.cnt.replaced.Load(),
		}
		if p := sk.spool; p != nil {
			st.Spool = true
			st.Spooled = uint64(p.cnt.records.Load())
			st.SpoolBytes = uint64(p.cnt.bytes.Load())
			if ns := p.cnt.oldest.Load(); ns != 0 {
				st.SpoolOldest = time.Unix(0, ns)
			}
			st.SpoolReplayed = p.cnt.replayed.Load()
			st.SpoolDropped = p.cnt.dropped.Load()
			st.SpoolRecovered = p.cnt.recovered.Load()
			st.Dropped += p.cnt.droppedNew.Load()
			st.Fsyncs += p.cnt.fsync.Load()
			st.TornBytes += p.cnt.torn.Load()
		}
		if sk.async != nil {
			st.Down = sk.async.down()
			st.InFlight = sk.async.inFlight()
			if err := sk.async.lastError(); err != nil {
				st.LastError = err.Error()
			}
		}
		for w := range sk.wcnt {
			st.Dropped += sk.wcnt[w].dropped.Load()
			st.TooBig += sk.wcnt[w].tooBig.Load()
		}
		out[i] = st
	}
	return out
}

// countWritten counts the outcome of writing sl.buf[from:from+n] (err
// non-nil if short) where the chunk ends at record index recEnd (exclusive)
// and starts at record index recStart.
func (sk *sink) countWritten(sl *slab, from, n, recStart, recEnd int, err error) {
	sk.cnt.bytes.Add(uint64(n))
	done := recEnd - recStart
	if err != nil {
		sk.cnt.errors.Add(1)
		done = 0
		for _, e := range sl.ends[recStart:recEnd] {
			if int(e) > from+n {
				break
			}
			done++
		}
		sk.cnt.failed.Add(uint64(recEnd - recStart - done))
	}
	sk.cnt.records.Add(uint64(done))
}

// ---------------------------------------------------------------------------
// Encoding. bound returns an upper bound of what encode appends, so that Add
// can check the room first and encode can append without reallocating.

func (sk *sink) bound(d *engine.Decision, c uint8) int {
	if !sk.annotated {
		if c == classReject {
			return 2*len(d.Raw) + 1 // CR and LF escaped: one line
		}
		return len(d.Raw) + len(d.Extra) + 1 // compacted: never longer
	}
	if c == classReject {
		// {"error":"","raw":"","truncated":true}\n
		return 48 + len(d.Err.String()) + 6*min(len(d.Raw), sinkRejectMax)
	}
	// {"verdict":"","rule":"","value":,"block_ms":,"event":}\n is 62 bytes,
	// the verdict at most 5, the value 26, block_ms 20: 160 leaves room.
	return 160 + 6*len(d.Rule) + len(d.Raw) + len(d.Extra)
}

func (sk *sink) encode(b []byte, d *engine.Decision, c uint8, ro *recOrigin) []byte {
	switch {
	case !sk.annotated:
		// One record per line, whatever the datagram held: a pretty-printed
		// event is compacted (the same JSON), a reject's line breaks are
		// escaped, so no line of the output is a record no rule decided.
		at := len(b)
		b = engine.AppendOneLine(b, d.Raw)
		if c != classReject {
			b = sk.stripReserved(b, at, true)
			b = withExtra(b, at, d.Extra)
			if sk.metaOn {
				b = sk.appendMetaRaw(b, at, d, c, ro)
			}
		}
	case c == classReject:
		b = append(b, `{"error":"`...)
		b = append(b, d.Err.String()...)
		b = append(b, `","raw":`...)
		raw := d.Raw
		if len(raw) > sinkRejectMax {
			raw = raw[:sinkRejectMax]
		}
		b = appendJSONString(b, raw)
		if len(raw) < len(d.Raw) {
			b = append(b, `,"truncated":true`...)
		}
		if sk.metaOn {
			b = sk.appendMetaFields(b, d, c, ro, &sk.metaAnn)
		}
		b = append(b, '}')
	default:
		b = append(b, `{"verdict":"`...)
		b = append(b, d.Action.String()...)
		b = append(b, `","rule":`...)
		b = appendJSONString(b, unsafe.Slice(unsafe.StringData(d.Rule), len(d.Rule)))
		b = append(b, `,"value":`...)
		b = appendJSONFloat(b, d.Value)
		if d.Action == engine.ActionBlock {
			b = append(b, `,"block_ms":`...)
			b = strconv.AppendInt(b, d.Block.Milliseconds(), 10)
		}
		if sk.metaOn {
			b = sk.appendMetaFields(b, d, c, ro, &sk.metaAnn)
		}
		b = append(b, `,"event":`...)
		at := len(b)
		b = appendOneLine(b, d.Raw)
		b = sk.stripReserved(b, at, false)
		b = withExtra(b, at, d.Extra)
		b = append(b, '}')
	}
	if sk.newline {
		b = append(b, '\n')
	}
	return b
}

// appendOneLine appends a JSON value, turning CR and LF into spaces: in
// valid JSON they can only be whitespace between tokens (inside strings they
// must be escaped), so the value stays the same and fits on one line.
func appendOneLine(b, v []byte) []byte {
	n := len(b)
	b = append(b, v...)
	for _, c := range [2]byte{'\n', '\r'} {
		for i := n; ; {
			j := bytes.IndexByte(b[i:], c)
			if j < 0 {
				break
			}
			b[i+j] = ' '
			i += j + 1
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, U+2028/2029 escaped (for JavaScript readers),
// invalid UTF-8 replaced by \ufffd. At most 6 bytes per input byte plus 2.
func appendJSONString(b, s []byte) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendJSONFloat appends v as encoding/json would (null for NaN and ±Inf,
// which JSON cannot express). At most 26 bytes.
func appendJSONFloat(b []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, "null"...)
	}
	fmtc := byte('f')
	if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
		fmtc = 'e'
	}
	return strconv.AppendFloat(b, v, fmtc, -1, 64)
}

// ---------------------------------------------------------------------------
// Keyed records (Kafka, NATS).

// keyedBound is an upper bound of what encodeKeyed appends: the key is at
// most the event's bytes, the time at most 20 digits.
func keyedBound(d *engine.Decision, c uint8) int {
	rule := len(d.Rule)
	if c == classReject {
		rule = len(d.Err.String())
	}
	// + the added fields, the time (20), source (47), queue (20) and time
	// text (30).
	return output.HeaderLen + rule + 2*len(d.Raw) + len(d.Extra) + 20 + 47 + 20 + len(output.RxTimeLayout)
}

// encodeKeyed appends d as a keyed record (output.HeaderLen's layout; b
// has room for keyedBound).
func (sk *sink) encodeKeyed(b []byte, d *engine.Decision, c uint8, ro *recOrigin) []byte {
	rxWall := ro.rxWall
	at := len(b)
	b = b[:at+output.HeaderLen]
	code, rule := uint8(d.Action), d.Rule
	if c == classReject {
		code, rule = output.VerdictReject, d.Err.String()
	}
	b = append(b, rule...)
	k := len(b)
	switch {
	case c == classReject:
	case d.Key != "":
		// The engine read the key while deciding; the sink's key path is
		// the schema's key (sinkSpecs), so this is the same field.
		b = append(b, d.Key...)
	default:
		b = appendKey(b, d.Raw, sk.keyPath)
	}
	t := len(b)
	b = strconv.AppendInt(b, rxWall, 10)
	tl := len(b) - t
	var sl, ql, tt uint8
	if o := ro.o; sk.metaOn {
		if sk.metaWant[metaSrc] && o.Src.IsValid() {
			n := len(b)
			b = o.Src.AppendTo(b)
			sl = uint8(len(b) - n)
		}
		if sk.metaWant[metaQueue] && o.Queue >= 0 {
			n := len(b)
			b = strconv.AppendInt(b, int64(o.Queue), 10)
			ql = uint8(len(b) - n)
		}
		if sk.metaWant[metaRxTime] {
			b = appendRxTime(b, rxWall)
			tt = 0x80
		}
	}
	v := len(b)
	b = append(b, d.Raw...)
	if c != classReject {
		b = sk.stripReserved(b, v, false)
		b = withExtra(b, v, d.Extra)
	}
	h := b[at : at+output.HeaderLen]
	h[0], h[1] = code, sl
	binary.LittleEndian.PutUint16(h[2:], uint16(len(rule)))
	binary.LittleEndian.PutUint16(h[4:], uint16(t-k))
	h[6], h[7] = uint8(tl), ql|tt
	binary.LittleEndian.PutUint64(h[8:], uint64(rxWall))
	return b
}

// appendKey appends the key field of the event raw as the engine reads
// it: a string's text (unescaped), a number's literal; nothing for any
// other type or when the field is missing. gjson looks it up on a view of
// raw (no copy), and as the engine's decoder, takes the first of
// duplicated keys.
func appendKey(b, raw []byte, path string) []byte {
	if len(raw) == 0 {
		return b
	}
	r := gjson.Get(unsafe.String(unsafe.SliceData(raw), len(raw)), path)
	switch r.Type {
	case gjson.String:
		return append(b, r.Str...)
	case gjson.Number:
		return append(b, r.Raw...)
	}
	return b
}

// gjsonPath escapes every character of a schema path that gjson would read
// as syntax, keeping the dots that separate its components.
func gjsonPath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '.' && c != '_' && c != '-' && !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') && c < utf8.RuneSelf {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}
