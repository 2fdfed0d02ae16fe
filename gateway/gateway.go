// Package gateway is the xgate daemon: it attaches the XDP program to a
// NIC, opens the receive path of the chosen mode (AF_XDP sockets, an
// SO_REUSEPORT group per NUMA node, or plain UDP sockets), runs one pinned
// worker per queue or socket through the rule engine, feeds block verdicts
// back into XDP, writes sinks, and stops, reloads and accounts for every
// packet.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	englists "github.com/xgate/xgate/engine/lists"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/lists"
	"github.com/xgate/xgate/gateway/preflight"

	"github.com/xgate/xgate/gateway/host"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink"
	"github.com/xgate/xgate/gateway/tap"
)

// Options are the run-time knobs that are not configuration.
type Options struct {
	Logger *slog.Logger
	// SysRoot is where /sys and /proc are read for the topology ("" = "/");
	// tests point it at a fake host.
	SysRoot string
	// StopTimeout bounds the drain on Stop (default 5s).
	StopTimeout time.Duration
	// RecvTimeout is how long a worker waits in one receive call while
	// traffic flows, before it hands its counts and sink records over
	// (default 100ms); an idle worker then waits without a timeout until
	// traffic or Stop.
	RecvTimeout time.Duration
	// DropCaps makes Run drop every capability of the process, on every
	// thread, and set no_new_privs once setup is done (caps_linux.go); the
	// daemon sets it, tests that run gateways in their own process do not.
	DropCaps bool
	// OnReady, if set, is called by Run once the gateway receives (after
	// the capability drop): the daemon tells systemd READY=1 there.
	OnReady func()
}

// Gateway is a running (or ready to run) xgate daemon.
type Gateway struct {
	cfg  atomic.Pointer[config.Config]
	opts Options
	log  *slog.Logger

	path config.Mode // the receive path
	why  string      // why it was chosen
	eng  *engine.Engine

	ifindex int
	queues  int                     // active RX queues of the interface
	rxq     host.RxQueueCount       // how queues was learnt
	steps   []Step                  // the receive-path ladder: refused steps, then the one taken
	ifFeat  map[string]host.Feature // interface features as New got them
	// kernFeat is the kernel features' report, probed once (kernOnce).
	kernFeat host.Features
	kernOnce sync.Once
	xdp      *bpf.XDP
	xdpLink  link.Link
	xdpMode  bpf.AttachMode // "" without XDP
	reuse    *bpf.Reuseport

	probes        *bpf.Probes // nil: disabled or not loadable
	probesMissing []string    // "name: why" of each probe not running

	sinks   *sink.Sinks
	fb      *feedback
	workers []*worker
	sockets []*udpSocket
	xsks    []*xskQueue
	// membershipFd holds the multicast memberships of the afxdp path
	// (multicast_linux.go); 0: none.
	membershipFd int

	stop     atomic.Bool
	stopOnce sync.Once
	fbStop   chan struct{}
	wg       sync.WaitGroup
	fbDone   chan struct{}
	started  atomic.Int64 // unix ns when Run started; 0 before
	closed   atomic.Bool  // teardown done: sockets and maps are closed
	// sockMu keeps Stats from reading a socket's counters while teardown
	// closes it (a closed fd number may be reused by anything).
	sockMu sync.RWMutex
	// finalXDP is the last reading of the XDP counters, taken just before
	// the program is closed, so Stats works after Stop.
	finalXDP atomic.Pointer[bpf.Counters]
	// kdropBase is the kernel-drop term the probes' (pinned) maps held at
	// load; finalKDrops its last reading before teardown closed them.
	kdropBase   uint64
	finalKDrops atomic.Pointer[uint64]
	// xdpBase is what the XDP counters held when this gateway loaded the
	// program: pinned maps are reused across restarts and keep counting,
	// while the engine's counters start at zero, so Stats subtracts it.
	xdpBase bpf.Counters

	reloadMu sync.Mutex // serialises Reload

	// hk keeps other threads off the workers' CPUs (workers.cpus); nil
	// when there is nothing to keep them off. pinned counts down as the
	// workers pin themselves; hkStop/hkDone end its loop.
	hk     *host.Housekeeping
	pinned sync.WaitGroup
	hkStop chan struct{}
	hkDone chan struct{}
	// sw logs sink faults while the gateway runs (nil without sinks);
	// swStop/swDone end its loop.
	sw     *sink.Watch
	swStop chan struct{}
	swDone chan struct{}
	// em reports every_slide window aggregates (emitter.go); nil without
	// a sink of aggregates.
	em *emitter

	web   atomic.Pointer[httpServer] // set by Run when http.listen is not ""
	locks []*host.Lock               // this daemon's ports and pin directory; released last

	startCfg      *config.Config               // what New built: restart keys compare to it
	restartNeeded []string                     // keys changed since start that need one; reloadMu
	lastReload    atomic.Pointer[ReloadResult] // nil before the first reload
	tap           *tap.Hub                     // GET /tap; set by New

	lists *lists.Set // the enrichment lists and the watch on their files
}

