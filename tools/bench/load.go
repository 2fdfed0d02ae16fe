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
	EngineXDP    = "xdp"    // XDP live frames (tools/loadgen); test hosts only
	EngineSocket = "socket" // sendmmsg from connected UDP sockets
)

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
	// Iface is the interface the xdp engine sends from (in NetNS), and
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
	Engine string `json:"engine"`
	Target string `json:"target"`
	Sent   uint64 `json:"sent"`
	// Received: test-host mode, frames the receiver's XDP program counted.
	Received uint64 `json:"received"`
	// Undelivered: frames veth did not put into the peer's ring (xdp
	// engine: sent − veth's xdp_xmit count; socket engine on test hosts:
	// the sending end's tx_dropped).
	Undelivered uint64            `json:"undelivered"`
	Errors      uint64            `json:"errors"`
	ElapsedS    float64           `json:"elapsed_s"`
	PPS         float64           `json:"pps"`
	ByKind      map[string]uint64 `json:"by_kind,omitempty"`
}

// Load runs one bounded send.
func Load(ctx context.Context, o LoadOptions) (rep LoadReport, err error) {
	if o.Count == 0 && o.Duration <= 0 {
		return rep, errors.New("load: give --count or --duration")
	}
	if o.Engine == "" {
		o.Engine = EngineXDP
	}
	if o.Port == 0 {
		o.Port = Port
	}
	if o.Events.Seed == 0 {
		o.Events.Seed = 42
	}
	rep.Engine = o.Engine
	switch o.Engine {
	case EngineXDP, EngineSocket:
	default:
		return rep, fmt.Errorf("load: engine %q: want xdp or socket", o.Engine)
	}
	if !o.TestHost {
		if o.Engine == EngineXDP {
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
		rep, err = sendXDP(ctx, o, pair.A, pair.B, received, rep)
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

// loadXDP sends live frames out of an existing interface.
func loadXDP(ctx context.Context, o LoadOptions, rep LoadReport) (LoadReport, error) {
	if o.Iface == "" || !o.To.IsValid() {
		return rep, errors.New("load: the xdp engine needs --testhost, or --iface IF and --to IP:PORT (with --netns NAME)")
	}
	if !o.To.Addr().Is4() {
		return rep, errors.New("load: the xdp engine sends IPv4 only")
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

func sendXDP(ctx context.Context, o LoadOptions, from, to *testenv.Host, received func() uint64, rep LoadReport) (LoadReport, error) {
	lo := loadgen.Options{
		From: from, To: to, DstPort: o.Port,
		Frames: 1024, Sources: max(o.Sources, 1), Events: o.Events,
		Rate: o.Rate, Duration: o.Duration,
	}
	if runtime.NumCPU() > senderCPU {
		lo.CPU, lo.Pin = senderCPU, true
	}
	lg, err := loadgen.New(lo)
	if err != nil {
		return rep, err
	}
	defer lg.Close()
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
	rep.Sent, rep.Undelivered, rep.Errors = d.r.Sent, d.r.Undelivered(), d.r.Errors
	rep.ElapsedS, rep.PPS = d.r.Elapsed.Seconds(), d.r.PPS()
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
