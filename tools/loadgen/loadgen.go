//go:build linux

// Package loadgen sends UDP JSON events between test hosts at rates a
// socket sender cannot reach on veth. It builds K distinct
// Ethernet/IPv4/UDP frames carrying events from tools/gen and transmits
// them with one of two engines (Options.Engine; by default the first the
// kernel allows):
//
//   - EngineLiveFrames ("xdp"): BPF_PROG_RUN in live-frames mode
//     (BPF_F_TEST_XDP_LIVE_FRAMES, Linux ≥ 5.18, bpf.FeatLiveFrames),
//     described below — the fastest.
//   - EngineAFXDP ("afxdp"): an AF_XDP socket in copy mode with a TX ring
//     on the sending veth (afxdp.go), for kernels that refuse live frames:
//     every frame is an skb through veth's ndo_start_xmit, so it reaches
//     about a fifth of the live-frames rate (BENCHMARKS.md).
//
// Live frames: a small XDP program (bpf/loadgen.c, loadgen_tx) rewrites
// the run's packet with the next of the K frames (they live in an array
// map) and returns XDP_TX; the test runner turns that into a redirect out
// of the sending veth, and the frame reaches the peer through
// ndo_xdp_xmit — many times what a socket sender reaches from one core
// (BENCHMARKS.md has both), since the socket sender pays veth's
// skb copy.
//
// What the receiving end must have: veth drops frames that arrive through
// ndo_xdp_xmit unless its end has an XDP program (or GRO on, which gives
// it NAPI), and counts them nowhere. The gateway attaches one in afxdp
// and socket mode; for anything else attach [AttachPass] for the run.
//
// Runs. Each test run costs tens of ms of setup on this kernel (its page
// pool is torn down behind an RCU grace period), so a run sends many
// frames: at max rate runTarget worth (or Options.Chunk); paced, the
// program itself holds each frame to its slot, so traffic is smooth.
//
// Counting. The program has a quota per run and counts every frame it
// hands over, per CPU, so [Result.Sent] is exact and never above the
// count asked for, also when a run stops part-way (the kernel reports no
// count in live-frames mode, and on EINTR it returns after an unknown
// number of repetitions; the generator resumes with what is left).
// [Result.XmitOK] and [Result.XmitErrors] are veth's own view (ethtool
// stats of the sending end): frames put into the peer's receive ring (256
// entries per queue) and frames refused with it full.
// [Result.Undelivered] = Sent − XmitOK is what never reached the peer.
//
// CPU. The receive work of the peer (its XDP program, AF_XDP copy, the
// IP/UDP stack) runs on the sending CPU, at the end of every batch of the
// run, when the peer's veth is not in threaded NAPI mode: the sender then
// slows down to what the receiver can take, and nothing is lost in veth.
// With threaded NAPI the sender does not wait, and veth's 256-entry ring
// overflows whenever the napi thread is not scheduled in time (a paced
// sender spins on its CPU: keep the napi thread off it).
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/xgate/xgate/packet"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/gen"
)

// Defaults of Options.
const (
	DefaultFrames    = 256
	DefaultSrcPort   = 40000
	DefaultBatchSize = 64
	// MaxFrame is the longest frame the program can write (loadgen.c).
	MaxFrame = 1024
	// MaxSources bounds Options.Sources (a /17 of 198.18.0.0/15).
	MaxSources = 1 << 15
)

// Sizing of test runs: each costs tens of ms of setup on this kernel (the
// page pool of the run is torn down behind an RCU grace period), so a run
// should last a good deal longer than that; Duration and ctx are checked
// between runs.
const (
	runTarget = 250 * time.Millisecond
	minChunk  = 1 << 16
	maxChunk  = 1 << 24
)

