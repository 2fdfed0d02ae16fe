package gateway

import (
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink"
)

// Stats is a snapshot of everything the gateway counts. The accounting
// identity counts datagrams (frames at the XDP program), never events:
//
//	frames seen by XDP = XDPDrops + NotForUs + Survivors
//	Survivors + Reassembled = NoSocket + KernelDrops + SocketDrops + RingDrops
//	                          + BadFrames + Rejected + Decided
//
// so Seen = Accounted() and Unaccounted() = 0 on any traffic. Which terms a
// path has (Identity): afxdp — survivors are redirected frames; NoSocket
// the ones on a queue without an AF_XDP socket (passed to a stack where
// nothing of ours listens); RingDrops and BadFrames the AF_XDP losses.
// socket — survivors pass to our socket group; Reassembled are datagrams
// the kernel rebuilt from fragments (which XDP counted as not ours);
// KernelDrops the kernel's drops of datagrams to our ports in our
// namespace after XDP (the kfree_skb probe; receive-buffer drops are
// SocketDrops); KernelDropsKnown says whether the probe runs. plain — no
// XDP: what arrived at our sockets = SocketDrops + Rejected + Decided.
// Events (and their decode errors) are reported beside the identity.
type Stats struct {
	Path     config.Mode
	Identity config.Mode    // the identity's form: afxdp | socket | plain
	XDPMode  bpf.AttachMode // native | generic | "" without XDP
	Uptime   time.Duration

	XDP       bpf.Counters // by reason; zero without XDP
	XDPSeen   uint64       // every packet the XDP program saw
	XDPDrops  uint64       // dropped in XDP: malformed, blocked, over the bucket, not JSON, not served
	NotForUs  uint64       // passed to the stack: not IP/UDP, other ports, fragments, v6 extension headers
	Survivors uint64       // passed to our sockets or redirected to AF_XDP

	NoSocket         uint64 // afxdp: survivors on a queue without an AF_XDP socket
	Reassembled      uint64 // socket paths: datagrams reassembled from fragments
	KernelDrops      uint64 // socket: datagrams to our ports the stack dropped after XDP
	KernelDropsKnown bool   // the kfree_skb probe runs (socket path)
	SocketDrops      uint64 // dropped by the kernel at our sockets (receive buffer full)
	RingDrops        uint64 // dropped at the AF_XDP rings (rx ring full, no fill frames)
	BadFrames        uint64 // afxdp: redirected frames the worker could not parse

	// WorkerBusy is each worker's busy time (index: worker id, the
	// queue or socket it serves): from a batch in hand to done with it,
	// not waiting. Events over busy time is the capacity of the workers.
	WorkerBusy []time.Duration
	// WorkerBusyCPU is each worker thread's CPU time on those batches
	// (estimated from every 16th batch, see busyMeter): unlike WorkerBusy
	// it leaves out the time the thread waited preempted, so events over
	// it is the capacity whatever else ran on the CPU. It only grows, and
	// equals WorkerBusy until the worker's 16th batch.
	WorkerBusyCPU []time.Duration

	Datagrams uint64 // received by the workers = BadFrames + Rejected + Decided
	Rejected  uint64 // datagrams none of whose events decoded
	Decided   uint64 // datagrams with at least one event decided

	Engine   engine.Stats // events, their verdicts and decode errors: beside the identity
	Feedback FeedbackStats
	Sinks    []sink.Stats
}

// Accounted is the right-hand side of the identity, in frames: what the
// XDP program dropped or passed as not ours, and where every survivor
// went (a reassembled datagram stands for fragments XDP passed as not
// ours, so it is taken off once).
func (s *Stats) Accounted() uint64 {
	return s.XDPDrops + s.NotForUs + s.NoSocket + s.KernelDrops + s.SocketDrops + s.RingDrops + s.BadFrames +
		s.Rejected + s.Decided - s.Reassembled
}

// Seen is the left-hand side: frames the XDP program saw, or in plain
// mode what arrived at our sockets (received or dropped there).
func (s *Stats) Seen() uint64 {
	if s.Identity == config.ModePlain {
		return s.Datagrams + s.SocketDrops
	}
	return s.XDPSeen
}

// Unaccounted is Seen − Accounted: 0 when every frame is in exactly one
// term. Between two readings of a running gateway it may be off by what
// is in flight (a batch per worker); after Stop it is exact.
func (s *Stats) Unaccounted() int64 { return int64(s.Seen()) - int64(s.Accounted()) }

// EventsPerDatagram is the mean events (decided or rejected) per decided or
// rejected datagram.
func (s *Stats) EventsPerDatagram() float64 {
	if s.Datagrams == 0 {
		return 0
	}
	return float64(s.Engine.Events+s.Engine.DecodeErrorTotal()) / float64(s.Datagrams)
}

// Stats reads every counter. Engine counts of a worker lag by at most one
// batch while it runs; after Stop they are exact.
func (g *Gateway) Stats() (Stats, error) {
	s := Stats{Path: g.path, Identity: g.path, XDPMode: g.xdpMode}
	if ns := g.started.Load(); ns != 0 {
		s.Uptime = time.Since(time.Unix(0, ns))
	}
	if g.xdp != nil {
		var c bpf.Counters
		if f := g.finalXDP.Load(); f != nil {
			c = *f
		} else {
			var err error
			if c, err = g.xdp.ReadCounters(); err != nil {
				return s, err
			}
		}
		for r := range c { // counts since this gateway loaded the program
			c[r].Packets -= g.xdpBase[r].Packets
			c[r].Bytes -= g.xdpBase[r].Bytes
		}
		s.XDP = c
		split := c.Split()
		s.XDPSeen, s.XDPDrops, s.NotForUs, s.Survivors = split.Seen, split.Dropped, split.NotForUs, split.Survivors
	}
	g.sockMu.RLock()
	open := !g.closed.Load()
	for _, w := range g.workers {
		if open {
			w.readSocketDrops()
		}
		s.Datagrams += w.datagrams.Load()
		s.Rejected += w.rejected.Load()
		s.Reassembled += w.reassembled.Load()
		s.WorkerBusy = append(s.WorkerBusy, time.Duration(w.busyNs.Load()))
		s.WorkerBusyCPU = append(s.WorkerBusyCPU, time.Duration(w.busyCPUNs.Load()))
		s.SocketDrops += w.sockDrops.Load()
		s.RingDrops += w.ringDrops()
		if w.xsk != nil {
			s.BadFrames += w.xsk.badFrames.Load()
		}
	}
	g.sockMu.RUnlock()
	// Bad frames are counted in datagrams too (the worker took them).
	s.Decided = s.Datagrams - min(s.Datagrams, s.Rejected+s.BadFrames)
	if g.path == config.ModeAFXDP {
		s.NoSocket = s.XDP[bpf.ReasonPassNoXSK].Packets
	}
	if g.path == config.ModeSocket {
		s.KernelDrops, s.KernelDropsKnown = g.kernelDropsAfterXDP()
	}
	s.Engine = g.eng.Stats()
	if g.fb != nil {
		s.Feedback = g.fb.stats()
	}
	if g.sinks != nil {
		s.Sinks = g.sinks.Stats()
	}
	return s, nil
}
