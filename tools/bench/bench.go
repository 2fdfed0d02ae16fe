//go:build linux

// Package bench is the benchmark harness behind `xgate bench` and the
// test-host mode of `xgate load`: it builds a veth test host pair, runs
// the gateway in one host with the default risk rules, drives the
// generator of tools/loadgen (XDP live frames, or an AF_XDP socket where
// the kernel refuses them: Options.Engine) from the other, and reports
// where every datagram went with the process's costs. Before the target
// starts it measures the generator alone (into an XDP-drop receiver, for
// CeilingDuration), so that a rate the generator bounds is never read as
// the gateway's.
//
// Layout on a 2-core machine: the sending thread is pinned to CPU 1, and
// with inline NAPI (no threaded NAPI on the pair) the receive work of the
// gateway's host (XDP program, AF_XDP copy, UDP stack) runs on that thread
// too; the gateway's worker follows its topology (the one queue → CPU 0).
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/gen"
	"github.com/xgate/xgate/tools/loadgen"
)

// Defaults of Options.
const (
	DefaultDuration = 10 * time.Second
	DefaultWarmup   = 2 * time.Second
	// DefaultSources spreads the load over enough client addresses that
	// the default rules' flood-source rule (10000/s per source, block
	// 30s) does not fire at the rates this machine reaches.
	DefaultSources = 4096
	senderCPU      = 1
	// DefaultCeilingDuration is the generator's run alone before a bench.
	DefaultCeilingDuration = time.Second
	// generatorBoundShare: a run whose decided rate reaches this share of
	// the generator's ceiling (or that was offered that much and dropped
	// next to nothing) is marked generator-bound.
	generatorBoundShare = 0.9
)

// Options shape one bench run.
type Options struct {
	Mode string // afxdp | socket | plain | baseline | gjson | rawsock | rawxsk
	// Engine is the generator's engine (loadgen.EngineAuto, the default:
	// live frames where the kernel allows them, else AF_XDP).
	Engine string
	// CeilingDuration is how long the generator runs alone at max rate
	// into an XDP-drop receiver before the target starts; default
	// DefaultCeilingDuration, < 0: not measured.
	CeilingDuration time.Duration
	Duration        time.Duration // the measured send; default DefaultDuration
	Warmup          time.Duration // before it; default DefaultWarmup, < 0: none
	Rate            float64       // offered datagrams/s; 0 = max
	Sources         int           // client addresses; default DefaultSources
	Events          gen.Config    // the event mix (Users, BadShare, Seed, ...)
	// InProcess runs the receiver in the bench's own process instead of a
	// child process of its own (see childEnv); its CPU time is then the
	// process's less the sending thread's, which also charges it the
	// generator's Go runtime. For callers that need the gateway object
	// (RunHistograms, tests).
	InProcess bool
	// RTPriority runs the gateway's workers SCHED_FIFO at this priority
	// (workers.realtime_priority); 0: SCHED_OTHER.
	RTPriority int
	// Spin is the gateway's afxdp.spin; 0: the
	// default, config.DefaultRxSpin. Negative: 0, sleep at once.
	Spin time.Duration
	// NoProbes runs the gateway without its kernel probes (probes.enabled:
	// false), to measure what they cost.
	NoProbes bool
	// NoRxTimestamps leaves host-wide software receive timestamps off
	// (probes.rx_timestamps: false; the socket path's latency histograms
	// then stay empty).
	NoRxTimestamps bool
	// Logger receives the gateway's log with InProcess (nil: warnings
	// and errors to stderr); a receiver in its own process logs its
	// warnings and errors to stderr.
	Logger *slog.Logger
	// Progress, if set, is called about twice a second during the sends.
	Progress func(p Progress)
	// CPUProfile, if set, is a file for a pprof CPU profile of the
	// receiver (its process: the gateway or the yardstick) over the
	// measured window ("{mode}" in it is replaced by the mode).
	CPUProfile string
}

// Progress is a snapshot during a run.
type Progress struct {
	Mode    string
	Phase   string // generator ceiling | start | warmup | measure | drain (a sweep: max, 10%, …)
	Elapsed time.Duration
	Decided uint64 // since the phase began
}