// paceSlack is how far a paced sender may fall behind its schedule and
// still catch up in a burst at line rate (or a batch's worth of frames,
// if that is more). It is small on purpose: a sender that was preempted,
// or that starts the next test run after the gap of its setup, would
// otherwise send what it owes back to back, and the receiver would see
// full-rate bursts at a nominal half load (with 2 ms of slack, a p99 of
// milliseconds at 50 % load was partly this). What falls further behind
// is made up by the pace of the next test run (at most 1.5 × Rate),
// spread over the run.
const paceSlack = 50 * time.Microsecond

// bpfFTestXDPLiveFrames is BPF_F_TEST_XDP_LIVE_FRAMES (uapi linux/bpf.h).
const bpfFTestXDPLiveFrames = 1 << 1

// Engines of Options.Engine.
const (
	EngineAuto       = "auto"  // live frames if the kernel allows them, else AF_XDP
	EngineLiveFrames = "xdp"   // BPF_PROG_RUN live frames
	EngineAFXDP      = "afxdp" // AF_XDP socket, copy mode, TX ring
)

// ResolveEngine returns the engine that "auto" (or "") stands for on this
// kernel, or engine itself; an unknown name is an error. Live frames are
// taken when bpf.Probe(bpf.FeatLiveFrames) allows them (so
// XGATE_FEATURES_OFF=xdp_live_frames forces AF_XDP).
func ResolveEngine(engine string) (string, error) {
	switch engine {
	case "", EngineAuto:
		if bpf.Probe(bpf.FeatLiveFrames) == nil {
			return EngineLiveFrames, nil
		}
		return EngineAFXDP, nil
	case EngineLiveFrames, EngineAFXDP:
		return engine, nil
	}
	return "", fmt.Errorf("loadgen: engine %q: want auto, %s or %s", engine, EngineLiveFrames, EngineAFXDP)
}

// Options shape a generator. From and To are required, and DstPort.
type Options struct {
	// Engine picks the transmit path: EngineAuto (or "", the default),
	// EngineLiveFrames or EngineAFXDP. Gen.Engine says which one runs.
	// The AF_XDP engine holds an AF_XDP socket on a queue of From.Link
	// from New to Close: one such Gen per queue at a time.
	Engine string

	// From sends: frames leave through From.Link, with its MAC and
	// (the first source) its address. To receives: its MAC and address
	// are the destination.
	From, To *testenv.Host
	DstPort  uint16
	SrcPort  uint16 // default DefaultSrcPort

	// Frames is the number of distinct frames (K). Within every test run
	// the program sends them in turn (frame i mod K for the i-th frame
	// sent on a CPU), so events vary at any rate. Default DefaultFrames.
	Frames int
	// Sources is the number of distinct IPv4 source addresses over the
	// frames (frame k has source k mod Sources): 1 (default) sends from
	// From.Addr, more adds addresses from 198.19.128.0/17 to emulate many
	// clients, so a per-source bucket in the receiver's XDP program does
	// not throttle the run. At most MaxSources.
	Sources int
	// Events configures tools/gen for the payloads (its BadShare gives
	// malformed events of known kinds, see Result.ByKind).
	Events gen.Config
	// Payloads, if set, are used instead of generated events (frame k
	// carries Payloads[k mod len]); their kind is reported as gen.Valid.
	Payloads [][]byte

	// Rate is the target frames per second; 0 sends as fast as possible.
	// Pacing happens in the program, frame by frame (a repetition before
	// its slot is dropped unsent), so paced traffic is smooth, not bursts
	// (after a delay it catches up at line rate for at most 50 µs, or one
	// batch of frames). Between test runs there is a gap of the run's
	// setup; the next run makes up for it and for other delays
	// at up to 1.5 × Rate. The AF_XDP engine paces in its sending loop
	// with the same slack and catch-up (afxdp.go), without the gaps. The
	// achieved rate is Result.PPS.
	Rate float64
	// Duration bounds one Send (0: only the count bounds it).
	Duration time.Duration
	// Chunk (live frames) is the frames per test run; default: what the previous run
	// sent in runTarget (at least 65536), or runTarget worth at Rate. Each run
	// costs tens of ms of setup, during which nothing is sent: a large Chunk
	// makes a max-rate Send one continuous stream (ctx and Duration are
	// only checked between runs).
	Chunk uint32
	// BatchSize is the live-frames batch (1..256): frames transmitted
	// at once, and pages in the kernel's pool; for the AF_XDP engine, the
	// most frames one Transmit queues. Default 64.
	BatchSize uint32

	// CPU pins the sending thread when Pin is set. The peer's receive
	// work runs there too unless its veth uses threaded NAPI.
	CPU int
	Pin bool
}

