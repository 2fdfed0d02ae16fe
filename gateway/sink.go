package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/xgate/xgate/engine"
)

// Sinks write decided events out of the process: to a file (NDJSON, with
// fsync policy and rotation by size), to stdout, or forwarded over UDP.
//
// Data path. Each worker owns a SinkWriter. For every sink that wants a
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
// (at least two), allocated by NewSinks and never grown, so the sinks hold
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
// which are dropped, never written in pieces.)

// SinkSpec configures one sink. Zero values take the documented defaults.
type SinkSpec struct {
	Type    string // "file" | "stdout" | "udp"
	Path    string // file: the file to append to
	Address string // udp: host:port to forward to
	// What selects the records: "passed" (verdict pass or alert: an alerted
	// event passes), "alerts" (alert), "dropped" (drop and block), "rejects"
	// (decode errors) or "all".
	What string
	// Format: "raw" (the original bytes plus '\n'; default for passed) or
	// "annotated" (default otherwise), one JSON object per line:
	//	{"verdict":"alert","rule":"big-payment","value":51234.5,"event":{…}}
	//	{"verdict":"block","rule":"flood","value":0,"block_ms":30000,"event":{…}}
	//	{"error":"invalid_json","raw":"<the bytes as a JSON string>"}
	// Raw rejects are the input as received, so they may span lines.
	// In annotated events, newlines between the tokens of a pretty-printed
	// object become spaces, so each record is one line. A reject's raw
	// string keeps at most the first 4 KiB of the input (then
	// "truncated":true); invalid UTF-8 becomes U+FFFD. UDP sinks send the
	// same records without the trailing newline, one per datagram.
	Format string
	// Fsync (file): "never", "interval" (default: when something was
	// written and FsyncInterval has passed since the last fsync) or
	// "always" (after every round of writes). Close fsyncs unless "never".
	// Ignored for stdout and udp sinks.
	Fsync         string
	FsyncInterval time.Duration // default 1s
	// RotateBytes (file): before a write that would take the file past this
	// size, Path becomes Path.1 (Path.1 becomes Path.2 …, keeping
	// RotateKeep old files). Records are never split across files; a record
	// larger than RotateBytes gets a file of its own. 0 = never rotate.
	RotateBytes int64
	RotateKeep  int // default 5
	// OnFull: "drop" (default: count and drop the record) or "block"
	// (backpressure: the worker waits up to BlockTimeout for the writer,
	// then drops and counts; after such a timeout it drops without waiting
	// until the writer hands a slab back, so a stuck sink costs a worker
	// one BlockTimeout, not one per record).
	OnFull       string
	BlockTimeout time.Duration // default 100ms
	// Buffer is the bytes of slab memory per worker for this sink (default
	// 1 MiB, at least 8 KiB): the bound on memory. A record larger than one
	// slab (64 KiB, or Buffer/2 when Buffer is below 128 KiB) is dropped and
	// counted in TooBig.
	Buffer int
}

// SinkStats are one sink's counters since NewSinks.
type SinkStats struct {
	Name      string // "file:/path", "stdout", "udp:host:port"
	Records   uint64 // records written (file, stdout) or sent (udp)
	Bytes     uint64 // bytes written or sent
	Dropped   uint64 // records dropped because no slab was free (writer behind)
	TooBig    uint64 // records dropped because they are larger than a slab
	Errors    uint64 // failed write, send, fsync, rotate calls
	Failed    uint64 // records lost to write or send errors
	Rotations uint64
	Fsyncs    uint64
}

// SinkSpecError is a configuration error of one sink: Index is its position
// in the slice given to NewSinks (0-based), Field the lower-case name of the
// offending field as in the YAML config ("what", "on_full", …).
type SinkSpecError struct {
	Index int
	Field string
	Msg   string
}

func (e *SinkSpecError) Error() string {
	return fmt.Sprintf("sinks[%d].%s: %s", e.Index, e.Field, e.Msg)
}

const (
	sinkSlabSize        = 64 << 10
	sinkMinBuffer       = 8 << 10
	sinkMaxBuffer       = 1 << 30
	sinkDefaultBuffer   = 1 << 20
	sinkDefaultKeep     = 5
	sinkDefaultInterval = time.Second
	sinkDefaultBlock    = 100 * time.Millisecond
	// sinkRecordIndex is the average record size the per-slab record index
	// is sized for: a slab holds at most slabSize/sinkRecordIndex records
	// (1024 in a 64 KiB slab), so the index costs 1/16 of the slab.
	sinkRecordIndex = 64
	// sinkRejectMax is how many bytes of a rejected input an annotated
	// reject keeps.
	sinkRejectMax = 4 << 10
	// sinkPopBatch is how many slabs the writer takes per ring pop.
	sinkPopBatch = 16
)

