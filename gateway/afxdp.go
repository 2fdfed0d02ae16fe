package gateway

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/xdp"
)

// LatencyBuckets is the size of the receive → verdict histogram: bucket i
// counts frames decided within 2^i µs of the XDP program's timestamp (the
// last bucket everything slower).
const LatencyBuckets = 24

// xskQueue is one AF_XDP socket and the worker state that goes with it.
type xskQueue struct {
	sock    *xdp.Socket
	frames  []xdp.Frame
	decided []bool // per frame of the current batch: a UDP payload was decided
	// Written only by the worker; read by Stats.
	badFrames atomic.Uint64 // redirected frames that are not UDP as we parse it
	noMeta    atomic.Uint64 // frames without the program's timestamp
	latency   [LatencyBuckets]atomic.Uint64
	latencyNs atomic.Uint64 // sum of the observations in latency, ns (the histogram's exact _sum)
	warmed    byte          // warm's reads go here, so the compiler keeps them
}

// openXSKs opens one AF_XDP socket per active RX queue and registers each
// in the program's XSKMAP. It returns the CPU of each queue's worker. The
// feature switches shape the bind: afxdp off refuses the path,
// afxdp_zerocopy off binds in copy mode only, afxdp_need_wakeup off binds
// without XDP_USE_NEED_WAKEUP. What the bind got goes to the feature
// report.
func (g *Gateway) openXSKs(cfg *config.Config) ([]int, error) {
	if bpf.ForcedOff(bpf.FeatAFXDP) {
		err := bpf.ForcedErr(bpf.FeatAFXDP)
		g.setIfFeature(bpf.FeatAFXDP, err)
		return nil, fmt.Errorf("afxdp on %s: %w", cfg.Interface, err)
	}
	topo, err := g.topology(cfg)
	if err != nil {
		return nil, err
	}
	queues := g.queues
	if cfg.Queues > 0 {
		queues = min(queues, cfg.Queues)
	}
	stamp, _ := g.xdp.Stamp()
	xc := xdp.Config{FrameSize: uint32(cfg.AFXDP.FrameSize), Frames: uint32(cfg.AFXDP.Frames),
		FillSize: uint32(cfg.AFXDP.FillRing), RxSize: uint32(cfg.AFXDP.RxRing),
		Spin: cfg.AFXDP.Spin, PollTimeout: g.opts.RecvTimeout, PrefixStamp: stamp == bpf.StampPrefix}
	zcOff, nwOff := bpf.ForcedOff(bpf.FeatAFXDPZeroCopy), bpf.ForcedOff(bpf.FeatAFXDPNeedWakeup)
	if zcOff {
		xc.Bind = xdp.BindCopy
	}
	xc.NoNeedWakeup = nwOff
	var cpus []int
	for q := 0; q < queues; q++ {
		cpu := topo.queueCPU(q)
		qc := xc
		// On a host with several nodes each queue's UMEM goes on the node
		// of the CPU that serves it.
		node := -1
		if topo.topo.NUMA && len(topo.topo.Nodes) > 1 && cpu >= 0 {
			node = topo.topo.NodeOf(cpu)
		}
		qc.PlaceNUMA, qc.NUMANode = node >= 0, max(node, 0)
		s, err := xdp.Open(g.ifindex, q, qc)
		if err != nil {
			err = fmt.Errorf("afxdp queue %d of %s: %w", q, cfg.Interface, err)
			if hint := host.QueueHint(cfg.Interface, q, g.rxq, err); hint != "" {
				err = fmt.Errorf("%w (%s)", err, hint)
			}
			if !errors.Is(err, xdp.ErrInvalidConfig) {
				err = host.RefusedErr{Err: err}
			}
			g.setIfFeature(bpf.FeatAFXDP, err)
			return nil, err
		}
		batch := max(1, cfg.Socket.Batch)
		x := &xskQueue{sock: s, frames: make([]xdp.Frame, batch), decided: make([]bool, batch)}
		g.xsks = append(g.xsks, x)
		if err := g.xdp.RegisterXSK(uint32(q), s.FD()); err != nil {
			return nil, fmt.Errorf("afxdp queue %d: %w", q, err)
		}
		cpus = append(cpus, cpu)
		g.log.Info("AF_XDP socket bound", "queue", q, "cpu", cpu, "bind", s.Mode().String(),
			"need_wakeup", !nwOff, "frame_size", xc.FrameSize, "umem_node", node) // -1: the kernel's default placement
	}
	g.setIfFeature(bpf.FeatAFXDP, nil)
	switch {
	case zcOff:
		g.setIfFeature(bpf.FeatAFXDPZeroCopy, bpf.ForcedErr(bpf.FeatAFXDPZeroCopy))
	case g.xsks[0].sock.Mode() == xdp.BindZeroCopy:
		g.setIfFeature(bpf.FeatAFXDPZeroCopy, nil)
	default:
		g.setIfFeature(bpf.FeatAFXDPZeroCopy, host.RefusedErr{Err: fmt.Errorf("the driver of %s bound the queues in copy mode", cfg.Interface)})
	}
	if nwOff {
		g.setIfFeature(bpf.FeatAFXDPNeedWakeup, bpf.ForcedErr(bpf.FeatAFXDPNeedWakeup))
	} else {
		g.setIfFeature(bpf.FeatAFXDPNeedWakeup, nil)
	}
	if queues < g.queues {
		g.log.Warn("fewer AF_XDP sockets than RX queues: traffic on the other queues passes to the stack (pass_no_xsk)",
			"sockets", queues, "queues", g.queues)
	}
	return cpus, nil
}