// Result is what one Send did.
type Result struct {
	// Engine is the engine that sent (EngineLiveFrames or EngineAFXDP).
	Engine string
	// Sent is exact: the frames the program handed to XDP_TX (live
	// frames), or the frames the kernel completed (AF_XDP: handed to
	// veth's transmit, which may still drop them: TxDropped).
	Sent uint64
	// Refused (AF_XDP) are frames put on the TX ring that the kernel had
	// not completed when the Send gave up waiting for them (a stalled or
	// downed link, or descriptors it found invalid); not in Sent.
	Refused uint64
	// TxDropped (AF_XDP) is the sending veth end's tx_dropped over the
	// Send: frames veth could not hand to its peer (its ring full). Valid
	// if StatsOK.
	TxDropped uint64
	// ByKind splits Sent by the kind of event the frames carry.
	ByKind [gen.NumKinds]uint64
	// XmitOK and XmitErrors are veth's counters on the sending end over
	// the Send (ethtool tx_queue_*_xdp_xmit and *_xdp_xmit_errors):
	// frames put into the peer's receive ring, and frames refused with
	// the ring full. Frames refused because the peer has no XDP program
	// (no NAPI) are counted nowhere in veth; Undelivered covers both.
	// Valid if StatsOK.
	XmitOK, XmitErrors uint64
	StatsOK            bool
	// Runs is the number of test runs, Resumed how many of them stopped
	// early (EINTR) and were continued.
	Runs, Resumed int
	// Spins are repetitions the program dropped unsent waiting for a
	// pacing slot; Errors are frames it could not write (should be 0).
	Spins, Errors uint64
	Elapsed       time.Duration
	// SenderCPU is the CPU time of the sending thread over the Send
	// (RUSAGE_THREAD): the test runs, and, without threaded NAPI, the
	// peer's receive work that runs on that thread.
	SenderCPU time.Duration
}

// Undelivered is what never reached the peer: live frames: Sent −
// XmitOK; AF_XDP: TxDropped (0 when the veth counters could not be
// read).
func (r Result) Undelivered() uint64 {
	if !r.StatsOK {
		return 0
	}
	if r.Engine == EngineAFXDP {
		return min(r.TxDropped, r.Sent)
	}
	if r.XmitOK > r.Sent {
		return 0
	}
	return r.Sent - r.XmitOK
}

// PPS is the achieved rate of the Send.
func (r Result) PPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

func (r Result) String() string {
	if r.Engine == EngineAFXDP {
		s := fmt.Sprintf("afxdp: sent %d in %v (%.3f M/s", r.Sent, r.Elapsed.Round(time.Millisecond), r.PPS()/1e6)
		if r.Refused > 0 {
			s += fmt.Sprintf(", %d refused", r.Refused)
		}
		s += ")"
		if r.StatsOK {
			s += fmt.Sprintf("; veth tx_dropped %d", r.TxDropped)
		}
		return s
	}
	s := fmt.Sprintf("sent %d in %v (%.3f M/s, %d runs", r.Sent, r.Elapsed.Round(time.Millisecond), r.PPS()/1e6, r.Runs)
	if r.Resumed > 0 {
		s += fmt.Sprintf(", %d resumed", r.Resumed)
	}
	if r.Errors > 0 {
		s += fmt.Sprintf(", %d write errors", r.Errors)
	}
	s += ")"
	if r.StatsOK {
		s += fmt.Sprintf("; veth: into peer ring %d, ring full %d, undelivered %d", r.XmitOK, r.XmitErrors, r.Undelivered())
	}
	return s
}