// Record classes, as bits of sink.classes.
const (
	classPass   = 1 << iota // verdict pass
	classAlert              // verdict alert (the event passes)
	classDrop               // verdict drop or block
	classReject             // decode error
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
//  2. SinkWriter.cur[s] of worker w: owned by worker w alone, which appends
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
// two goroutines that may touch it. owner never changes after NewSinks.
// The rings cannot overflow: the full ring holds every slab of every worker
// and each free ring every slab of its worker.
type slab struct {
	buf   []byte   // encoded records; cap is the slab size, never exceeded
	ends  []uint32 // end offset in buf of each record; cap bounds the record count
	owner int      // the worker whose pool this slab belongs to
	since int64    // nanotime of its first record (set by the worker)
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
	records, bytes, errors, failed, rotations, fsyncs atomic.Uint64
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
	name      string
	classes   uint8
	annotated bool
	newline   bool // records end in '\n' (file, stdout; not udp)
	block     bool
	blockFor  time.Duration
	slabSize  int

	full  *engine.MPSC[*slab]   // workers → writer
	free  []*engine.SPSC[*slab] // per worker: writer → worker
	wcnt  []workerCounts        // per worker
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
	writers   []*SinkWriter
	closeOnce sync.Once
}

// SinkWriter is one worker's handle on all sinks. It is not safe for
// concurrent use: exactly one goroutine (the worker) calls Add and Flush.
type SinkWriter struct {
	id    int
	sinks []*sink
	cur   []*slab // per sink: the slab being filled (state 2), or nil
	// stalled, per sink with OnFull "block": a wait timed out and no slab
	// has come back since. The worker then drops at once instead of waiting
	// BlockTimeout for every record of a sink that is stuck.
	stalled []bool
}

// NewSinks validates specs, opens the files and sockets, allocates every
// slab and starts one writer goroutine per sink. workers is the number of
// SinkWriters (one per worker goroutine).
func NewSinks(specs []SinkSpec, workers int) (*Sinks, error) {
	if workers < 1 {
		return nil, fmt.Errorf("sinks: %d workers: want at least 1", workers)
	}
	if workers > 1<<16 {
		return nil, fmt.Errorf("sinks: %d workers: want at most %d", workers, 1<<16)
	}
	paths := map[string]int{}
	norm := make([]SinkSpec, len(specs))
	for i, sp := range specs {
		var err error
		if norm[i], err = normalizeSink(i, sp); err != nil {
			return nil, err
		}
		if sp.Type == "file" {
			if j, dup := paths[sp.Path]; dup {
				return nil, &SinkSpecError{i, "path", fmt.Sprintf("%q is also the path of sinks[%d]; two sinks cannot share a file", sp.Path, j)}
			}
			paths[sp.Path] = i
		}
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
	s.writers = make([]*SinkWriter, workers)
	for w := range s.writers {
		s.writers[w] = &SinkWriter{
			id:      w,
			sinks:   s.sinks,
			cur:     make([]*slab, len(s.sinks)),
			stalled: make([]bool, len(s.sinks)),
		}
	}
	for _, sk := range s.sinks {
		go sk.run()
	}
	return s, nil
}

func normalizeSink(i int, sp SinkSpec) (SinkSpec, error) {
	bad := func(field, format string, args ...any) (SinkSpec, error) {
		return sp, &SinkSpecError{i, field, fmt.Sprintf(format, args...)}
	}
	switch sp.Type {
	case "file":
		if sp.Path == "" {
			return bad("path", "missing: a file sink writes to a path")
		}
	case "stdout", "udp":
		if sp.Path != "" {
			return bad("path", "only file sinks have a path")
		}
		if sp.RotateBytes != 0 || sp.RotateKeep != 0 {
			return bad("rotate_bytes", "only file sinks rotate")
		}
		// Fsync and FsyncInterval are ignored: a config layer may fill in
		// the file defaults for every sink.
		sp.Fsync, sp.FsyncInterval = "", 0
	case "":
		return bad("type", "missing: want file, stdout or udp")
	default:
		return bad("type", "%q: want file, stdout or udp", sp.Type)
	}
	if sp.Type == "udp" {
		if sp.Address == "" {
			return bad("address", "missing: a udp sink sends to host:port")
		}
	} else if sp.Address != "" {
		return bad("address", "only udp sinks have an address")
	}
	switch sp.What {
	case "passed", "alerts", "dropped", "rejects", "all":
	case "":
		return bad("what", "missing: want passed, alerts, dropped, rejects or all")
	default:
		return bad("what", "%q: want passed, alerts, dropped, rejects or all", sp.What)
	}
	switch sp.Format {
	case "raw", "annotated":
	case "":
		sp.Format = "annotated"
		if sp.What == "passed" {
			sp.Format = "raw"
		}
	default:
		return bad("format", "%q: want raw or annotated", sp.Format)
	}
	if sp.Type == "file" {
		switch sp.Fsync {
		case "never", "interval", "always":
		case "":
			sp.Fsync = "interval"
		default:
			return bad("fsync", "%q: want never, interval or always", sp.Fsync)
		}
	}
	switch {
	case sp.FsyncInterval < 0:
		return bad("fsync_interval", "%v: want a positive duration", sp.FsyncInterval)
	case sp.FsyncInterval == 0:
		sp.FsyncInterval = sinkDefaultInterval
	}
	switch {
	case sp.RotateBytes < 0:
		return bad("rotate_bytes", "%d: want 0 (never) or a size in bytes", sp.RotateBytes)
	case sp.RotateKeep < 0:
		return bad("rotate_keep", "%d: want the number of old files to keep (default %d)", sp.RotateKeep, sinkDefaultKeep)
	case sp.RotateKeep == 0:
		sp.RotateKeep = sinkDefaultKeep
	}
	switch sp.OnFull {
	case "drop", "block":
	case "":
		sp.OnFull = "drop"
	default:
		return bad("on_full", "%q: want drop (count and drop records) or block (backpressure)", sp.OnFull)
	}
	switch {
	case sp.BlockTimeout < 0:
		return bad("block_timeout", "%v: want a positive duration", sp.BlockTimeout)
	case sp.BlockTimeout == 0:
		sp.BlockTimeout = sinkDefaultBlock
	}
	switch {
	case sp.Buffer == 0:
		sp.Buffer = sinkDefaultBuffer
	case sp.Buffer < sinkMinBuffer || sp.Buffer > sinkMaxBuffer:
		return bad("buffer", "%d bytes: want %d (8 KiB) .. %d (1 GiB) of slab memory per worker", sp.Buffer, sinkMinBuffer, sinkMaxBuffer)
	}
	return sp, nil
}

func newSink(i int, sp SinkSpec, workers int) (*sink, error) {
	sk := &sink{
		annotated: sp.Format == "annotated",
		newline:   sp.Type != "udp",
		block:     sp.OnFull == "block",
		blockFor:  sp.BlockTimeout,
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
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
	}
	size, n := sinkSlabSize, sp.Buffer/sinkSlabSize
	if n < 2 {
		size, n = sp.Buffer/2, 2
	}
	sk.slabSize = size
	var err error
	if sk.full, err = engine.NewMPSC[*slab](ceilPow2(max(2, n*workers))); err != nil {
		return nil, &SinkSpecError{i, "buffer", err.Error()}
	}
	sk.free = make([]*engine.SPSC[*slab], workers)
	sk.wcnt = make([]workerCounts, workers)
	for w := range sk.free {
		if sk.free[w], err = engine.NewSPSC[*slab](ceilPow2(n)); err != nil {
			return nil, &SinkSpecError{i, "buffer", err.Error()}
		}
		for range n {
			sk.free[w].Push(&slab{
				buf:   make([]byte, 0, size),
				ends:  make([]uint32, 0, size/sinkRecordIndex),
				owner: w,
			})
		}
	}
	switch sp.Type {
	case "file":
		sk.name = "file:" + sp.Path
		sk.out, err = openFileOutput(sk, sp)
	case "stdout":
		sk.name = "stdout"
		sk.out = newStdoutOutput(sk)
	case "udp":
		sk.name = "udp:" + sp.Address
		sk.out, err = dialUDPOutput(sk, sp)
	}
	if err != nil {
		return nil, fmt.Errorf("sinks[%d] (%s): %w", i, sk.name, err)
	}
	return sk, nil
}

func ceilPow2(n int) int {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(n-1))
}

// Writer returns the SinkWriter of worker (0 ≤ worker < workers).
func (s *Sinks) Writer(worker int) *SinkWriter { return s.writers[worker] }

// Add encodes d for every sink that wants it into this worker's current
// slab of that sink, copying every byte it keeps (d.Raw may be reused as
// soon as Add returns). It never allocates; it blocks only for sinks with
// OnFull "block", at most their BlockTimeout.
func (w *SinkWriter) Add(d *engine.Decision) {
	c := classOf(d)
	for i, sk := range w.sinks {
		if sk.classes&c == 0 {
			continue
		}
		need := sk.bound(d, c)
		if need > sk.slabSize {
			sk.wcnt[w.id].tooBig.Add(1)
			continue
		}
		sl := w.cur[i]
		if sl == nil || !sl.room(need) {
			if sl = w.next(i, sk); sl == nil {
				sk.wcnt[w.id].dropped.Add(1)
				continue
			}
		}
		if len(sl.ends) == 0 {
			sl.since = nanotime() // once per slab, not per record
		}
		sl.buf = sk.encode(sl.buf, d, c)
		sl.ends = append(sl.ends, uint32(len(sl.buf)))
	}
}

// next hands the current slab of sink i (if any) over to the writer and
// takes a free one, waiting for it if the sink blocks; nil when none is free.
func (w *SinkWriter) next(i int, sk *sink) *slab {
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
func (w *SinkWriter) Flush() {
	var now int64
	for i, sl := range w.cur {
		if sl == nil || len(sl.ends) == 0 {
			continue
		}
		sk := w.sinks[i]
		if sk.full.Len() > 0 {
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
func (w *SinkWriter) FlushAll() {
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
	var tick <-chan time.Time
	if d := sk.out.tick(); d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		tick = t.C
	}
	round := func() bool {
		n := sk.full.PopBatch(batch[:])
		for _, sl := range batch[:n] {
			sk.out.write(sl)
			sl.buf, sl.ends = sl.buf[:0], sl.ends[:0]
			sk.free[sl.owner].Push(sl) // cannot fail: the ring holds the whole pool
		}
		clear(batch[:n])
		if n > 0 {
			sk.out.afterRound(nanotime())
		}
		return n > 0
	}
	for {
		if round() {
			continue
		}
		select {
		case <-sk.wake:
		case <-tick:
			sk.out.idle(nanotime())
		case <-sk.stop:
			for round() {
			}
			sk.final = sk.out.finish()
			return
		}
	}
}

func nanotime() int64 { return time.Now().UnixNano() }

// Close stops the writers after they have written every slab already
// handed over (workers must have called Flush and stopped), then fsyncs
// (unless "never") and closes files and sockets. If ctx ends first, it
// closes the files and sockets under the stuck writers (so their writes
// fail and the goroutines end) and returns an error wrapping ctx.Err().
// Records still in a worker's unflushed slab are not written.
func (s *Sinks) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		for _, sk := range s.sinks {
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
func (s *Sinks) Stats() []SinkStats {
	out := make([]SinkStats, len(s.sinks))
	for i, sk := range s.sinks {
		st := SinkStats{
			Name:      sk.name,
			Records:   sk.cnt.records.Load(),
			Bytes:     sk.cnt.bytes.Load(),
			Errors:    sk.cnt.errors.Load(),
			Failed:    sk.cnt.failed.Load(),
			Rotations: sk.cnt.rotations.Load(),
			Fsyncs:    sk.cnt.fsyncs.Load(),
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
		return len(d.Raw) + 1
	}
	if c == classReject {
		// {"error":"","raw":"","truncated":true}\n
		return 48 + len(d.Err.String()) + 6*min(len(d.Raw), sinkRejectMax)
	}
	// {"verdict":"","rule":"","value":,"block_ms":,"event":}\n is 62 bytes,
	// the verdict at most 5, the value 26, block_ms 20: 160 leaves room.
	return 160 + 6*len(d.Rule) + len(d.Raw)
}

func (sk *sink) encode(b []byte, d *engine.Decision, c uint8) []byte {
	switch {
	case !sk.annotated:
		b = append(b, d.Raw...)
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
		b = append(b, `,"event":`...)
		b = appendOneLine(b, d.Raw)
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
