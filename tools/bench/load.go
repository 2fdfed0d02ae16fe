//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/gen"
	"github.com/xgate/xgate/tools/loadgen"
)

// Engines of LoadOptions.
const (
	EngineAuto   = loadgen.EngineAuto       // live frames if the kernel allows them, else AF_XDP
	EngineXDP    = loadgen.EngineLiveFrames // XDP live frames (tools/loadgen)
	EngineAFXDP  = loadgen.EngineAFXDP      // an AF_XDP socket's TX ring (tools/loadgen)
	EngineSocket = "socket"                 // sendmmsg from connected UDP sockets
)

// frameEngine: the engine sends prebuilt frames through tools/loadgen.
func frameEngine(e string) bool { return e == EngineAuto || e == EngineXDP || e == EngineAFXDP }

// LoadOptions shape `xgate load`.
type LoadOptions struct {
	Engine string
	// TestHost builds a test host pair and sends from A into a receiver on
	// B that counts and drops every frame in XDP (no gateway): the
	// generator's own rate. Otherwise the socket engine sends to To from
	// the namespace NetNS ("" = the caller's).
	TestHost bool
	NetNS    string
	To       netip.AddrPort
	// Iface is the interface the frame engines (auto, xdp, afxdp) send
	// from (in NetNS), and
	// DstMAC the next hop's address (default: from the neighbour table).
	// The receiving end must take XDP frames (veth: an XDP program on the
	// peer, or GRO on).
	Iface  string
	DstMAC net.HardwareAddr
	Port   uint16 // test-host mode: destination port; default Port

	Rate     float64 // datagrams/s, 0 = max
	Count    uint64
	Duration time.Duration
	// Sources: xdp engine: client addresses; socket engine: sockets.
	Sources int
	Events  gen.Config
	// Progress, if set, is called about twice a second with what has been
	// sent (socket engine) or received (xdp engine, test-host mode).
	Progress func(n uint64, elapsed time.Duration)
}

// LoadReport is what `xgate load --json` prints.
type LoadReport struct {
	// Engine is the engine that sent: auto resolved to xdp or afxdp.
	Engine string `json:"engine"`
	Target string `json:"target"`
	Sent   uint64 `json:"sent"`
	// Received: test-host mode, frames the receiver's XDP program counted.
	Received uint64 `json:"received"`
	// Undelivered: frames veth did not put into the peer's ring (xdp
	// engine: sent − veth's xdp_xmit count; afxdp, and the socket engine
	// on test hosts: the sending end's tx_dropped).
	Undelivered uint64 `json:"undelivered"`
	Errors      uint64 `json:"errors"`
	// Refused (afxdp): frames queued that the kernel never completed.
	Refused  uint64  `json:"refused"`
	ElapsedS float64 `json:"elapsed_s"`
	PPS      float64 `json:"pps"`
	// CeilingPPS (test-host mode, frame engines): the generator alone at
	// max rate into the XDP-drop receiver — the run itself at max rate,
	// else a run of DefaultCeilingDuration before it.
	CeilingPPS float64 `json:"ceiling_pps,omitempty"`
	// SenderCPUS (frame engines) is the CPU time of the sending thread,
	// with the receive work that runs on it: Sent / SenderCPUS is the rate
	// one CPU of its own would give, whatever else the machine runs.
	SenderCPUS float64           `json:"sender_cpu_s,omitempty"`
	ByKind     map[string]uint64 `json:"by_kind,omitempty"`
}