type state = bpf.LoadgenLoadgenState

// Gen is a loaded generator. It is not safe for concurrent Sends.
type Gen struct {
	opts   Options
	engine string
	xsk    *xskTx // EngineAFXDP
	objs   bpf.LoadgenObjects
	frames [][]byte
	kinds  []gen.Kind
	srcs   []netip.Addr
	tmpl   []byte       // the input frame of every run: the longest frame
	ctx    [6]uint32    // struct xdp_md
	counts []uint64     // frames sent, by frame, over the Gen's life
	chunk  uint64       // frames of the next run at max rate
	ratio  float64      // repetitions per frame sent in the last paced run
	st     []state      // per-CPU state, last read
	tid    atomic.Int32 // the sending thread during a Send (tests signal it)
}

// New builds the frames and loads the program. Close releases it.
func New(opts Options) (*Gen, error) {
	if opts.From == nil || opts.To == nil {
		return nil, errors.New("loadgen: From and To are required")
	}
	if opts.DstPort == 0 {
		return nil, errors.New("loadgen: DstPort is required")
	}
	if opts.SrcPort == 0 {
		opts.SrcPort = DefaultSrcPort
	}
	if opts.Frames <= 0 {
		opts.Frames = DefaultFrames
	}
	if opts.Sources <= 0 {
		opts.Sources = 1
	}
	if opts.Sources > MaxSources {
		return nil, fmt.Errorf("loadgen: %d sources: at most %d", opts.Sources, MaxSources)
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.BatchSize > 256 {
		return nil, fmt.Errorf("loadgen: batch size %d: at most 256", opts.BatchSize)
	}
	if opts.Rate < 0 || opts.Rate > 1e9 {
		return nil, fmt.Errorf("loadgen: rate %g: want 0 (max) or up to 1e9/s", opts.Rate)
	}
	if !opts.From.Addr.Is4() || !opts.To.Addr.Is4() {
		return nil, errors.New("loadgen: the hosts need IPv4 addresses")
	}

	engine, err := ResolveEngine(opts.Engine)
	if err != nil {
		return nil, err
	}
	if engine == EngineLiveFrames {
		if err := bpf.Probe(bpf.FeatLiveFrames); err != nil {
			return nil, fmt.Errorf("loadgen: engine %s: %w (use engine %s or auto)", engine, err, EngineAFXDP)
		}
	}
	g := &Gen{opts: opts, engine: engine, chunk: minChunk, ratio: 1}
	if g.srcs, err = sources(opts); err != nil {
		return nil, err
	}
	if err := g.buildFrames(); err != nil {
		return nil, err
	}
	g.counts = make([]uint64, len(g.frames))
	if engine == EngineAFXDP {
		if g.xsk, err = openXSKTx(opts.From, g.frames, int(opts.BatchSize)); err != nil {
			return nil, err
		}
		return g, nil
	}
	if err := g.load(); err != nil {
		return nil, err
	}
	g.ctx[3] = uint32(opts.From.Ifindex) // ingress_ifindex
	return g, nil
}

// Engine is the engine this generator sends with.
func (g *Gen) Engine() string { return g.engine }

func (g *Gen) load() error {
	spec, err := bpf.LoadLoadgen()
	if err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	if err := spec.Variables["loadgen_nframes"].Set(uint32(len(g.frames))); err != nil {
		return fmt.Errorf("loadgen: set frame count: %w", err)
	}
	spec.Maps["loadgen_frames"].MaxEntries = uint32(len(g.frames))
	if err := spec.LoadAndAssign(&g.objs, nil); err != nil {
		return fmt.Errorf("loadgen: load program: %w", err)
	}
	for k, f := range g.frames {
		var v bpf.LoadgenLoadgenFrame
		v.Len = uint32(len(f))
		copy(v.Data[:], f)
		if err := g.objs.LoadgenFrames.Update(uint32(k), &v, ebpf.UpdateAny); err != nil {
			g.objs.Close()
			return fmt.Errorf("loadgen: store frame %d: %w", k, err)
		}
	}
	g.st = make([]state, possibleCPUs())
	if err := g.readState(); err != nil {
		g.objs.Close()
		return err
	}
	return nil
}

// sources returns the IPv4 sources of the frames: From.Addr, then
// addresses of 198.19.128.0/17 that are not the hosts' own.
func sources(opts Options) ([]netip.Addr, error) {
	out := []netip.Addr{opts.From.Addr}
	a := netip.AddrFrom4([4]byte{198, 19, 128, 1})
	for len(out) < opts.Sources {
		if !opts.From.Prefix.Contains(a) && !opts.To.Prefix.Contains(a) {
			out = append(out, a)
		}
		a = a.Next()
		if b := a.As4(); b[0] != 198 || b[1] != 19 || b[2] < 128 {
			return nil, fmt.Errorf("loadgen: ran out of source addresses at %d", len(out))
		}
	}
	return out, nil
}

func (g *Gen) buildFrames() error {
	o := g.opts
	var ev *gen.Generator
	if len(o.Payloads) == 0 {
		var err error
		if ev, err = gen.New(o.Events); err != nil {
			return err
		}
	}
	var payload []byte
	for k := 0; k < o.Frames; k++ {
		kind := gen.Valid
		if ev != nil {
			payload, kind = ev.Append(payload[:0])
		} else {
			payload = o.Payloads[k%len(o.Payloads)]
		}
		f, err := AppendFrame(nil, packet.Frame{
			SrcMAC: o.From.MAC, DstMAC: o.To.MAC,
			Src: g.srcs[k%len(g.srcs)], Dst: o.To.Addr,
			SrcPort: o.SrcPort, DstPort: o.DstPort, ID: uint16(k), Payload: payload,
		})
		if err != nil {
			return err
		}
		if len(f) > MaxFrame {
			return fmt.Errorf("loadgen: frame %d is %d bytes: at most %d", k, len(f), MaxFrame)
		}
		g.frames = append(g.frames, f)
		g.kinds = append(g.kinds, kind)
		if len(f) > len(g.tmpl) {
			g.tmpl = f
		}
	}
	return nil
}

// Frames returns the distinct frames and the kind of event each carries;
// the caller must not modify them.
func (g *Gen) Frames() ([][]byte, []gen.Kind) { return g.frames, g.kinds }

// Counts returns how often each frame has been sent over the Gen's life.
func (g *Gen) Counts() []uint64 { return slices.Clone(g.counts) }

// Sources returns the IPv4 source addresses the frames use.
func (g *Gen) Sources() []netip.Addr { return g.srcs }

// Close releases the program and its maps, or the AF_XDP socket.
func (g *Gen) Close() error {
	if g.xsk != nil {
		return g.xsk.close()
	}
	return g.objs.Close()
}

func (g *Gen) readState() error {
	if err := g.objs.LoadgenStates.Lookup(uint32(0), &g.st); err != nil {
		return fmt.Errorf("loadgen: read state: %w", err)
	}
	return nil
}

// Send transmits n frames (n = 0: until Options.Duration) at
// Options.Rate, and stops early when ctx ends or Duration has passed. A
// Send is always bounded: n or Duration must be set. It returns what went
// out also when it fails part-way.
func (g *Gen) Send(ctx context.Context, n uint64) (Result, error) {
	if n == 0 && g.opts.Duration <= 0 {
		return Result{}, errors.New("loadgen: unbounded send: give a count or Options.Duration")
	}
	var before map[string]uint64
	var drop0 uint64
	var statsErr error
	if g.engine == EngineAFXDP {
		drop0, statsErr = g.opts.From.TxDropped()
	} else {
		before, statsErr = NICStats(g.opts.From)
	}
	counts0 := slices.Clone(g.counts)
	res := Result{Engine: g.engine}
	done := make(chan error, 1)
	go func() {
		// This thread enters From's namespace (ingress_ifindex is looked
		// up there) and may be pinned. Before the Send returns it is put
		// back as it was and unlocked: it may be the process's main
		// thread, which the runtime never ends and whose affinity others
		// read as the process's (the gateway's workers.cpus check). If it
		// cannot be put back it stays locked, and the runtime ends it (or,
		// the main thread, parks it) with the goroutine.
		runtime.LockOSThread()
		restore, err := enterSender(g.opts)
		if err == nil {
			err = g.sendOnThread(ctx, n, &res)
		}
		if restore() {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	err := <-done
	for i, c := range g.counts {
		res.ByKind[g.kinds[i]] += c - counts0[i]
	}
	if g.engine == EngineAFXDP {
		if drop1, err2 := g.opts.From.TxDropped(); statsErr == nil && err2 == nil {
			res.TxDropped, res.StatsOK = drop1-drop0, true
		}
		return res, err
	}
	if after, err2 := NICStats(g.opts.From); statsErr == nil && err2 == nil {
		res.XmitOK, res.XmitErrors = xmitDelta(before, after)
		res.StatsOK = true
	}
	return res, err
}

// sendOnThread is the Send on its locked thread, with the thread's CPU
// time.
func (g *Gen) sendOnThread(ctx context.Context, n uint64, res *Result) error {
	g.tid.Store(int32(unix.Gettid()))
	defer g.tid.Store(0)
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru0)
	var err error
	if g.engine == EngineAFXDP {
		err = g.xsk.send(ctx, g, n, res)
	} else {
		err = g.loop(ctx, n, res)
	}
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru1) == nil {
		res.SenderCPU = time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	}
	return err
}

// enterSender moves the calling (locked) thread into the sending host's
// namespace and pins it to o.CPU if o.Pin. restore puts the thread's
// namespace and affinity back and says whether it did.
func enterSender(o Options) (restore func() bool, err error) {
	var aff unix.CPUSet
	affErr := unix.SchedGetaffinity(0, &aff)
	ns, nsErr := netns.Get()
	pinned, moved := false, false
	restore = func() bool {
		ok := affErr == nil && nsErr == nil
		if ok && pinned {
			ok = unix.SchedSetaffinity(0, &aff) == nil
		}
		if ok && moved {
			ok = netns.Set(ns) == nil
		}
		if nsErr == nil {
			ns.Close()
		}
		return ok
	}
	if nsErr != nil {
		return restore, fmt.Errorf("loadgen: read the thread's namespace: %w", nsErr)
	}
	if err := netns.Set(o.From.NetNS()); err != nil {
		return restore, fmt.Errorf("loadgen: enter %s: %w", o.From.NS, err)
	}
	moved = true
	if o.Pin {
		var set unix.CPUSet
		set.Set(o.CPU)
		pinned = true // a failed call may still have changed it: restore
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return restore, fmt.Errorf("loadgen: pin to CPU %d: %w", o.CPU, err)
		}
	}
	return restore, nil
}

