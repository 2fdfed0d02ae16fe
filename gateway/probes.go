package gateway

import (
	"net/netip"
	"strings"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/bpf"
)

// probeNames are the kernel probes xgate_probe_up reports, in order.
var probeNames = []string{bpf.ProbeSockLatency, bpf.ProbeKfreeSkb, bpf.ProbeXDPRedirectErr, bpf.ProbeXDPException}

// setupProbes loads the kernel probes (probes.enabled): kernel drops for
// our ports, XDP redirect errors and exceptions of our program, and the
// socket-path queueing latency, whose filter it attaches to every socket
// of the group. The probes are optional: what cannot run is logged and
// reported by xgate_probe_up, and the gateway goes on without it.
//
// On the socket and plain paths it also turns on the sockets' receive →
// verdict sampling (probes.rx_timestamps), which needs no BPF. Both
// socket-path latencies time one datagram in probes.sample: timing every
// datagram in the filter, plus SO_TIMESTAMPNS on our sockets, cost the
// socket path a share of its softirq receive work and a timestamp
// conversion per datagram read (BENCHMARKS.md, "Why the defaults").
func (g *Gateway) setupProbes(cfg *config.Config) {
	if !cfg.Probes.Enabled {
		g.probesMissing = []string{"all: disabled by probes.enabled: false"}
		return
	}
	if cfg.Probes.RxTimestamps {
		for _, s := range g.sockets {
			s.startLatency(cfg.Probes.Sample)
		}
	}
	// New runs in the interface's namespace: the kernel drops counted are
	// that namespace's. The maps pin beside the XDP program's. The kernel
	// drops counted are those to listen.address (any when unset or
	// unspecified), the address the XDP program takes as ours: a datagram
	// to another one it passed as not_our_address, so the stack's drop of
	// it is not ours.
	addr, _ := netip.ParseAddr(cfg.Listen.Address) // checked by config; "" is any
	opts := bpf.ProbeOptions{Ports: cfg.Listen.Ports, SockSample: cfg.Probes.Sample, RxTimestamps: cfg.Probes.RxTimestamps,
		NetnsIno: bpf.NetnsIno(), Address: addr}
	if g.path != config.ModePlain {
		opts.PinPath = cfg.Pin.Path
	}
	if g.xdp != nil {
		if info, err := g.xdp.Program().Info(); err == nil {
			if id, ok := info.ID(); ok {
				opts.XDPProgID = uint32(id)
			}
		}
	}
	if len(g.sockets) == 0 {
		// AF_XDP frames never reach a socket: no latency filter to attach.
		opts.Skip = append(opts.Skip, bpf.ProbeSockLatency)
	}
	p, err := bpf.LoadProbes(opts)
	if err != nil {
		g.probesMissing = []string{"all: " + err.Error()}
		g.log.Warn("kernel probes not loaded; running without them", "error", err)
		return
	}
	g.probes = p
	if d, err := p.ReadKernelDrops(); err == nil {
		g.kdropBase = afterXDP(d) // pinned maps reused from a run before
	}
	if p.Running(bpf.ProbeSockLatency) {
		for i, s := range g.sockets {
			if err := p.AttachSocket(s.fd); err != nil {
				g.log.Warn("socket latency probe not attached", "socket", i, "error", err)
			}
		}
	}
	g.probesMissing = p.Missing()
	// The ones this path skips (the socket latency filter on afxdp: no
	// socket receives) are by design, not a loss worth a warning.
	var lost, skipped []string
	for _, m := range g.probesMissing {
		if strings.HasSuffix(m, "skipped by option") {
			skipped = append(skipped, m)
		} else {
			lost = append(lost, m)
		}
	}
	if len(skipped) > 0 {
		g.log.Info("kernel probes this receive path does not use", "skipped", strings.Join(skipped, "; "))
	}
	if len(lost) > 0 {
		g.log.Warn("some kernel probes are missing", "missing", strings.Join(lost, "; "))
	} else {
		g.log.Info("kernel probes running", "probes", strings.Join(probeNames, " "),
			"sample", cfg.Probes.Sample, "rx_timestamps", cfg.Probes.RxTimestamps)
	}
}

