package gateway

import (
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway/metrics"
)

// Stats reads every counter. Engine counts of a worker lag by at most one
// batch while it runs; after Stop they are exact.
func (g *Gateway) Stats() (metrics.Stats, error) {
	s := metrics.Stats{Path: g.path, Identity: g.path, XDPMode: g.xdpMode}
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