// xmitDelta sums veth's per-queue XDP transmit counters over a Send.
func xmitDelta(before, after map[string]uint64) (ok, errs uint64) {
	for k, v := range after {
		if !strings.HasPrefix(k, "tx_queue_") {
			continue
		}
		switch {
		case strings.HasSuffix(k, "_xdp_xmit"):
			ok += v - before[k]
		case strings.HasSuffix(k, "_xdp_xmit_errors"):
			errs += v - before[k]
		}
	}
	return ok, errs
}

func (g *Gen) loop(ctx context.Context, n uint64, res *Result) error {
	o := g.opts
	start := time.Now()
	defer func() { res.Elapsed = time.Since(start) }()
	first := true
	for n == 0 || res.Sent < n {
		if ctx.Err() != nil {
			return nil // a cancelled Send is a short one, not a failure
		}
		if o.Duration > 0 && time.Since(start) >= o.Duration {
			return nil
		}
		// The run's quota: about runTarget worth of frames (or Chunk).
		quota := g.chunk
		var interval uint64
		if o.Rate > 0 {
			// Frames due by the end of this run, including what earlier
			// runs fell behind (their setup gaps); paced within the run
			// at the rate that catches up, at most 1.5 × Rate.
			el := time.Since(start).Seconds()
			run := runTarget.Seconds()
			if o.Duration > 0 {
				run = min(run, max(0.001, (o.Duration-time.Since(start)).Seconds()))
			}
			owed := o.Rate*(el+run) - float64(res.Sent)
			runRate := min(max(owed/run, o.Rate/2), o.Rate*1.5)
			quota = max(uint64(o.BatchSize), uint64(runRate*run))
			interval = max(1, uint64(1e9/runRate))
		}
		if o.Chunk > 0 {
			quota = uint64(o.Chunk)
		}
		if n > 0 {
			quota = min(quota, n-res.Sent)
		}
		rep := quota
		if interval > 0 {
			rep = min(uint64(float64(quota)*g.ratio*1.1)+uint64(o.BatchSize), 1<<31)
		}
		t0 := time.Now()
		sent, spins, errs, err := g.run(quota, uint64(rep), interval, first, res)
		first = false
		res.Sent += sent
		res.Spins += spins
		res.Errors += errs
		if err != nil {
			return err
		}
		if sent == 0 && errs > 0 {
			return fmt.Errorf("loadgen: the program could not write %d frames (bpf_xdp_adjust_tail/store_bytes)", errs)
		}
		if interval > 0 && sent > 0 {
			g.ratio = max(1, float64(sent+spins)/float64(sent))
		} else if d := time.Since(t0); sent > 0 && d > 0 {
			g.chunk = min(max(uint64(float64(sent)/d.Seconds()*runTarget.Seconds()), minChunk), maxChunk)
		}
	}
	return nil
}