// New sets everything up — engine, XDP program and link, sockets, sinks,
// workers — without starting to receive. It must run in the network
// namespace of cfg.Interface (sockets and links bind to the caller's
// namespace); everything after it may run anywhere. On error nothing is
// left attached, pinned or open.
func New(cfg *config.Config, opts Options) (g *Gateway, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 5 * time.Second
	}
	if opts.RecvTimeout <= 0 {
		opts.RecvTimeout = 100 * time.Millisecond
	}
	g = &Gateway{opts: opts, log: opts.Logger, fbStop: make(chan struct{}), fbDone: make(chan struct{}),
		hkStop: make(chan struct{}), hkDone: make(chan struct{}), swStop: make(chan struct{}), swDone: make(chan struct{})}
	g.cfg.Store(cfg)
	g.startCfg = cfg
	built := g // "return nil, err" clears g before this runs
	defer func() {
		if err != nil {
			built.teardown()
			g = nil
		}
	}()
	g.lists = lists.New(g.log, &g.reloadMu)
	ec := cfg.EngineConfig()
	var commitLists func()
	ec.Lists, commitLists = g.lists.Prepare(cfg)
	if g.eng, err = engine.New(ec); err != nil {
		return nil, fmt.Errorf("compile rules: %w", err)
	}
	commitLists()
	// The capabilities of every setup step, before any is taken: of the
	// configured path, or of the one auto chose from the privileges.
	if p := preflight.ConfiguredPath(cfg.Mode); p != "" {
		if err := g.checkCaps(cfg, p); err != nil {
			return nil, err
		}
	}
	if g.path, g.why, err = preflight.ChoosePath(cfg); err != nil {
		return nil, err
	}
	if preflight.ConfiguredPath(cfg.Mode) == "" {
		if err := g.checkCaps(cfg, g.path); err != nil {
			// auto: what the capabilities do not allow falls back as a
			// missing privilege does in preflight.ChoosePath.
			g.path, g.why = config.ModePlain, "auto: no BPF possible ("+err.Error()+"); plain UDP sockets, blocks are not enforced in the kernel"
		}
	}
	// One daemon per UDP port in this network namespace and per pin
	// directory, locked before anything is attached.
	for _, port := range cfg.Listen.Ports {
		l, err := host.LockPort(port)
		if err != nil {
			return nil, err
		}
		if l.Skipped != "" {
			g.log.Warn("one daemon per port not enforced", "port", port, "why", l.Skipped)
		}
		g.locks = append(g.locks, l)
	}
	// Plain mode pins nothing: it leaves /sys/fs/bpf as it is.
	if g.path != config.ModePlain {
		if mounted, err := host.EnsureBPFFS(cfg.Pin.Path); err != nil {
			return nil, err
		} else if mounted {
			g.log.Info("mounted bpffs at /sys/fs/bpf for the pins")
		}
		if cfg.Pin.Path != "" {
			l, err := host.LockDir(cfg.Pin.Path)
			if err != nil {
				return nil, err
			}
			g.locks = append(g.locks, l)
		}
	}
	// Before anything is attached: a missing privilege fails here.
	rtPrio := cfg.Workers.RealtimePriority
	if rtPrio > 0 {
		if err := host.CheckRealtime(rtPrio); err != nil {
			return nil, fmt.Errorf("workers.realtime_priority: %w", err)
		}
		if host.RTThrottlingOff() {
			g.log.Warn("workers.realtime_priority with RT throttling off (" + host.RTRuntimePath + " = -1): " +
				"a busy worker never yields its CPU to other threads, ksoftirqd included")
		}
		g.log.Info("workers run SCHED_FIFO", "priority", rtPrio)
	}
	g.log.Info("receive path: trying", "path", g.path, "why", g.why)
	cpus, err := g.openPath(cfg)
	if err != nil {
		return nil, err
	}
	g.finishSteps()
	g.log.Info("receive path chosen", "path", g.path, "xdp_mode", g.xdpMode, "why", g.why)
	g.logFeatures()
	g.setupProbes(cfg)
	if g.sinks, err = sink.New(cfg.SinkSpecs(), len(cpus)); err != nil {
		return nil, fmt.Errorf("sinks: %w", err)
	}
	routes, err := g.sinks.Routes(cfg.SinkRoutes())
	if err != nil {
		return nil, fmt.Errorf("rules' to: %w", err)
	}
	g.sinks.SetRoutes(routes)
	if len(cfg.Sinks) > 0 {
		g.sw = sink.NewWatch(g.log, g.sinks)
	}
	if g.sinks.WantsAggregates() {
		g.em = newEmitter(g.eng.NewEmitter(), g.sinks.EmitWriter())
	} else if names := cfg.EmitsWithoutSink(); len(names) > 0 {
		g.log.Warn("rules emit window aggregates but no sink has what: aggregates: they go nowhere", "rules", names)
	}
	var target Blocker
	if g.xdp != nil {
		target = g.xdp
	}
	g.fb = newFeedback(target, cfg.XDP.BlockMax, g.log)
	g.tap = tap.NewHub(monotonicNs)
	if listed, _ := host.ParseCPUList(cfg.Workers.CPUs); len(listed) > 0 { // checked by the config and topology
		if g.hk, err = host.NewHousekeeping(listed); err != nil {
			return nil, fmt.Errorf("workers.cpus: %w", err)
		}
		if g.hk != nil {
			g.log.Info("other threads kept off the workers' CPUs", "workers", host.FormatCPUList(listed),
				"others", host.FormatCPUList(g.hk.CPUs))
		}
	}
	g.pinned.Add(len(cpus))
	for i, cpu := range cpus {
		w := &worker{id: i, cpu: cpu, rtPrio: rtPrio, ew: g.eng.NewWorker(), sw: g.sinks.Writer(i), fb: g.fb, tap: g.tap,
			hk: g.hk, pinned: &g.pinned, recvTimeout: g.opts.RecvTimeout}
		if i < len(g.sockets) {
			w.sock = g.sockets[i]
			w.batch = newBatch(max(1, cfg.Socket.Batch), cfg.Limits.MaxDatagram+1)
		}
		if i < len(g.xsks) {
			w.xsk = g.xsks[i]
		}
		g.workers = append(g.workers, w)
	}
	return g, nil
}