// Load runs one bounded send.
func Load(ctx context.Context, o LoadOptions) (rep LoadReport, err error) {
	if o.Count == 0 && o.Duration <= 0 {
		return rep, errors.New("load: give --count or --duration")
	}
	if o.Engine == "" {
		o.Engine = EngineAuto
	}
	if o.Port == 0 {
		o.Port = Port
	}
	if o.Events.Seed == 0 {
		o.Events.Seed = 42
	}
	rep.Engine = o.Engine
	if !frameEngine(o.Engine) && o.Engine != EngineSocket {
		return rep, fmt.Errorf("load: engine %q: want auto, xdp, afxdp or socket", o.Engine)
	}
	if !o.TestHost {
		if frameEngine(o.Engine) {
			return loadXDP(ctx, o, rep)
		}
		return loadSocket(ctx, o, rep)
	}

	pair, err := testenv.NewPair(testenv.Options{RxQueues: 1})
	if err != nil {
		return rep, fmt.Errorf("load: test hosts: %w", err)
	}
	defer func() { err = errors.Join(err, pair.Close()) }()
	rcv, err := loadgen.AttachDrop(pair.B)
	if err != nil {
		return rep, err
	}
	defer rcv.Close()
	seen0, err := rcv.Seen()
	if err != nil {
		return rep, err
	}
	received := func() uint64 { s, _ := rcv.Seen(); return s - seen0 }
	rep.Target = fmt.Sprintf("%s:%d (test host %s, XDP drop receiver)", pair.B.Addr, o.Port, pair.B.Link)

	if o.Engine == EngineSocket {
		o.NetNS = ""
		drop0, derr := pair.A.TxDropped()
		if derr != nil {
			return rep, derr
		}
		rep, err = sendSockets(ctx, o, pair.A.NetNS(), netip.AddrPortFrom(pair.B.Addr, o.Port), rep)
		if err == nil {
			// What veth dropped on the way (the peer's ring full): counted,
			// not lost without a trace.
			drop1, derr := pair.A.TxDropped()
			if derr != nil {
				return rep, derr
			}
			rep.Undelivered = drop1 - drop0
		}
	} else {
		if o.Rate > 0 {
			// The generator alone at max rate, before the paced run.
			lo := frameOptions(o, pair.A, pair.B)
			lo.Rate, lo.Duration = 0, DefaultCeilingDuration
			c, cerr := runCeiling(ctx, lo)
			if cerr != nil {
				return rep, fmt.Errorf("load: generator ceiling: %w", cerr)
			}
			rep.CeilingPPS = c.PPS
			if seen0, err = rcv.Seen(); err != nil { // received counts the paced run alone
				return rep, err
			}
		}
		rep, err = sendXDP(ctx, o, pair.A, pair.B, received, rep)
		if o.Rate == 0 {
			rep.CeilingPPS = rep.PPS
		}
	}
	if err != nil {
		return rep, err
	}
	// The receiver counts in softirq; let it catch up (bounded: 2 s without
	// progress, which a loaded machine — CI running tests in parallel —
	// can take to run a starved ksoftirqd).
	last, lastChange := uint64(0), time.Now()
	for {
		rep.Received = received()
		if rep.Received+rep.Undelivered >= rep.Sent || time.Since(lastChange) > 2*time.Second {
			break
		}
		if rep.Received != last {
			last, lastChange = rep.Received, time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	return rep, nil
}

// runCeiling sends at max rate with lo into whatever receives.
func runCeiling(ctx context.Context, lo loadgen.Options) (Ceiling, error) {
	lg, err := loadgen.New(lo)
	if err != nil {
		return Ceiling{}, err
	}
	defer lg.Close()
	res, err := lg.Send(ctx, 0)
	return Ceiling{Engine: lg.Engine(), PPS: res.PPS()}, err
}

// loadXDP sends frames (live frames or AF_XDP) out of an existing interface.
func loadXDP(ctx context.Context, o LoadOptions, rep LoadReport) (LoadReport, error) {
	if o.Iface == "" || !o.To.IsValid() {
		return rep, fmt.Errorf("load: the %s engine needs --testhost, or --iface IF and --to IP:PORT (with --netns NAME)", o.Engine)
	}
	if !o.To.Addr().Is4() {
		return rep, fmt.Errorf("load: the %s engine sends IPv4 only", o.Engine)
	}
	from, err := testenv.Existing(o.NetNS, o.Iface)
	if err != nil {
		return rep, fmt.Errorf("load: %w", err)
	}
	defer from.Release()
	mac := o.DstMAC
	if mac == nil {
		if mac, err = from.NeighborMAC(o.To.Addr()); err != nil {
			return rep, fmt.Errorf("load: %w", err)
		}
	}
	to := &testenv.Host{Link: "(remote)", MAC: mac, Addr: o.To.Addr(), Prefix: netip.PrefixFrom(o.To.Addr(), 32)}
	o.Port = o.To.Port()
	rep.Target = fmt.Sprintf("%s (%s) from %s", o.To, mac, o.Iface)
	if o.NetNS != "" {
		rep.Target += " in netns " + o.NetNS
	}
	return sendXDP(ctx, o, from, to, nil, rep)
}

// frameOptions is the generator of a frame-engine load.
func frameOptions(o LoadOptions, from, to *testenv.Host) loadgen.Options {
	lo := loadgen.Options{
		Engine: o.Engine,
		From:   from, To: to, DstPort: o.Port,
		Frames: 1024, Sources: max(o.Sources, 1), Events: o.Events,
		Rate: o.Rate, Duration: o.Duration,
	}
	if runtime.NumCPU() > senderCPU {
		lo.CPU, lo.Pin = senderCPU, true
	}
	return lo
}

func sendXDP(ctx context.Context, o LoadOptions, from, to *testenv.Host, received func() uint64, rep LoadReport) (LoadReport, error) {
	lg, err := loadgen.New(frameOptions(o, from, to))
	if err != nil {
		return rep, err
	}
	defer lg.Close()
	rep.Engine = lg.Engine()
	type done struct {
		r   loadgen.Result
		err error
	}
	ch := make(chan done, 1)
	start := time.Now()
	go func() { r, err := lg.Send(ctx, o.Count); ch <- done{r, err} }()
	d := waitProgress(ch, func() {
		if o.Progress != nil && received != nil {
			o.Progress(received(), time.Since(start))
		}
	})
	rep.Sent, rep.Undelivered, rep.Errors, rep.Refused = d.r.Sent, d.r.Undelivered(), d.r.Errors, d.r.Refused
	rep.ElapsedS, rep.PPS = d.r.Elapsed.Seconds(), d.r.PPS()
	rep.SenderCPUS = d.r.SenderCPU.Seconds()
	rep.ByKind = map[string]uint64{}
	for k, n := range d.r.ByKind {
		if n > 0 {
			rep.ByKind[gen.Kind(k).String()] = n
		}
	}
	return rep, d.err
}

// waitProgress waits for ch, calling tick about twice a second.
func waitProgress[T any](ch <-chan T, tick func()) T {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case v := <-ch:
			return v
		case <-t.C:
			tick()
		}
	}
}