// progRunAttr is the BPF_PROG_TEST_RUN member of union bpf_attr.
type progRunAttr struct {
	progFd, retval           uint32
	dataSizeIn, dataSizeOut  uint32
	dataIn, dataOut          uint64
	repeat, duration         uint32
	ctxSizeIn, ctxSizeOut    uint32
	ctxIn, ctxOut            uint64
	flags, cpu, batchSize, _ uint32
}

const bpfProgTestRun = 10 // BPF_PROG_TEST_RUN

// run gives the program a quota of frames and runs it rep times (one
// live-frames test run, resumed after EINTR until rep repetitions or the
// quota are used up). It returns the frames sent, from the program's
// per-CPU counters, which also say which frames went out. The bpf
// syscall is issued here rather than through ebpf.Program.Run, which
// repeats the whole run on EINTR.
func (g *Gen) run(quota, rep, interval uint64, resetPace bool, res *Result) (sent, spins, errs uint64, err error) {
	prev := slices.Clone(g.st)
	var c bpf.LoadgenLoadgenControl
	if err := g.objs.LoadgenControls.Lookup(uint32(0), &c); err != nil {
		return 0, 0, 0, fmt.Errorf("loadgen: read control: %w", err)
	}
	c.Quota = int64(quota)
	c.IntervalNs = interval
	c.SlackNs = max(interval*uint64(g.opts.BatchSize), uint64(paceSlack))
	if resetPace {
		c.NextNs = 0
	}
	if err := g.objs.LoadgenControls.Update(uint32(0), &c, ebpf.UpdateAny); err != nil {
		return 0, 0, 0, fmt.Errorf("loadgen: set quota: %w", err)
	}
	g.ctx[1] = uint32(len(g.tmpl)) // data_end
	for rep > 0 {
		attr := progRunAttr{
			progFd:     uint32(g.objs.LoadgenTx.FD()),
			dataSizeIn: uint32(len(g.tmpl)),
			dataIn:     uint64(uintptr(unsafe.Pointer(&g.tmpl[0]))),
			repeat:     uint32(min(rep, 1<<31)),
			ctxSizeIn:  uint32(unsafe.Sizeof(g.ctx)),
			ctxIn:      uint64(uintptr(unsafe.Pointer(&g.ctx))),
			flags:      bpfFTestXDPLiveFrames,
			batchSize:  g.opts.BatchSize,
		}
		_, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgTestRun, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		runtime.KeepAlive(g.tmpl)
		runtime.KeepAlive(&g.ctx)
		res.Runs++
		if err := g.readState(); err != nil {
			return sent, spins, errs, err
		}
		d, ds, de, iters := g.account(prev)
		prev = slices.Clone(g.st)
		sent, spins, errs = sent+d, spins+ds, errs+de
		switch {
		case errno == 0:
			return sent, spins, errs, nil
		case errno == unix.EINTR:
			res.Resumed++
			if iters >= rep || sent >= quota {
				return sent, spins, errs, nil
			}
			rep -= iters
		default:
			return sent, spins, errs, fmt.Errorf("loadgen: live-frames test run on %s (ifindex %d): %w", g.opts.From.Link, g.opts.From.Ifindex, errno)
		}
	}
	return sent, spins, errs, nil
}

