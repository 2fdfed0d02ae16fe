package gateway

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xgate/xgate/gateway/host"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink"
	"github.com/xgate/xgate/gateway/tap"
)

// worker drains one socket (socket and plain modes) or one AF_XDP queue
// (afxdp mode) on its own OS thread, pinned to the CPU that receives for
// it, and hands every datagram to its engine.Worker as a view.
type worker struct {
	id     int
	cpu    int // -1: not pinned
	rtPrio int // SCHED_FIFO priority of the worker's thread; 0: SCHED_OTHER (realtime.go)
	// tainted: pin changed the thread's affinity or policy, so finish
	// leaves it locked and the runtime ends it with the goroutine rather
	// than running other goroutines on a pinned or real-time thread.
	tainted bool
	ew      *engine.Worker
	sw      *sink.Writer // nil without sinks
	fb      *feedback
	tap     *tap.Hub           // never nil in a gateway; nil in bare tests
	hk      *host.Housekeeping // nil: no other threads to keep off w.cpu
	pinned  *sync.WaitGroup    // Done once pin has run; nil in bare tests

	// tapF is tap.Load() as it was at the start of the current batch:
	// what the tap clients want, nil with no client.
	tapF *tap.Filter

	sock        *udpSocket
	recvTimeout time.Duration // the socket's receive timeout while traffic flows
	batch       *mmsgBatch
	xsk         *xskQueue // afxdp path

	// Written only by the worker goroutine, read by Stats.
	datagrams atomic.Uint64
	// rejected: datagrams none of whose events decoded (the rest were
	// decided); reassembled: datagrams the kernel reassembled from
	// fragments (socket paths). Added to only on such (rare) datagrams.
	rejected    atomic.Uint64
	reassembled atomic.Uint64
	// busyNs is the time the worker spent on its batches: from a non-empty
	// batch in hand to its last verdict (afxdp) or to its sink flush
	// (socket, plain); not waiting, spinning or sleeping. Busy time over
	// events decided is the worker's capacity, whatever the offered load.
	busyNs atomic.Uint64
	// busyCPUNs is the worker thread's CPU time on the same batches,
	// estimated from samples (busyMeter); only grows.
	busyCPUNs atomic.Uint64
	sockDrops atomic.Uint64 // the socket's drop count (sk_drops), newest reading
	err       atomic.Pointer[error]
}

// pin locks the goroutine to its thread, the thread to w.cpu and, with
// w.rtPrio set, makes it SCHED_FIFO at that priority (see realtime.go for
// the trade-off).
func (w *worker) pin() error {
	defer func() {
		if w.pinned != nil {
			w.pinned.Done()
		}
	}()
	runtime.LockOSThread()
	w.hk.Worker()
	if w.cpu >= 0 {
		var set unix.CPUSet
		set.Set(w.cpu)
		w.tainted = true
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("worker %d: pin to CPU %d: %w", w.id, w.cpu, err)
		}
	}
	if w.rtPrio > 0 {
		w.tainted = true
		if err := host.SetRealtime(w.rtPrio); err != nil {
			return fmt.Errorf("worker %d: %w", w.id, err)
		}
	}
	return nil
}

// decide runs one datagram through the engine and routes its decisions.
// src is the sender; rxNs is the XDP receive timestamp (afxdp; 0: none),
// for the tap and the sinks' receive time; they and the worker's queue (its
// id: the RX queue on the afxdp path, the socket otherwise) go to the
// sinks' metadata.
//
// Invariant: frame stays valid (not refilled, not returned to the kernel)
// until decide returns and the sink writer has copied what it keeps; the
// engine's views die with the next Process call.
func (w *worker) decide(frame []byte, src netip.AddrPort, rxNs uint64) {
	ds := w.ew.Process(frame, src.Addr())
	ok := false
	for i := range ds {
		ok = ok || ds[i].Err == engine.DecodeOK
	}
	if !ok {
		w.rejected.Add(1)
	}
	origin := sink.Origin{Src: src, RxNs: rxNs, Queue: w.id}
	for i := range ds {
		d := &ds[i]
		if w.sw != nil {
			w.sw.AddFrom(d, &origin)
		}
		if d.Err != engine.DecodeOK {
			continue
		}
		if d.Action == engine.ActionBlock {
			w.fb.request(src.Addr(), d.Block, d.Rule)
		}
		if f := w.tapF; f != nil && f.Wants(d.Action) {
			w.tap.Offer(f, d, w.id, rxNs)
		}
	}
	if w.sw != nil {
		// Window rules with emit: on_alert that fired (emit.go).
		aggs := w.ew.Aggregates()
		for i := range aggs {
			w.sw.AddAggregate(&aggs[i])
		}
	}
}