func (g *Gateway) closeXSKs() {
	for q, x := range g.xsks {
		if g.xdp != nil {
			_ = g.xdp.UnregisterXSK(uint32(q))
		}
		_ = x.sock.Close()
	}
}

// runXSK is the loop of the afxdp path: receive a batch of frames (views
// into the UMEM), decide each UDP payload, then release the whole batch to
// the fill ring — only after the engine and the sink writer are done with
// every view into it. When the ring is empty, Receive spins for afxdp.spin
// before it sleeps: with the receive timeout while traffic flows, and,
// once a timeout passed with nothing to do and the counts and sink records
// are handed over, without one, until frames arrive or Stop wakes it
// (Socket.Wake), so an idle worker wakes no one.
func (w *worker) runXSK(stop *atomic.Bool) {
	defer w.finish()
	if err := w.pin(); err != nil {
		w.fail(err)
		return
	}
	x := w.xsk
	var total uint64
	var busy busyMeter
	resting := false // waiting without a timeout
	for !stop.Load() {
		n, err := x.sock.Receive(x.frames)
		if err != nil {
			if errors.Is(err, xdp.ErrTimeout) {
				w.idle()
				continue
			}
			if errors.Is(err, xdp.ErrClosed) || stop.Load() {
				return
			}
			w.fail(err)
			return
		}
		if n == 0 {
			w.idle()
			if !resting {
				x.sock.SetPollTimeout(0)
				resting = true
			}
			continue
		}
		if resting {
			x.sock.SetPollTimeout(w.recvTimeout)
			resting = false
		}
		busy.begin()
		t0 := monotonicNs() // busy from here to recordLatency's clock read
		w.loadTap()
		x.warm(n)
		w.decideFrames(n)
		if t1 := x.recordLatency(n); t1 > t0 {
			wall, cpu := busy.end(t1-t0, n)
			w.busyNs.Store(wall)
			w.busyCPUNs.Store(cpu)
		}
		if w.sw != nil {
			w.sw.Flush()
		}
		x.sock.Release(x.frames[:n])
		total += uint64(n)
		w.datagrams.Store(total)
	}
}