// account compares the per-CPU state with prev: frames sent (and which:
// the i-th frame sent on a CPU is frame i mod K), spins, errors.
func (g *Gen) account(prev []state) (sent, spins, errs, iters uint64) {
	var idle uint64
	k := uint64(len(g.frames))
	for c := range g.st {
		a, b := prev[c], g.st[c]
		d := b.Sent - a.Sent
		sent += d
		spins += b.Spins - a.Spins
		idle += b.Idle - a.Idle
		errs += b.Errors - a.Errors
		if d == 0 {
			continue
		}
		full, rest := d/k, d%k
		for i := range g.counts {
			g.counts[i] += full
		}
		for j, f := uint64(0), a.Sent%k; j < rest; j++ {
			g.counts[f]++
			if f++; f == k {
				f = 0
			}
		}
	}
	return sent, spins, errs, sent + spins + idle + errs
}

// Receiver is a receiving-end XDP program of the generator on a veth
// (see the package comment), attached through a bpf_link.
type Receiver struct {
	objs bpf.LoadgenObjects
	lnk  link.Link
	vals []uint64
}

// AttachPass attaches loadgen_pass to h.Link in native mode: it counts
// every frame it sees (Seen) and passes it to the stack.
func AttachPass(h *testenv.Host) (*Receiver, error) { return attach(h, false) }