// setupXDP loads the program and attaches it through a bpf_link — native,
// else generic with a warning (also when xdp_native is switched off); a
// stale netlink-attached xgate program is removed first — and records the
// interface's active RX queue count and what the attach got.
func (g *Gateway) setupXDP(cfg *config.Config) error {
	if cfg.Interface == "" {
		return errors.New("interface is required for the afxdp and socket modes")
	}
	lnk, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		return fmt.Errorf("interface %q: %w (is it in this network namespace?)", cfg.Interface, err)
	}
	g.ifindex = lnk.Attrs().Index
	g.rxq = host.ActiveRxQueues(cfg.Interface)
	g.queues = g.rxq.Active
	if g.rxq.Source != "ethtool" {
		g.log.Warn("active RX queues of the interface from "+g.rxq.Source, "interface", cfg.Interface,
			"queues", g.queues, "why", g.rxq.Note)
	}
	if err := preflight.ProbeXDPLink(); err != nil {
		return fmt.Errorf("attach xdp to %s: %w (xgate attaches XDP only through a bpf_link, which detaches when the process dies)",
			cfg.Interface, err)
	}
	xo := bpf.Options{
		PinPath: cfg.Pin.Path, Queues: g.queues, BlocklistSize: cfg.XDP.BlocklistSize,
		ListenPorts: cfg.Listen.Ports, Config: xdpConfig(cfg, g.path),
	}
	if g.xdp, err = bpf.LoadXDP(xo); err != nil {
		return err
	}
	if g.xdpBase, err = g.xdp.ReadCounters(); err != nil {
		return err
	}
	if err := g.xdp.SetCIDRLists(cidrLists(cfg, nil)); err != nil {
		return fmt.Errorf("xdp.never_block, xdp.drop and their lists: %w", err)
	}
	if err := g.xdp.SetGroups(cfg.Listen.Groups); err != nil {
		return fmt.Errorf("listen.groups: %w", err)
	}
	g.lists.PushCIDR = g.pushCIDRList
	if err := clearStale(lnk, g.log); err != nil {
		return err
	}
	var nerr error
	if bpf.ForcedOff(bpf.FeatXDPNative) {
		nerr = bpf.ForcedErr(bpf.FeatXDPNative)
	} else {
		g.xdpLink, nerr = g.xdp.Attach(g.ifindex, link.XDPDriverMode)
		if nerr != nil {
			nerr = host.RefusedErr{Err: nerr}
		}
	}
	g.setIfFeature(bpf.FeatXDPNative, nerr)
	g.xdpMode = bpf.AttachNative
	if nerr != nil {
		// Generic for native is a step down every mode allows.
		g.refused(g.path, bpf.AttachNative, nerr, note(g.path.String()+" generic (skb mode: slower, the packet is already an skb)"))
		g.xdpMode = bpf.AttachGeneric
		if g.xdpLink, err = g.xdp.Attach(g.ifindex, link.XDPGenericMode); err != nil {
			return fmt.Errorf("attach xdp to %s: %w", cfg.Interface, err)
		}
	}
	stamp, stampWhy := g.xdp.Stamp()
	g.log.Info("XDP program attached", "interface", cfg.Interface, "mode", g.xdpMode, "queues", g.queues,
		"queues_from", g.rxq.Source, "pinned", cfg.Pin.Path, "stamp", stamp.String(), "stamp_why", stampWhy)
	return nil
}