// Report is one run, with the JSON keys of `xgate bench --json`. Counts
// are over the measured window, the identity is
//
//	sent = xdp_dropped + not_ours + socket_dropped + ring_dropped + decode_errors + decided + unaccounted
//
// and unaccounted must be 0.
type Report struct {
	Mode                 string  `json:"mode"`
	DurationS            float64 `json:"duration_s"`
	Sent                 uint64  `json:"sent"`
	XDPDropped           uint64  `json:"xdp_dropped"`
	NotOurs              uint64  `json:"not_ours"`
	SocketDropped        uint64  `json:"socket_dropped"`
	RingDropped          uint64  `json:"ring_dropped"`
	DecodeErrors         uint64  `json:"decode_errors"`
	Decided              uint64  `json:"decided"`
	Unaccounted          int64   `json:"unaccounted"`
	EventsPerSec         float64 `json:"events_per_sec"`
	LatencyP50US         float64 `json:"latency_p50_us"`
	LatencyP99US         float64 `json:"latency_p99_us"`
	LatencyP999US        float64 `json:"latency_p999_us"`
	GCPerMin             float64 `json:"gc_per_min"`
	RSSBytes             uint64  `json:"rss_bytes"`
	CPUSecondsPerMillion float64 `json:"cpu_seconds_per_million"`
	// ReceiverCPUS is the receiver's CPU time over the window: that of
	// its own process (user + system; see childEnv), every thread of it,
	// its system calls and Go runtime included, and nothing of the
	// generator's. The same measure for every mode, the gateway's and the
	// yardsticks'. It leaves out, for every mode alike, the receiving
	// host's kernel path up to the socket or the AF_XDP ring (XDP, the
	// AF_XDP copy, the UDP stack, the probes' socket filter): that runs
	// in softirq on the sending thread's CPU and is charged to it. With Options.InProcess it is
	// the bench process's CPU time less the sending thread's.
	// EventsPerCPUS is events decided per receiver CPU-second.
	ReceiverCPUS  float64 `json:"receiver_cpu_s"`
	EventsPerCPUS float64 `json:"events_per_cpu_s"`
	// SenderCPUS is the sending thread's CPU time over the window (0 when
	// the engine does not measure it): the generator's and, in softirq,
	// the receiving host's kernel path. With the generator's own cost per
	// datagram fixed, its change between two runs of one load is the
	// change of that kernel path (the probes' socket filter, the receive
	// timestamps, XDP).
	SenderCPUS     float64 `json:"sender_cpu_s"`
	AllocsPerEvent float64 `json:"allocs_per_event"`
	// WorkerBusyS is the gateway workers' busy CPU time over the window
	// (the worker threads' CPU time on their batches, from a batch in hand
	// to done with it: not waiting, spinning, sleeping or preempted;
	// summed over workers; metrics.Stats.WorkerBusyCPU) and EventsPerBusyS
	// the capacity it implies: events decided per busy worker CPU-second,
	// a figure that holds when the generator, not the worker, is the wall.
	// 0 for the yardsticks, which do not measure it.
	WorkerBusyS    float64 `json:"worker_busy_s"`
	EventsPerBusyS float64 `json:"events_per_busy_s"`
	// Generator is the engine that sent (xdp: live frames, afxdp) and
	// GeneratorCeilingPPS its rate alone into an XDP-drop receiver (0: not
	// measured). GeneratorBound: the run's rate came within 10 % of that
	// ceiling, so it says more about the generator than the target.
	Generator           string  `json:"generator"`
	GeneratorCeilingPPS float64 `json:"generator_ceiling_pps"`
	GeneratorBound      bool    `json:"generator_bound"`

	// Not in the JSON: context for the table.
	OfferedPPS  float64 `json:"-"` // achieved send rate
	Undelivered uint64  `json:"-"` // never reached the gateway host's ring (veth); part of unaccounted
	Complete    bool    `json:"-"` // the accounting caught up with sent
	// ProcessAllocsPerEvent counts every allocation of the process over
	// the window (harness and generator included); AllocsPerEvent only
	// the gateway workers' (the same for the yardstick modes).
	ProcessAllocsPerEvent float64 `json:"-"`
	// What else the machine did over the window (see noise): other
	// processes' CPU and stolen time, in CPUs (1 = one CPU all along),
	// and the share of the window the workers waited runnable on a run
	// queue (summed over workers).
	OtherCPU, StealCPU, WorkerWait float64 `json:"-"`
}