// AttachDrop attaches loadgen_drop to h.Link in native mode: it counts
// every frame it sees and drops it — a receiver that costs next to
// nothing, to measure the generator.
func AttachDrop(h *testenv.Host) (*Receiver, error) { return attach(h, true) }

func attach(h *testenv.Host, drop bool) (*Receiver, error) {
	r := &Receiver{}
	if err := bpf.LoadLoadgenObjects(&r.objs, nil); err != nil {
		return nil, fmt.Errorf("loadgen: load program: %w", err)
	}
	r.vals = make([]uint64, possibleCPUs())
	prog := r.objs.LoadgenPass
	if drop {
		prog = r.objs.LoadgenDrop
	}
	err := h.Do(func() error {
		var err error
		r.lnk, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: h.Ifindex, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		r.objs.Close()
		return nil, fmt.Errorf("loadgen: attach receiver XDP program to %s: %w", h.Link, err)
	}
	return r, nil
}

// Seen is the number of frames the program has seen.
func (r *Receiver) Seen() (uint64, error) {
	if err := r.objs.LoadgenRxCount.Lookup(uint32(0), &r.vals); err != nil {
		return 0, err
	}
	var s uint64
	for _, v := range r.vals {
		s += v
	}
	return s, nil
}

// Close detaches and releases the program.
func (r *Receiver) Close() error {
	return errors.Join(r.lnk.Close(), r.objs.Close())
}

// possibleCPUs is the length of a per-CPU map value.
func possibleCPUs() int {
	n, err := ebpf.PossibleCPU()
	if err != nil || n < 1 {
		return runtime.NumCPU()
	}
	return n
}