// clearStale removes an XDP program attached through netlink whose name
// says it is ours: what a crashed older xgate that did not use bpf_link
// would leave. Programs of others are left alone (attach then fails with a
// clear EBUSY error).
func clearStale(lnk netlink.Link, log *slog.Logger) error {
	x := lnk.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return nil
	}
	name, err := progName(x.ProgId)
	if err != nil || len(name) < 5 || name[:5] != "xgate" {
		return nil
	}
	// A bpf_link-attached program also shows here; detaching through
	// netlink fails for it (EBUSY/EINVAL), and that link belongs to a live
	// process, so only log.
	if err := netlink.LinkSetXdpFd(lnk, -1); err != nil {
		log.Warn("an xgate XDP program is attached by a live process or link", "interface", lnk.Attrs().Name, "prog_id", x.ProgId)
		return nil
	}
	log.Warn("removed a stale xgate XDP program left attached through netlink", "interface", lnk.Attrs().Name, "prog_id", x.ProgId)
	return nil
}

// Path returns the receive path and why it was chosen: in mode auto with
// every step refused on the way down and why (Steps has them one by one).
func (g *Gateway) Path() (config.Mode, string) { return g.path, g.why }

// Engine returns the rule engine (for stats and tests).
func (g *Gateway) Engine() *engine.Engine { return g.eng }