// decideFrames decides the UDP payload of each of the batch's first n
// frames and notes which were decided (for recordLatency).
func (w *worker) decideFrames(n int) {
	x := w.xsk
	for i := 0; i < n; i++ {
		f := &x.frames[i]
		payload, src, ok := handedPayload(f.Data, &f.Meta)
		x.decided[i] = ok
		if !ok {
			x.badFrames.Add(1)
			continue
		}
		var rxNs uint64
		if f.Meta.OK {
			rxNs = f.Meta.RxNs
		}
		w.decide(payload, src, rxNs)
	}
}

// warm reads one byte of every cache line of the batch's first n frames,
// all before the first frame is decided. The kernel wrote the frames on
// another CPU (the copy of copy mode, or the NIC's DMA), so each line
// misses this CPU's caches: read here, in a loop of loads that do not
// depend on each other, the misses overlap; met by the decoder, one
// frame's lines after another's, each is a stall of its own. (With a
// prefix stamp take has read the first line already; the read costs
// little then.)
func (x *xskQueue) warm(n int) {
	var sum byte
	for i := range n {
		d := x.frames[i].Data
		if len(d) == 0 {
			continue
		}
		for off := 0; off < len(d); off += 64 {
			sum += d[off]
		}
		sum += d[len(d)-1] // the last line, if Data does not start on a line
	}
	x.warmed = sum
}

// recordLatency adds the receive → verdict time of the batch's first n
// frames to the histogram. It reads the clock once, after the whole batch
// is decided, so each figure is an upper bound by at most one batch; and it
// adds to the shared counters once per bucket touched, not once per frame.
// It returns that reading (CLOCK_MONOTONIC ns), the end of the batch's
// busy time.
func (x *xskQueue) recordLatency(n int) uint64 {
	var hist [LatencyBuckets]uint32
	now := monotonicNs()
	noMeta := 0
	var sum uint64
	for i := 0; i < n; i++ {
		f := &x.frames[i]
		switch {
		case !x.decided[i]:
		case !f.Meta.OK:
			noMeta++
		case now > f.Meta.RxNs:
			sum += now - f.Meta.RxNs
			us := (now - f.Meta.RxNs + 999) / 1000
			b := bits.Len64(us - 1) // smallest i with us <= 2^i
			hist[min(b, LatencyBuckets-1)]++
		}
	}
	for b, c := range hist {
		if c != 0 {
			x.latency[b].Add(uint64(c))
		}
	}
	if sum != 0 {
		x.latencyNs.Add(sum)
	}
	if noMeta != 0 {
		x.noMeta.Add(uint64(noMeta))
	}
	return now
}

// ringDrops is what the AF_XDP rings dropped for this worker's queue.
func (w *worker) ringDrops() uint64 {
	if w.xsk == nil {
		return 0
	}
	st, err := w.xsk.sock.Stats()
	if err != nil {
		return 0
	}
	return st.RxDropped + st.RxRingFull
}

// monotonicNs reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns, in ns:
// through Go's monotonic clock, which is CLOCK_MONOTONIC read through the
// vDSO (runtime.nanotime on Linux), plus an offset taken once. A
// clock_gettime system call (unix.ClockGettime) costs ten times as much,
// and the afxdp worker reads the clock twice per batch.
func monotonicNs() uint64 { return monoOff + uint64(time.Since(monoBase)) }

// monoBase and monoOff: CLOCK_MONOTONIC = monoOff + time.Since(monoBase).
var monoBase, monoOff = calibrateMono()

// calibrateMono takes the offset from the narrowest of a few brackets of a
// clock_gettime call between two readings of Go's clock (error: half its
// width, well under a µs).
func calibrateMono() (time.Time, uint64) {
	base := time.Now()
	width, off := time.Duration(math.MaxInt64), uint64(0)
	for range 16 {
		a := time.Since(base)
		m := clockMonotonic()
		b := time.Since(base)
		if b-a < width {
			width, off = b-a, m-uint64(a+(b-a)/2)
		}
	}
	return base, off
}

// clockMonotonic reads CLOCK_MONOTONIC with a system call.
func clockMonotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