// loadTap takes the tap clients' filter for the next batch: one atomic
// load per batch, and nothing else happens with no client.
func (w *worker) loadTap() {
	if w.tap != nil {
		w.tapF = w.tap.Load()
	}
}

// runSocket is the loop of socket and plain modes. On stop, Stop shuts the
// socket down for reading: the datagrams already queued are still read and
// decided, then the kernel answers with empty, address-less messages, and
// the loop ends. So nothing the kernel accepted for us goes undecided.
func (w *worker) runSocket(stop *atomic.Bool) {
	defer w.finish()
	if err := w.pin(); err != nil {
		w.fail(err)
		return
	}
	var total uint64
	var busy busyMeter
	resting := false // waiting without a timeout (see below)
	for {
		n, err := w.sock.recv(w.batch)
		if err != nil {
			if stop.Load() {
				return
			}
			w.fail(err)
			return
		}
		shut := false
		if n > 0 {
			shut = w.socketBatch(n, &total, &busy)
		}
		if shut || (n == 0 && stop.Load()) {
			return
		}
		if n == 0 {
			w.idle()
			// Nothing came within the receive timeout and everything is
			// handed over: wait without a timeout until a datagram or
			// Stop's shutdown, so an idle gateway wakes no one.
			if !resting && w.sock.setTimeout(0) == nil {
				resting = true
			}
		} else if resting {
			// Back to the short wait, which hands counts and sink records
			// over soon after the traffic stops.
			if w.sock.setTimeout(w.recvTimeout) == nil {
				resting = false
			}
		}
	}
}

// socketBatch decides the n (> 0) messages of the last recv and does the
// batch's bookkeeping: busy time, the datagram count (total, the worker's
// running sum, stored once), the sink flush. It reports whether a message
// was the shutdown's empty one.
func (w *worker) socketBatch(n int, total *uint64, busy *busyMeter) (shut bool) {
	b := w.batch
	if b.reassembled > 0 {
		w.reassembled.Add(uint64(b.reassembled))
	}
	busy.begin()
	t0 := time.Now() // vDSO, no allocation; once per batch
	w.loadTap()
	got := 0
	for i := 0; i < n; i++ {
		if b.hdrs[i].Hdr.Namelen == 0 {
			shut = true // not a datagram: the socket was shut down
			continue
		}
		got++
		w.decide(b.bufs[i][:b.lens[i]], b.source(i), 0)
	}
	if got > 0 {
		if w.sw != nil {
			w.sw.Flush()
		}
		*total += uint64(got)
		w.datagrams.Store(*total)
	}
	wall, cpu := busy.end(uint64(time.Since(t0)), n)
	w.busyNs.Store(wall)
	w.busyCPUNs.Store(cpu)
	return shut
}

func (w *worker) fail(err error) { w.err.Store(&err) }

// noteDrops records a reading of the socket's drop counter, which only
// grows; readings taken by Stats and at shutdown may arrive out of order.
func (w *worker) noteDrops(n uint64) {
	for {
		old := w.sockDrops.Load()
		if n <= old || w.sockDrops.CompareAndSwap(old, n) {
			return
		}
	}
}

// readSocketDrops refreshes the drop count from the socket itself.
func (w *worker) readSocketDrops() {
	if w.sock == nil {
		return
	}
	if n, err := w.sock.drops(); err == nil {
		w.noteDrops(n)
	}
}

// idle runs when a receive found nothing: counts and sink records that wait
// for the next batch are handed over now, so Stats and the sinks do not lag
// behind a quiet link.
func (w *worker) idle() {
	w.ew.Flush()
	if w.sw != nil {
		w.sw.FlushAll()
	}
}

func (w *worker) finish() {
	w.ew.Flush()
	if w.sw != nil {
		w.sw.FlushAll()
	}
	if !w.tainted {
		runtime.UnlockOSThread()
	}
}

// spareP makes GOMAXPROCS at least workers+1, unless the environment sets
// GOMAXPROCS. Each worker waits in blocking receive system calls on its
// own locked thread, holding a P. When every P is in a system call (one
// worker per CPU, GOMAXPROCS the CPU count), sysmon takes the P of a
// worker blocked for more than about 20 µs and hands it to another thread
// to poll the network, which wakes, finds nothing and sleeps again: an
// extra thread wake-up per wait, a tenth of the receiver's CPU at
// moderate rates on the socket paths (BENCHMARKS.md). With an idle P,
// sysmon leaves a P in a system call alone for up to 10 ms. An idle P
// costs nothing; it runs a goroutine only when one is ready, as the
// housekeeping ones are now and then.
func spareP(workers int, env string) int {
	if env != "" {
		return runtime.GOMAXPROCS(0)
	}
	if n := workers + 1; runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n)
	}
	return runtime.GOMAXPROCS(0)
}