// Run receives until ctx ends, then stops: stop intake, drain workers,
// flush sinks, detach, unpin. It returns the first worker error, if any.
func (g *Gateway) Run(ctx context.Context) error {
	g.started.Store(time.Now().UnixNano())
	go func() {
		defer close(g.swDone)
		if g.sw != nil {
			g.sw.Run(g.swStop)
		}
	}()
	go func() {
		defer close(g.fbDone)
		g.fb.run(g.fbStop)
	}()
	if g.em != nil {
		g.em.start()
	}
	go func() {
		defer close(g.hkDone)
		if g.hk == nil {
			return
		}
		// Only once every worker has pinned itself: a scan that read a
		// worker's affinity before it pinned could undo the pin.
		pinned := make(chan struct{})
		go func() { g.pinned.Wait(); close(pinned) }()
		select {
		case <-pinned:
		case <-g.hkStop:
			return
		}
		g.hk.Run(g.hkStop)
	}()
	if len(g.Config().Lists) > 0 {
		g.reloadMu.Lock()
		if err := g.lists.Start(); err != nil {
			g.log.Warn("list files are reloaded on SIGHUP only", "err", err)
		}
		g.reloadMu.Unlock()
	}
	if err := g.startHTTP(); err != nil {
		for range g.workers {
			g.pinned.Done() // they never start
		}
		return errors.Join(err, g.Stop())
	}
	spareP(len(g.workers), os.Getenv("GOMAXPROCS"))
	for _, w := range g.workers {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if w.sock != nil {
				w.runSocket(&g.stop)
			} else {
				w.runXSK(&g.stop)
			}
		}()
	}
	if g.opts.DropCaps {
		g.pinned.Wait() // the workers' SCHED_FIFO needs CAP_SYS_NICE
		g.dropCaps()
	}
	if h := g.web.Load(); h != nil {
		h.ready.Store(true)
	}
	g.log.Info("receiving", "workers", len(g.workers), "ports", g.Config().Listen.Ports)
	if g.opts.OnReady != nil {
		g.opts.OnReady()
	}
	<-ctx.Done()
	return g.Stop()
}

