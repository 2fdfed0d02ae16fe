package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/xgate/xgate/bpf"
	englists "github.com/xgate/xgate/engine/lists"
	"github.com/xgate/xgate/gateway/metrics"
)

// metricsSource is the gateway as its collector (gateway/metrics) reads
// it at scrape time: Stats and Lists are the gateway's own, the rest read
// the workers and the BPF maps under sockMu, while the maps are open.
type metricsSource struct{ *Gateway }

var _ metrics.Source = metricsSource{}

func (s metricsSource) Info() metrics.Info {
	return metrics.Info{Version: s.version(), Revision: revision(), Interface: s.Config().Interface}
}

func (s metricsSource) TapDropped() (uint64, bool) {
	if s.tap == nil {
		return 0, false
	}
	return s.tap.Dropped(), true
}

func (s metricsSource) HasXDP() bool { return s.xdp != nil }

func (s metricsSource) Queues() []metrics.Queue { return s.queueStats() }

func (s metricsSource) XDPCost() (bpf.Cost, bool, error) {
	s.sockMu.RLock()
	defer s.sockMu.RUnlock()
	if s.xdp == nil || s.closed.Load() {
		return bpf.Cost{}, false, nil
	}
	c, err := s.xdp.ReadCost()
	return c, err == nil, err
}

func (s metricsSource) CIDRHits() ([]metrics.CIDRHit, bool, error) {
	hits, ok, err := s.readCIDRHits()
	if !ok {
		return nil, false, err
	}
	// The lists' names and order only: data that is always nil keeps
	// CIDRLists from gathering (and deduplicating) every network of the
	// list files on each scrape.
	noData := func(string) *englists.ListData { return nil }
	var out []metrics.CIDRHit
	for i, l := range cidrLists(s.Config(), noData) {
		out = append(out, metrics.CIDRHit{List: l.Name, Packets: hits[i].Packets})
	}
	return out, true, nil
}

// Blocklist counts the blocklist's live and expired entries.
func (s metricsSource) Blocklist() (live, expired int, ok bool, err error) {
	s.sockMu.RLock()
	defer s.sockMu.RUnlock()
	if s.xdp == nil || s.closed.Load() {
		return 0, 0, false, nil
	}
	bl, err := s.xdp.ListBlocked()
	if err != nil {
		return 0, 0, false, err
	}
	for _, b := range bl {
		if b.Expired {
			expired++
		} else {
			live++
		}
	}
	return live, expired, true, nil
}

func (s metricsSource) Probes() []metrics.Probe {
	up := s.probeUp()
	out := make([]metrics.Probe, 0, len(probeNames))
	for _, n := range probeNames {
		out = append(out, metrics.Probe{Name: n, Running: up[n]})
	}
	return out
}

func (s metricsSource) ProbeReadings() (metrics.ProbeReadings, bool) {
	r, ok := s.readProbes()
	return metrics.ProbeReadings{Latency: r.latency, LatencyOK: r.latencyOK, Drops: r.drops, XDP: r.xdp,
		XDPOK: r.xdpOK, Errs: r.errs}, ok
}

// queueStats reads each worker's counters.
func (g *Gateway) queueStats() []metrics.Queue {
	g.sockMu.RLock()
	defer g.sockMu.RUnlock()
	open := !g.closed.Load()
	out := make([]metrics.Queue, 0, len(g.workers))
	for _, w := range g.workers {
		if open {
			w.readSocketDrops()
		}
		q := metrics.Queue{ID: w.id, CPU: w.cpu, Datagrams: w.datagrams.Load(), Busy: time.Duration(w.busyNs.Load()),
			SocketDrops: w.sockDrops.Load(), HasSocket: w.sock != nil}
		if x := w.xsk; x != nil {
			q.XSK = true
			q.Bind = x.sock.Mode().String()
			q.Ring, q.RingErr = x.sock.Stats()
			if q.RingErr == nil {
				q.RingDropped = q.Ring.RxDropped + q.Ring.RxRingFull
			}
			q.BadFrames = x.badFrames.Load()
			q.NoMeta = x.noMeta.Load()
			q.Latency = make([]uint64, LatencyBuckets)
			for i := range q.Latency {
				q.Latency[i] = x.latency[i].Load()
			}
			q.LatencySum = time.Duration(x.latencyNs.Load())
		} else if w.sock != nil {
			h := w.sock.latencyCounts() // sampled (probes.rx_timestamps)
			q.Latency = h[:]
			q.LatencySum = time.Duration(w.sock.latencyNs.Load())
		}
		out = append(out, q)
	}
	return out
}

// readCIDRHits reads the per-list hits of the CIDR lists while the maps
// are open.
func (g *Gateway) readCIDRHits() (hits [bpf.MaxCIDRLists]bpf.Counter, ok bool, err error) {
	g.sockMu.RLock()
	defer g.sockMu.RUnlock()
	if g.xdp == nil || g.closed.Load() {
		return hits, false, nil
	}
	hits, err = g.xdp.CIDRHits()
	return hits, err == nil, err
}

// Collector returns the collector of the gateway's own metrics (without
// the Go runtime and process collectors), for a registry of the caller's.
func (g *Gateway) Collector() prometheus.Collector { return metrics.NewCollector(metricsSource{g}) }

// newRegistry is the registry /metrics serves: the gateway's collector and
// the Go runtime and process collectors.
func (g *Gateway) newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(g.Collector(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
