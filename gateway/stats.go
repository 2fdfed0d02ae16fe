package gateway

import (
	"time"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine"
)

// Stats is a snapshot of everything the gateway counts, arranged as the
// accounting identity of DESIGN.md:
//
//	packets seen = XDPDrops + NotForUs + SocketDrops + RingDrops + DecodeErrors + Events
//
// when every datagram holds one event (a datagram with n events adds n to
// the right-hand side).
type Stats struct {
	Path    string
	XDPMode string // native | generic | "" without XDP
	Uptime  time.Duration

	XDP       bpf.Counters // by reason; zero without XDP
	XDPSeen   uint64       // every packet the XDP program saw
	XDPDrops  uint64       // dropped in XDP: malformed, blocked, over the bucket, not JSON
	NotForUs  uint64       // passed to the stack: not IP/UDP, other ports, fragments, v6 extension headers
	Survivors uint64       // passed to our sockets or redirected to AF_XDP

	Datagrams uint64 // received by the workers
	// WorkerBusy is each worker's busy time (index: worker id, the
	// queue or socket it serves): from a batch in hand to done with it,
	// not waiting. Events over busy time is the capacity of the workers.
	WorkerBusy  []time.Duration
	SocketDrops uint64 // dropped by the kernel at our sockets (receive buffer full)
	RingDrops   uint64 // dropped at the AF_XDP rings (rx ring full, no fill frames)

	Engine   engine.Stats
	Feedback FeedbackStats
	Sinks    []SinkStats
}

// Accounted is the right-hand side of the identity.
func (s *Stats) Accounted() uint64 {
	return s.XDPDrops + s.NotForUs + s.SocketDrops + s.RingDrops + s.Engine.DecodeErrorTotal() + s.Engine.Events
}

// Stats reads every counter. Engine counts of a worker lag by at most one
// batch while it runs; after Stop they are exact.
func (g *Gateway) Stats() (Stats, error) {
	s := Stats{Path: g.path, XDPMode: g.xdpMode}
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
		s.WorkerBusy = append(s.WorkerBusy, time.Duration(w.busyNs.Load()))
		s.SocketDrops += w.sockDrops.Load()
		s.RingDrops += w.ringDrops()
	}
	g.sockMu.RUnlock()
	s.Engine = g.eng.Stats()
	if g.fb != nil {
		s.Feedback = g.fb.stats()
	}
	if g.sinks != nil {
		s.Sinks = g.sinks.Stats()
	}
	return s, nil
}