// Stop stops intake, drains the workers, flushes the sinks and detaches,
// within Options.StopTimeout. It is safe to call more than once.
func (g *Gateway) Stop() error {
	var err error
	g.stopOnce.Do(func() {
		deadline := time.Now().Add(g.opts.StopTimeout)
		if h := g.web.Load(); h != nil {
			h.ready.Store(false) // /readyz fails while draining; /metrics serves to the end
		}
		g.stop.Store(true)
		for _, s := range g.sockets {
			s.shutdown()
		}
		for _, x := range g.xsks {
			_ = x.sock.Wake() // an idle afxdp worker sleeps without a timeout
		}
		done := make(chan struct{})
		go func() { g.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
			err = errors.New("workers did not stop in time")
		}
		g.lists.Stop() // before teardown closes the XDP maps it pushes into
		close(g.fbStop)
		<-g.fbDone
		close(g.hkStop)
		<-g.hkDone
		if g.em != nil {
			g.em.stop() // before the sinks close: its last records go out
		}
		close(g.swStop)
		<-g.swDone
		for _, w := range g.workers {
			if e := w.err.Load(); e != nil && err == nil {
				err = *e
			}
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
		defer cancel()
		if g.sinks != nil {
			if e := g.sinks.Close(ctx); e != nil && err == nil {
				err = fmt.Errorf("flush sinks: %w", e)
			}
			if g.sw != nil {
				g.sw.Check(time.Now())
				g.sw.Final()
			}
		}
		if e := g.teardown(); e != nil && err == nil {
			err = e
		}
		if st, e := g.Stats(); e == nil {
			g.log.Info("final accounting", "xdp_seen", st.XDPSeen, "xdp_dropped", st.XDPDrops, "not_for_us", st.NotForUs,
				"socket_dropped", st.SocketDrops, "ring_dropped", st.RingDrops, "decode_errors", st.Engine.DecodeErrorTotal(),
				"events", st.Engine.Events, "pass", st.Engine.Verdicts[engine.ActionPass], "drop", st.Engine.Verdicts[engine.ActionDrop],
				"alert", st.Engine.Verdicts[engine.ActionAlert], "block", st.Engine.Verdicts[engine.ActionBlock])
		}
		g.stopHTTP()
		g.log.Info("stopped", "uptime", time.Since(time.Unix(0, g.started.Load())).Round(time.Millisecond))
	})
	return err
}

// teardown closes sockets, detaches and unpins (unless pin.keep).
func (g *Gateway) teardown() error {
	if g.closed.Load() {
		return nil
	}
	var errs []error
	for _, w := range g.workers {
		w.readSocketDrops() // the last reading, before the sockets close
	}
	if g.xdp != nil {
		if c, err := g.xdp.ReadCounters(); err == nil {
			g.finalXDP.Store(&c)
		}
	}
	if g.path == config.ModeSocket {
		if n, ok := g.kernelDropsAfterXDP(); ok {
			g.finalKDrops.Store(&n)
		}
	}
	g.sockMu.Lock()
	g.closed.Store(true)
	for _, s := range g.sockets {
		errs = append(errs, s.close())
	}
	g.sockMu.Unlock()
	g.closeXSKs()
	errs = append(errs, g.closeMembership())
	if g.probes != nil {
		if !g.Config().Pin.Keep {
			errs = append(errs, g.probes.Unpin())
		}
		errs = append(errs, g.probes.Close())
	}
	if g.xdpLink != nil {
		errs = append(errs, g.xdpLink.Close())
	}
	if g.reuse != nil {
		if !g.Config().Pin.Keep {
			errs = append(errs, g.reuse.Unpin())
		}
		errs = append(errs, g.reuse.Close())
	}
	if g.xdp != nil {
		if !g.Config().Pin.Keep {
			errs = append(errs, g.xdp.Unpin())
		}
		errs = append(errs, g.xdp.Close())
	}
	// Last: a daemon started after this one returns finds nothing of ours.
	for _, l := range g.locks {
		errs = append(errs, l.Release())
	}
	g.locks = nil
	return errors.Join(errs...)
}

// Config returns the configuration in force.
func (g *Gateway) Config() *config.Config { return g.cfg.Load() }

// ReloadResult is the outcome of the last reload: /status shows it, and
// xgate reload waits for it.
type ReloadResult struct {
	Seq     uint64    `json:"seq"` // 1 for the first reload of this process
	Time    time.Time `json:"time"`
	Applied bool      `json:"applied"`
	Error   string    `json:"error,omitempty"` // why it was rejected
	// RestartNeeded names the changed keys that take effect only at the
	// next start; everything else of the file is in force.
	RestartNeeded []string `json:"restart_needed,omitempty"`
}

// LastReload returns the outcome of the last reload, nil before the first.
func (g *Gateway) LastReload() *ReloadResult { return g.lastReload.Load() }

// ReloadFailed records a reload that never reached Reload (the file could
// not be read or parsed) and returns its result.
func (g *Gateway) ReloadFailed(err error) ReloadResult {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	return g.noteReload(err, nil)
}

// noteReload stores the outcome of a reload; reloadMu is held.
func (g *Gateway) noteReload(err error, restart []string) ReloadResult {
	r := ReloadResult{Time: time.Now().UTC(), Applied: err == nil, RestartNeeded: restart}
	if prev := g.lastReload.Load(); prev != nil {
		r.Seq = prev.Seq
	}
	r.Seq++
	if err != nil {
		r.Error = err.Error()
	}
	g.lastReload.Store(&r)
	return r
}

// Reload swaps in the rules of cfg atomically (no frame is lost or decided
// by a mix of old and new rules) and applies its XDP policy. A bad cfg is
// rejected and everything keeps running as before. Changes that need new
// sockets or a new program (interface, mode, ports, pinning, sinks) are
// reported (log, /status, LastReload) and take effect at the next start.
// LastReload has the result.
func (g *Gateway) Reload(cfg *config.Config) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	err := g.reload(cfg)
	var restart []string
	if err == nil {
		restart = g.restartNeeded
	}
	g.noteReload(err, restart)
	return err
}

func (g *Gateway) reload(cfg *config.Config) error {
	old := g.Config()
	// The sinks stay (they change at a restart): the rules' to: must
	// name them.
	routes, err := g.sinks.Routes(cfg.SinkRoutes())
	if err != nil {
		return fmt.Errorf("reload rejected, old rules keep running: %w", err)
	}
	ec := cfg.EngineConfig()
	var commitLists func()
	ec.Lists, commitLists = g.lists.Prepare(cfg)
	if err := g.eng.Reload(ec); err != nil {
		return fmt.Errorf("reload rejected, old rules keep running: %w", err)
	}
	commitLists()
	// Decided by the new rules from here on, a few events of the old
	// ones may still meet the new routes (or the other way round): a
	// rule's routes change with it, not with the same event.
	g.sinks.SetRoutes(routes)
	if len(cfg.Lists) > 0 && !g.lists.Watching() && g.started.Load() != 0 && !g.stop.Load() {
		if err := g.lists.Start(); err != nil {
			g.log.Warn("list files are reloaded on SIGHUP only", "err", err)
		}
	}
	if g.xdp != nil {
		if err := g.xdp.SetConfig(xdpConfig(cfg, g.path)); err != nil {
			return fmt.Errorf("reload: rules swapped, but the XDP policy was not: %w", err)
		}
		if err := g.xdp.SetCIDRLists(cidrLists(cfg, nil)); err != nil {
			return fmt.Errorf("reload: rules swapped, but the CIDR lists were not: %w", err)
		}
		g.fb.setMax(cfg.XDP.BlockMax)
	}
	// Against what the process started with: a key changed back needs no
	// restart any more, one changed in an earlier reload still does.
	g.restartNeeded = restartKeys(g.startCfg, cfg)
	g.cfg.Store(cfg)
	if len(g.restartNeeded) > 0 {
		g.log.Warn("reloaded rules and XDP policy; these changes need a restart", "keys", g.restartNeeded)
	} else if len(restartKeys(old, cfg)) == 0 {
		g.log.Info("reloaded rules and XDP policy")
	} else {
		g.log.Info("reloaded rules and XDP policy; the keys that needed a restart are back as started")
	}
	return nil
}