func loadSocket(ctx context.Context, o LoadOptions, rep LoadReport) (LoadReport, error) {
	if !o.To.IsValid() {
		return rep, errors.New("load: give --to ADDR:PORT (or --testhost)")
	}
	ns := netns.None()
	if o.NetNS != "" {
		var err error
		if ns, err = netns.GetFromName(o.NetNS); err != nil {
			return rep, fmt.Errorf("load: namespace %q: %w", o.NetNS, err)
		}
		defer ns.Close()
	}
	rep.Target = o.To.String()
	if o.NetNS != "" {
		rep.Target += " from netns " + o.NetNS
	}
	return sendSockets(ctx, o, ns, o.To, rep)
}

func sendSockets(ctx context.Context, o LoadOptions, ns netns.NsHandle, dst netip.AddrPort, rep LoadReport) (LoadReport, error) {
	var prog atomic.Uint64
	so := SocketOptions{NS: ns, Dst: dst, Sockets: max(o.Sources, 1), Events: o.Events,
		Rate: o.Rate, Count: o.Count, Duration: o.Duration, Progress: &prog}
	type done struct {
		r   SocketResult
		err error
	}
	ch := make(chan done, 1)
	start := time.Now()
	go func() { r, err := SendSocket(ctx, so); ch <- done{r, err} }()
	d := waitProgress(ch, func() {
		if o.Progress != nil {
			o.Progress(prog.Load(), time.Since(start))
		}
	})
	rep.Sent, rep.Errors = d.r.Sent, d.r.Errors
	rep.ElapsedS, rep.PPS = d.r.Elapsed.Seconds(), d.r.PPS()
	return rep, d.err
}