// probeUp reports, per probe name, whether it runs.
func (g *Gateway) probeUp() map[string]bool {
	up := make(map[string]bool, len(probeNames))
	for _, n := range probeNames {
		up[n] = g.probes != nil && g.probes.Running(n)
	}
	return up
}

// probeStates lists every probe, running or missing with the reason
// setupProbes recorded ("name: why", or "all: why" for every probe).
func (g *Gateway) probeStates() []ProbeState {
	out := make([]ProbeState, 0, len(probeNames))
	for _, n := range probeNames {
		ps := ProbeState{Name: n, Running: g.probes != nil && g.probes.Running(n)}
		if !ps.Running {
			ps.Reason = "not loaded"
			for _, m := range g.probesMissing {
				if why, ok := strings.CutPrefix(m, n+": "); ok {
					ps.Reason = why
					break
				}
				if why, ok := strings.CutPrefix(m, "all: "); ok {
					ps.Reason = why
				}
			}
		}
		out = append(out, ps)
	}
	return out
}

// probeReadings are the probes' maps read at scrape time.
type probeReadings struct {
	latency   bpf.LatencyHistogram
	latencyOK bool
	drops     map[string]uint64
	xdp       bpf.XDPEvents
	xdpOK     bool
	errs      []error
}

// readProbes reads the probes' maps while they are open.
func (g *Gateway) readProbes() (r probeReadings, ok bool) {
	g.sockMu.RLock()
	defer g.sockMu.RUnlock()
	p := g.probes
	if p == nil || g.closed.Load() {
		return r, false
	}
	if p.Running(bpf.ProbeSockLatency) {
		h, err := p.ReadLatencyHistogram()
		if err != nil {
			r.errs = append(r.errs, err)
		} else {
			r.latency, r.latencyOK = h, true
		}
	}
	if p.Running(bpf.ProbeKfreeSkb) {
		d, err := p.ReadKernelDrops()
		if err != nil {
			r.errs = append(r.errs, err)
		} else {
			r.drops = d
		}
	}
	if p.Running(bpf.ProbeXDPRedirectErr) || p.Running(bpf.ProbeXDPException) {
		ev, err := p.ReadXDPEvents()
		if err != nil {
			r.errs = append(r.errs, err)
		} else {
			r.xdp, r.xdpOK = ev, true
		}
	}
	return r, true
}

// KernelLatency returns the socket-path queueing latency histogram (skb
// receive timestamp → socket); ok is false without the probe.
func (g *Gateway) KernelLatency() (h bpf.LatencyHistogram, ok bool, err error) {
	g.sockMu.RLock()
	defer g.sockMu.RUnlock()
	if g.probes == nil || g.closed.Load() || !g.probes.Running(bpf.ProbeSockLatency) {
		return h, false, nil
	}
	h, err = g.probes.ReadLatencyHistogram()
	return h, err == nil, err
}

// afterXDP sums the kernel's drops of datagrams to our ports that are
// terms of their own in the identity: every named reason but the
// receive-buffer drops (SocketDrops, read from the sockets) and XDP's own
// drops (XDPDrops). veth and generic XDP free the skbs of frames the
// program dropped as not_specified (or xdp), so an unnamed drop cannot be
// told from one of ours and is left out (kernel_drops_total still shows
// it).
func afterXDP(byReason map[string]uint64) uint64 {
	var n uint64
	for r, v := range byReason {
		switch r {
		case "socket_rcvbuff", "xdp", "not_specified":
		default:
			n += v
		}
	}
	return n
}

// kernelDropsAfterXDP is the KernelDrops term since this gateway loaded the
// probes, and whether the kfree_skb probe runs. After teardown it is the
// last reading taken before the probes closed.
func (g *Gateway) kernelDropsAfterXDP() (uint64, bool) {
	if f := g.finalKDrops.Load(); f != nil {
		return *f, true
	}
	g.sockMu.RLock()
	defer g.sockMu.RUnlock()
	p := g.probes
	if p == nil || g.closed.Load() || !p.Running(bpf.ProbeKfreeSkb) {
		return 0, false
	}
	d, err := p.ReadKernelDrops()
	if err != nil {
		return 0, false
	}
	return afterXDP(d) - min(afterXDP(d), g.kdropBase), true
}