// Run builds a test host pair, runs the gateway in o.Mode on it, warms up,
// measures, and removes everything again.
func Run(ctx context.Context, o Options) (rep Report, err error) {
	b, err := start(o)
	if err != nil {
		return rep, err
	}
	defer func() { err = errors.Join(err, b.close()) }()
	if err := b.warmup(ctx); err != nil {
		return rep, err
	}
	// A receiver in its own process profiles itself (child.go).
	stopProfile := func() error { return nil }
	if o.InProcess {
		if stopProfile, err = startCPUProfile(profilePath(o.CPUProfile, o.Mode)); err != nil {
			return rep, err
		}
	}
	rep, err = b.phase(ctx, "measure", b.o.Duration, b.o.Rate)
	return rep, errors.Join(err, stopProfile())
}

// withDefaults fills in the zero fields of o.
func (o Options) withDefaults() Options {
	if o.Duration <= 0 {
		o.Duration = DefaultDuration
	}
	if o.Warmup == 0 {
		o.Warmup = DefaultWarmup
	}
	if o.Sources <= 0 {
		o.Sources = DefaultSources
	}
	if o.Events.Seed == 0 {
		o.Events.Seed = 42
	}
	if o.Events.BigShare == 0 {
		o.Events.BigShare = 0.01
	}
	if o.CeilingDuration == 0 {
		o.CeilingDuration = DefaultCeilingDuration
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return o
}

// start builds the test host pair and starts the target of o.Mode in it;
// the runner's close removes both. Phases can then run one after the
// other against the same target (a sweep does).
func start(o Options) (_ *runner, err error) {
	o = o.withDefaults()
	if os.Geteuid() != 0 {
		return nil, errors.New("bench: needs root (network namespaces, veth, XDP)")
	}
	pair, err := testenv.NewPair(testenv.Options{RxQueues: 1})
	if err != nil {
		return nil, fmt.Errorf("bench: test hosts: %w", err)
	}
	b := &runner{o: o, pair: pair}
	defer func() {
		if err != nil {
			err = errors.Join(err, pair.Close())
		}
	}()
	if o.CeilingDuration > 0 {
		b.announce("generator ceiling")
		if b.ceiling, err = GeneratorCeiling(context.Background(), pair, b.loadOptions(0, o.CeilingDuration)); err != nil {
			return nil, fmt.Errorf("bench: generator ceiling: %w", err)
		}
	}
	b.announce("start")
	if o.InProcess {
		b.t, b.stop, b.allocs, err = startTarget(pair.B, o)
	} else if b.child, err = startChild(pair.B, o); err == nil {
		b.t, b.stop = b.child, b.child.stop
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// close stops the target and removes the test hosts.
func (b *runner) close() error {
	err := b.stop()
	if b.allocs != nil {
		b.allocs.stop()
	}
	return errors.Join(err, b.pair.Close())
}

// warmup runs the warm-up phase of b.o (none if Warmup < 0).
func (b *runner) warmup(ctx context.Context) error {
	if b.o.Warmup > 0 {
		if _, err := b.phase(ctx, "warmup", b.o.Warmup, b.o.Rate); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// runner is a test host pair with a target running in it. Its phases run
// one at a time, from one goroutine.
type runner struct {
	o      Options
	pair   *testenv.Pair
	t      target
	stop   func() error  // stops t
	child  *childTarget  // t, when it runs in a child process
	allocs *allocProfile // in-process gateway modes: allocations on the workers' stacks
	// ceiling is the generator alone (before the target started).
	ceiling Ceiling
}

// Ceiling is the generator's rate alone: at max rate into a receiver that
// drops every frame in XDP.
type Ceiling struct {
	Engine string
	PPS    float64
}

// GeneratorCeiling sends at max rate with lo (Rate and Duration as given)
// from pair.A into an XDP-drop receiver attached to pair.B for the run.
func GeneratorCeiling(ctx context.Context, pair *testenv.Pair, lo loadgen.Options) (c Ceiling, err error) {
	rcv, err := loadgen.AttachDrop(pair.B)
	if err != nil {
		return c, err
	}
	defer func() { err = errors.Join(err, rcv.Close()) }()
	return runCeiling(ctx, lo)
}

// loadOptions is the generator of b's phases: at rate (0: max) for d.
func (b *runner) loadOptions(rate float64, d time.Duration) loadgen.Options {
	o := b.o
	lo := loadgen.Options{
		Engine: o.Engine,
		From:   b.pair.A, To: b.pair.B, DstPort: Port,
		Frames: 1024, Sources: o.Sources, Events: o.Events,
		Rate: rate, Duration: d,
	}
	if runtime.NumCPU() > senderCPU {
		lo.CPU, lo.Pin = senderCPU, true
	}
	return lo
}

// gatewayConfig is GatewayConfig with o's tuning: realtime priority, spin.
func (o Options) gatewayConfig(ifname string) (*config.Config, error) {
	cfg, err := GatewayConfig(ifname, o.Mode)
	if err != nil {
		return nil, err
	}
	cfg.Workers.RealtimePriority = o.RTPriority
	if o.NoProbes {
		cfg.Probes.Enabled = false
	}
	if o.NoRxTimestamps {
		cfg.Probes.RxTimestamps = false
	}
	if o.Spin != 0 {
		cfg.AFXDP.Spin = max(o.Spin, 0)
	}
	return cfg, nil
}

// startGateway runs the gateway in o.Mode in h; stop ends it.
func startGateway(h *testenv.Host, o Options) (_ *gateway.Gateway, stop func() error, err error) {
	cfg, err := o.gatewayConfig(h.Link)
	if err != nil {
		return nil, nil, err
	}
	var g *gateway.Gateway
	if err := h.Do(func() error {
		var err error
		g, err = gateway.New(cfg, gateway.Options{Logger: o.Logger, RecvTimeout: 20 * time.Millisecond})
		return err
	}); err != nil {
		return nil, nil, fmt.Errorf("bench: gateway (%s): %w", o.Mode, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- g.Run(runCtx) }()
	var rcv *loadgen.Receiver
	stop = func() error {
		var err error
		if rcv != nil {
			err = rcv.Close()
		}
		cancel()
		if rerr := <-runDone; rerr != nil && !errors.Is(rerr, context.Canceled) {
			err = errors.Join(err, fmt.Errorf("bench: gateway: %w", rerr))
		}
		return err
	}
	if path, why := g.Path(); path.String() != o.Mode {
		return nil, nil, errors.Join(fmt.Errorf("bench: gateway chose path %s (%s), want %s", path, why, o.Mode), stop())
	}
	if o.Mode == string(config.ModePlain) {
		// veth drops frames from ndo_xdp_xmit unless its end has an XDP
		// program; the plain path has none, so pass everything on.
		if rcv, err = loadgen.AttachPass(h); err != nil {
			return nil, nil, errors.Join(err, stop())
		}
	}
	return g, stop, nil
}

// phase sends at rate (0: max) for d and waits until the target has
// accounted for what was sent (or made no progress for 1 s), and reports
// the window.
func (b *runner) phase(ctx context.Context, name string, d time.Duration, rate float64) (Report, error) {
	o := b.o
	lg, err := loadgen.New(b.loadOptions(rate, d))
	if err != nil {
		return Report{}, err
	}
	defer lg.Close()

	u0, err := b.usage(true)
	if err != nil {
		return Report{}, err
	}
	s0 := u0.Tally
	noise0 := b.readNoise(u0)
	start := time.Now()

	type sendDone struct {
		res loadgen.Result
		err error
	}
	ch := make(chan sendDone, 1)
	go func() {
		r, err := lg.Send(ctx, 0)
		ch <- sendDone{r, err}
	}()
	var sd sendDone
	tick := time.NewTicker(500 * time.Millisecond)
wait:
	for {
		select {
		case sd = <-ch:
			break wait
		case <-tick.C:
			b.progress(name, start, &s0)
		}
	}
	tick.Stop()
	if sd.err != nil {
		return Report{}, fmt.Errorf("bench: load: %w", sd.err)
	}
	res := sd.res

	// Drain: until everything sent is accounted for; 1 s without
	// progress ends it (the run is then incomplete).
	var s1 tally
	complete := false
	last, lastChange := uint64(0), time.Now()
	for {
		if s1, err = b.t.tally(); err != nil {
			return Report{}, err
		}
		acc := s1.accounted() - s0.accounted()
		if acc+res.Undelivered() >= res.Sent {
			complete = true
			break
		}
		if acc != last {
			last, lastChange = acc, time.Now()
		} else if time.Since(lastChange) > time.Second {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	if !complete {
		elapsed -= time.Second
	}
	u1, err := b.usage(false)
	if err != nil {
		return Report{}, err
	}
	noise1 := b.readNoise(u1)
	cpu := u1.CPU - u0.CPU
	if b.child == nil {
		cpu -= res.SenderCPU
	}
	lat0, lat1 := u0.Latency, u1.Latency
	workerAllocs := u1.WorkerAllocs - u0.WorkerAllocs

	r := Report{
		Mode:          o.Mode,
		DurationS:     elapsed.Seconds(),
		Sent:          res.Sent,
		XDPDropped:    s1.XDPDrops - s0.XDPDrops,
		NotOurs:       s1.NotOurs - s0.NotOurs,
		SocketDropped: s1.SocketDrops - s0.SocketDrops,
		RingDropped:   s1.RingDrops - s0.RingDrops,
		DecodeErrors:  s1.DecodeErrors - s0.DecodeErrors,
		Decided:       s1.Decided - s0.Decided,
		OfferedPPS:    res.PPS(),
		Undelivered:   res.Undelivered(),
		Complete:      complete,
		RSSBytes:      u1.RSS,
		Generator:     lg.Engine(),
		WorkerBusyS:   (s1.Busy - s0.Busy).Seconds(),
		SenderCPUS:    res.SenderCPU.Seconds(),
	}
	r.GeneratorCeilingPPS = b.ceiling.PPS
	if r.WorkerBusyS > 0 {
		r.EventsPerBusyS = float64(r.Decided) / r.WorkerBusyS
	}
	r.noiseOver(noise0, noise1, elapsed)
	r.Unaccounted = int64(r.Sent) - int64(r.XDPDropped+r.NotOurs+r.SocketDropped+r.RingDropped+r.DecodeErrors+r.Decided)
	if elapsed > 0 {
		r.EventsPerSec = float64(r.Decided) / elapsed.Seconds()
		r.GCPerMin = float64(u1.NumGC-u0.NumGC) / elapsed.Minutes()
	}
	r.ReceiverCPUS = max(0, cpu.Seconds())
	if r.ReceiverCPUS > 0 {
		r.EventsPerCPUS = float64(r.Decided) / r.ReceiverCPUS
	}
	if r.Decided > 0 {
		r.CPUSecondsPerMillion = r.ReceiverCPUS / (float64(r.Decided) / 1e6)
		r.ProcessAllocsPerEvent = float64(u1.Mallocs-u0.Mallocs) / float64(r.Decided)
		r.AllocsPerEvent = r.ProcessAllocsPerEvent
		if u1.Allocs {
			r.AllocsPerEvent = float64(workerAllocs) / float64(r.Decided)
		}
	}
	var h [gateway.LatencyBuckets]uint64
	for i := range h {
		h[i] = lat1[i] - lat0[i]
	}
	r.LatencyP50US = Quantile(h[:], 0.5)
	r.LatencyP99US = Quantile(h[:], 0.99)
	r.LatencyP999US = Quantile(h[:], 0.999)
	r.GeneratorBound = r.generatorBound()
	return r, nil
}

// generatorBound: the decided rate came within generatorBoundShare of the
// generator's ceiling, or the offered rate did while the target dropped
// next to nothing for want of room (it kept up with all it was given).
func (r *Report) generatorBound() bool {
	c := r.GeneratorCeilingPPS
	if c <= 0 {
		return false
	}
	if r.EventsPerSec >= generatorBoundShare*c {
		return true
	}
	kept := r.SocketDropped+r.RingDropped <= r.Sent/1000
	return kept && r.OfferedPPS >= generatorBoundShare*c
}

// announce reports a step with nothing counted yet (setup, the
// generator's ceiling), so a bench with its progress on is never silent
// for long.
func (b *runner) announce(phase string) {
	if b.o.Progress != nil {
		b.o.Progress(Progress{Mode: b.o.Mode, Phase: phase})
	}
}

func (b *runner) progress(phase string, start time.Time, s0 *tally) {
	if b.o.Progress == nil {
		return
	}
	s, err := b.t.tally()
	if err != nil {
		return
	}
	b.o.Progress(Progress{Mode: b.o.Mode, Phase: phase, Elapsed: time.Since(start), Decided: s.Decided - s0.Decided})
}

// Quantile reads quantile q (0..1) off a log2 histogram in µs (bucket i:
// (2^(i-1), 2^i] µs, bucket 0: [0, 1] µs), interpolating linearly inside
// the bucket; 0 for an empty histogram.
func Quantile(h []uint64, q float64) float64 {
	var total uint64
	for _, c := range h {
		total += c
	}
	if total == 0 {
		return 0
	}
	target := q * float64(total)
	var cum float64
	for i, c := range h {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= target {
			lo, hi := 0.0, 1.0
			if i > 0 {
				lo, hi = math.Ldexp(1, i-1), math.Ldexp(1, i)
			}
			return lo + (hi-lo)*(target-cum)/float64(c)
		}
		cum += float64(c)
	}
	return math.Ldexp(1, len(h)-1)
}

// usage reads the receiver's tally and costs (readCosts) at the start
// (begin) or the end of a window.
func (b *runner) usage(begin bool) (usage, error) {
	if b.child != nil {
		return b.child.usage(begin)
	}
	var u usage
	var err error
	if u.Tally, err = b.t.tally(); err != nil {
		return u, err
	}
	u.Latency = b.t.latency()
	u.readCosts(b.allocs, begin)
	return u, nil
}

// readCosts fills u's costs of this process, the one the receiver runs
// in (the bench's with Options.InProcess, else the child's): CPU time,
// allocations (on the workers when allocs is not nil), GCs, RSS and the
// workers' run-queue wait. At the start of a window (begin) the
// allocations are counted before the CPU time is read, at its end after:
// counting runs a garbage collection, which is the harness's work, not
// the receiver's.
func (u *usage) readCosts(allocs *allocProfile, begin bool) {
	if allocs != nil && begin {
		u.WorkerAllocs, u.Allocs = allocs.count(), true
	}
	u.CPU = processCPU()
	if allocs != nil && !begin {
		u.WorkerAllocs, u.Allocs = allocs.count(), true
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	u.Mallocs, u.NumGC, u.RSS = ms.Mallocs, ms.NumGC, rss()
	u.Wait = workerRunDelay()
}

// processCPU is the user+system time of this process so far.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss is this process's resident set size (VmRSS), 0 if unknown.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// Compare runs each mode in turn with the same load.
func Compare(ctx context.Context, modes []string, o Options) ([]Report, error) {
	var out []Report
	for _, m := range modes {
		o.Mode = m
		r, err := Run(ctx, o)
		if err != nil {
			return out, fmt.Errorf("%s: %w", m, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// row is one line of the table: a label and how to read the value.
type row struct {
	label string
	val   func(r *Report) float64
	fmt   func(v float64) string
	ratio bool // print a ratio against the first run
}

func count(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
func fixed(p int) func(float64) string {
	return func(v float64) string { return strconv.FormatFloat(v, 'f', p, 64) }
}
func mega(v float64) string  { return fmt.Sprintf("%.3f M", v/1e6) }
func mib(v float64) string   { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }
func usec(v float64) string  { return fmt.Sprintf("%.1f µs", v) }
func secs(v float64) string  { return fmt.Sprintf("%.2f s", v) }
func cpuPM(v float64) string { return fmt.Sprintf("%.3f s", v) }
func cpus(v float64) string  { return fmt.Sprintf("%.2f CPU", v) }
func pct(v float64) string   { return fmt.Sprintf("%.1f %%", 100*v) }

var rows = []row{
	{"duration", func(r *Report) float64 { return r.DurationS }, secs, false},
	{"offered rate /s", func(r *Report) float64 { return r.OfferedPPS }, mega, true},
	{"sent", func(r *Report) float64 { return float64(r.Sent) }, count, true},
	{"xdp_dropped", func(r *Report) float64 { return float64(r.XDPDropped) }, count, false},
	{"not_ours", func(r *Report) float64 { return float64(r.NotOurs) }, count, false},
	{"socket_dropped", func(r *Report) float64 { return float64(r.SocketDropped) }, count, false},
	{"ring_dropped", func(r *Report) float64 { return float64(r.RingDropped) }, count, false},
	{"decode_errors", func(r *Report) float64 { return float64(r.DecodeErrors) }, count, false},
	{"decided", func(r *Report) float64 { return float64(r.Decided) }, count, true},
	{"unaccounted", func(r *Report) float64 { return float64(r.Unaccounted) }, count, false},
	{"events/s", func(r *Report) float64 { return r.EventsPerSec }, mega, true},
	{"latency p50", func(r *Report) float64 { return r.LatencyP50US }, usec, false},
	{"latency p99", func(r *Report) float64 { return r.LatencyP99US }, usec, false},
	{"latency p99.9", func(r *Report) float64 { return r.LatencyP999US }, usec, false},
	{"GC /min", func(r *Report) float64 { return r.GCPerMin }, fixed(1), false},
	{"RSS", func(r *Report) float64 { return float64(r.RSSBytes) }, mib, false},
	{"CPU s / M events", func(r *Report) float64 { return r.CPUSecondsPerMillion }, cpuPM, true},
	{"receiver CPU", func(r *Report) float64 { return r.ReceiverCPUS }, secs, false},
	{"events / receiver CPU-s", func(r *Report) float64 { return r.EventsPerCPUS }, mega, true},
	{"sender thread CPU", func(r *Report) float64 { return r.SenderCPUS }, secs, false},
	{"worker busy CPU", func(r *Report) float64 { return r.WorkerBusyS }, secs, false},
	{"events / busy CPU-s", func(r *Report) float64 { return r.EventsPerBusyS }, mega, true},
	{"generator ceiling /s", func(r *Report) float64 { return r.GeneratorCeilingPPS }, mega, false},
	{"allocs/event (workers)", func(r *Report) float64 { return r.AllocsPerEvent }, fixed(4), false},
	{"allocs/event (process)", func(r *Report) float64 { return r.ProcessAllocsPerEvent }, fixed(5), false},
	{"other processes' CPU", func(r *Report) float64 { return r.OtherCPU }, cpus, false},
	{"stolen CPU (hypervisor)", func(r *Report) float64 { return r.StealCPU }, cpus, false},
	{"worker run-queue wait", func(r *Report) float64 { return r.WorkerWait }, pct, false},
}

// WriteTable prints the reports side by side, with ratios against the
// first for the rates and costs.
func WriteTable(w io.Writer, reps []Report) {
	if len(reps) == 0 {
		return
	}
	head := []string{""}
	for i, r := range reps {
		head = append(head, r.Mode)
		if i > 0 {
			head = append(head, r.Mode+"/"+reps[0].Mode)
		}
	}
	table := [][]string{head}
	for _, rw := range rows {
		line := []string{rw.label}
		base := rw.val(&reps[0])
		for i := range reps {
			v := rw.val(&reps[i])
			line = append(line, rw.fmt(v))
			if i > 0 {
				ratio := ""
				if rw.ratio && base != 0 {
					ratio = fmt.Sprintf("%.2f×", v/base)
				}
				line = append(line, ratio)
			}
		}
		table = append(table, line)
	}
	writeColumns(w, table)
	for _, r := range reps {
		fmt.Fprintf(w, "%s: generator %s", r.Mode, r.Generator)
		if r.GeneratorCeilingPPS > 0 {
			fmt.Fprintf(w, ", %.3f M/s alone into XDP drop", r.GeneratorCeilingPPS/1e6)
		}
		if r.GeneratorBound {
			fmt.Fprint(w, "; GENERATOR-BOUND: the run came within 10 % of the generator's ceiling, so its rate is the generator's, not the target's")
		}
		fmt.Fprintln(w)
		if r.Undelivered > 0 {
			fmt.Fprintf(w, "%s: %d frames never reached the gateway host's veth ring (counted in unaccounted)\n", r.Mode, r.Undelivered)
		}
		if !r.Complete {
			fmt.Fprintf(w, "%s: the accounting did not catch up with sent within 1 s of the end of the send\n", r.Mode)
		}
	}
}