// sameCPUList reports whether two cpulists name the same CPUs ("1-3" and
// "1,2,3" do).
func sameCPUList(a, b string) bool {
	x, errA := host.ParseCPUList(a)
	y, errB := host.ParseCPUList(b)
	return errA == nil && errB == nil && slices.Equal(x, y)
}

// restartKeys names the top-level keys that differ between old and cfg and
// take effect only at the next start (new sockets, program or threads).
func restartKeys(old, cfg *config.Config) []string {
	var restart []string
	if cfg.Interface != old.Interface {
		restart = append(restart, "interface")
	}
	if cfg.Mode != old.Mode {
		restart = append(restart, "mode")
	}
	// listen.vlans reaches the XDP program's config on reload; ports and
	// the address need new sockets.
	if fmt.Sprint(cfg.Listen.Ports) != fmt.Sprint(old.Listen.Ports) || cfg.Listen.Address != old.Listen.Address ||
		fmt.Sprint(cfg.Listen.Groups) != fmt.Sprint(old.Listen.Groups) {
		restart = append(restart, "listen")
	}
	if fmt.Sprint(cfg.Sinks) != fmt.Sprint(old.Sinks) {
		restart = append(restart, "sinks")
	}
	if cfg.Pin != old.Pin {
		restart = append(restart, "pin")
	}
	if cfg.Probes != old.Probes {
		restart = append(restart, "probes")
	}
	if cfg.Workers.RealtimePriority != old.Workers.RealtimePriority || !sameCPUList(cfg.Workers.CPUs, old.Workers.CPUs) {
		restart = append(restart, "workers")
	}
	if cfg.AFXDP != old.AFXDP {
		restart = append(restart, "afxdp")
	}
	// http.token and http.pprof apply at once (read per request); the
	// listener does not move.
	if cfg.HTTP.Listen != old.HTTP.Listen {
		restart = append(restart, "http.listen")
	}
	// The blocklist's map size is fixed when it is made; block_max applies.
	if cfg.XDP.BlocklistSize != old.XDP.BlocklistSize {
		restart = append(restart, "xdp.blocklist_size")
	}
	if cfg.Socket != old.Socket {
		restart = append(restart, "socket")
	}
	if cfg.GatewayID != old.GatewayID {
		restart = append(restart, "gateway_id")
	}
	return restart
}

// note is a step's description where the log wants a fmt.Stringer.
type note string

func (n note) String() string { return string(n) }

// pushCIDRList pushes the XDP program's CIDR lists with list name's
// contents replaced by d, when the config pushes that list (a file
// reload, gateway/lists). The caller holds reloadMu.
func (g *Gateway) pushCIDRList(name string, d *englists.ListData) error {
	cfg := g.Config()
	if g.xdp == nil || !slices.Contains(cfg.XDP.NeverBlockLists, name) && !slices.Contains(cfg.XDP.DropLists, name) {
		return nil
	}
	g.sockMu.RLock()
	defer g.sockMu.RUnlock()
	if g.closed.Load() {
		return nil
	}
	return g.xdp.SetCIDRLists(cidrLists(cfg, func(n string) *englists.ListData {
		if n == name {
			return d
		}
		return g.lists.Current(n)
	}))
}
