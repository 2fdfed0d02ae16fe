package bpf

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Probe names, as Missing reports them.
const (
	ProbeSockLatency    = "sock_latency"     // socket filter: stack latency to our sockets
	ProbeKfreeSkb       = "kfree_skb"        // tp_btf/kfree_skb: kernel drops for our ports
	ProbeXDPRedirectErr = "xdp_redirect_err" // tp_btf/xdp_redirect_err of our XDP program
	ProbeXDPException   = "xdp_exception"    // tp_btf/xdp_exception of our XDP program
)

// ProbeOptions configure LoadProbes.
type ProbeOptions struct {
	// Ports are our UDP destination ports (kfree_skb filter); SetPorts
	// replaces them later.
	Ports []uint16
	// XDPProgID is our XDP program's id (ebpf.Program.Info().ID); 0 counts
	// no XDP events until SetXDPProgID.
	XDPProgID uint32
	// NetnsIno is the inode of our network namespace (NetnsIno()): the
	// kfree_skb probe counts only drops on its devices; 0 counts every
	// namespace's.
	NetnsIno uint32
	// Address is the destination address that is ours (listen.address,
	// as the XDP program's Config.Address): with one, kfree_skb counts a
	// drop to our port only when it is to this address, so of its family;
	// the XDP program passed a datagram to another address to the stack
	// as not_our_address, and the stack's drop of it is not ours. The
	// zero Addr or an unspecified one (0.0.0.0, ::) means any; a
	// v4-mapped address is its IPv4 address.
	Address netip.Addr
	// ClockRefresh is how often the TAI−realtime offset is re-read and
	// written to the config map; 0 means every second, negative never
	// (call RefreshClock yourself).
	ClockRefresh time.Duration
	// Skip lists probes not to load (Probe* names).
	Skip []string
	// SockSample is the socket filter's sampling period: it times one
	// packet in SockSample per CPU and only counts the others. 0 means
	// DefaultSockSample, 1 every packet.
	SockSample int
	// RxTimestamps holds the host's software receive timestamping on while
	// the probes live (a socket with SO_TIMESTAMPNS). The socket latency
	// probe needs it: without it skbs carry no receive time, and its
	// samples only count as without timestamp, unless something else on the
	// host (an NTP daemon, another SO_TIMESTAMP* socket) has it on anyway.
	// It costs a clock read per received skb on every device of the host.
	RxTimestamps bool
	// PinPath pins the probes' maps by name under this bpffs directory
	// (beside the XDP program's, so `bpftool map dump pinned` and
	// `xgate stats --pins` read them) and reuses maps already pinned
	// there; empty means no pinning. Unpin removes them.
	PinPath string
}

// DefaultSockSample is the socket filter's default sampling period.
const DefaultSockSample = 256

// Probes are the latency and drop probes. Each probe is optional: a probe
// the kernel cannot load or attach is left out and named by Missing.
//
// Methods are safe for concurrent use, except Close, which must not race
// with any other method. The per-CPU maps are read without stopping the
// programs, so a read is a consistent sum per counter, not a snapshot
// across counters.
type Probes struct {
	maps    probesKernMaps
	progs   map[string]*ebpf.Program
	links   []link.Link
	missing []string

	// tsFD is a socket with SO_TIMESTAMPNS held open while the probes
	// live (ProbeOptions.RxTimestamps; -1 without): the kernel stamps
	// received skbs only while some socket asks for timestamps, through a
	// static key flipped from a work queue; holding it from load time on
	// keeps the first packets of a freshly attached socket stamped, and
	// our own sockets need no SO_TIMESTAMPNS (which would cost a
	// timestamp conversion per received datagram).
	tsFD int

	sockSample int    // the socket filter's sampling period
	pinPath    string // where the maps are pinned ("" = not pinned)

	mu     sync.Mutex // guards cfg and the config map
	cfg    probesKernProbeConfig
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

type probeDef struct {
	name, prog string
	needs      []requirement
}

var probeDefs = []probeDef{
	{ProbeSockLatency, probesKernProgProbeSockLatency, []requirement{
		{"program type SocketFilter", "needs Linux >= 3.19", func() error { return features.HaveProgramType(ebpf.SocketFilter) }},
		{"helper bpf_ktime_get_tai_ns in socket filters", "needs Linux >= 6.1", func() error {
			return features.HaveProgramHelper(ebpf.SocketFilter, asm.FnKtimeGetTaiNs)
		}},
	}},
	// No feature probe for tp_btf: features.HaveProgramType(ebpf.Tracing)
	// loads an fentry program, which hosts that refuse fentry answer with
	// EPERM although tp_btf works. The load and attach errors tell.
	{ProbeKfreeSkb, probesKernProgProbeKfreeSkb, nil},
	{ProbeXDPRedirectErr, probesKernProgProbeXdpRedirectErr, nil},
	{ProbeXDPException, probesKernProgProbeXdpException, nil},
}

// LoadProbes loads the maps and every probe it can, attaches the tracing
// probes and starts the clock refresher. It fails only when the maps cannot
// be created (no privilege, no BPF); a probe that cannot load or attach is
// recorded in Missing and the others run.
func LoadProbes(opts ProbeOptions) (*Probes, error) {
	if err := checkCaps(false); err != nil {
		return nil, err
	}
	spec, err := loadProbesKern()
	if err != nil {
		return nil, fmt.Errorf("probes: %w", err)
	}
	sample := opts.SockSample
	switch {
	case sample == 0:
		sample = DefaultSockSample
	case sample < 0 || sample > math.MaxUint32:
		return nil, fmt.Errorf("probes: socket sampling period %d: want 1 (every packet) or more", sample)
	}
	if err := spec.Variables[probesKernVarSockSampleN].Set(uint32(sample)); err != nil {
		return nil, fmt.Errorf("probes: set %s: %w", probesKernVarSockSampleN, err)
	}
	if err := preparePins(spec.Maps, opts.PinPath); err != nil {
		return nil, fmt.Errorf("probes: %w", err)
	}
	p := &Probes{progs: make(map[string]*ebpf.Program), tsFD: -1, sockSample: sample, pinPath: opts.PinPath}
	if err := spec.LoadAndAssign(&p.maps, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinPath}}); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("probes: create maps: a pinned map from an older xgate has another layout; remove the pin directory (or its map) and load again: %w", err)
		}
		return nil, fmt.Errorf("probes: create maps: %w", err)
	}
	replace := map[string]*ebpf.Map{
		probesKernMapProbeCfg:       p.maps.ProbeCfg,
		probesKernMapProbeDrops:     p.maps.ProbeDrops,
		probesKernMapProbeLatency:   p.maps.ProbeLatency,
		probesKernMapProbePorts:     p.maps.ProbePorts,
		probesKernMapProbeSockTicks: p.maps.ProbeSockTicks,
		probesKernMapProbeStats:     p.maps.ProbeStats,
		probesKernMapProbeXdpEvents: p.maps.ProbeXdpEvents,
	}

	p.cfg.XdpProgId = opts.XDPProgID
	p.cfg.NetnsIno = opts.NetnsIno
	if a, ok := ourAddress(opts.Address); ok {
		p.cfg.Dst = probesKernProbeDstPROBE_DST_V6
		if a.Is4() {
			p.cfg.Dst = probesKernProbeDstPROBE_DST_V4
		}
		p.cfg.DstAddr = a.As16() // an IPv4 address v4-mapped, as probes.h says
	}
	if err := p.RefreshClock(); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.SetPorts(opts.Ports...); err != nil {
		p.Close()
		return nil, err
	}

	for _, d := range probeDefs {
		if slices.Contains(opts.Skip, d.name) {
			p.missing = append(p.missing, d.name+": skipped by option")
			continue
		}
		if err := p.loadProbe(spec, d, replace); err != nil {
			p.missing = append(p.missing, d.name+": "+err.Error())
		}
	}

	if opts.RxTimestamps && p.Running(ProbeSockLatency) {
		if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
			if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) == nil {
				p.tsFD = fd
			} else {
				unix.Close(fd)
			}
		}
	}

	p.stop, p.done = make(chan struct{}), make(chan struct{})
	every := opts.ClockRefresh
	if every == 0 {
		every = time.Second
	}
	go p.refresher(every)
	return p, nil
}

func (p *Probes) loadProbe(spec *ebpf.CollectionSpec, d probeDef, replace map[string]*ebpf.Map) error {
	if err := checkFeatures(d.needs); err != nil {
		return err
	}
	// A collection of this one program, with the shared maps put in place,
	// so that one probe's failure leaves the others loadable.
	one := spec.Copy()
	one.Programs = map[string]*ebpf.ProgramSpec{d.prog: spec.Programs[d.prog]}
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{MapReplacements: replace})
	if err != nil {
		return explainProbeLoad(err)
	}
	prog := coll.DetachProgram(d.prog)
	coll.Close()
	if prog == nil {
		return errors.New("program missing from the collection")
	}
	if prog.Type() == ebpf.Tracing {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			prog.Close()
			return fmt.Errorf("attach tp_btf/%s: %w", spec.Programs[d.prog].AttachTo, err)
		}
		p.links = append(p.links, l)
	}
	p.progs[d.name] = prog
	return nil
}

func explainProbeLoad(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		// The last lines say why; %+v on the error prints the whole log.
		return fmt.Errorf("verifier: %v", err)
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, os.ErrNotExist):
		return &UnsupportedError{What: "hook", Hint: err.Error(), Err: err}
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w (tracing needs CAP_BPF and CAP_PERFMON)", err)
	}
	return err
}

// Missing names the probes that are not running and why, one
// "name: reason" per probe; empty when all run.
func (p *Probes) Missing() []string { return slices.Clone(p.missing) }

// Running reports whether the named probe is loaded (and attached, for the
// tracing ones).
func (p *Probes) Running(name string) bool { return p.progs[name] != nil }

// SocketFilter returns the latency socket filter, nil if missing. Its
// lifetime is the Probes'.
func (p *Probes) SocketFilter() *ebpf.Program { return p.progs[ProbeSockLatency] }

// AttachSocket attaches the latency filter to a socket (SO_ATTACH_BPF).
// Attach it to every socket of a reuseport group. The filter never drops or
// trims: it returns the packet's length. The socket needs no timestamp
// option of its own: the receive stamps come from the host-wide
// timestamping that ProbeOptions.RxTimestamps holds on (without it the
// samples count sock_no_tstamp). The socket keeps the filter until it is
// closed or DetachSocket; closing Probes does not detach it.
//
// Any socket filter makes UDP verify the checksum of each datagram in
// softirq (it must before a filter may read the payload) instead of while
// copying it to the reader; datagrams whose checksum the NIC verified, or
// that carry none, cost nothing more.
func (p *Probes) AttachSocket(fd int) error {
	prog := p.SocketFilter()
	if prog == nil {
		return &UnsupportedError{What: "socket latency probe", Hint: "missing: see Probes.Missing"}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, prog.FD()); err != nil {
		return fmt.Errorf("SO_ATTACH_BPF: %w", err)
	}
	return nil
}

// DetachSocket removes the socket's filter (SO_DETACH_BPF).
func (p *Probes) DetachSocket(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_BPF, 0); err != nil {
		return fmt.Errorf("SO_DETACH_BPF: %w", err)
	}
	return nil
}

// SockSample is the socket filter's sampling period: one packet in
// SockSample per CPU is timed.
func (p *Probes) SockSample() int { return p.sockSample }

// SetPorts replaces the UDP destination ports whose drops kfree_skb counts.
func (p *Probes) SetPorts(ports ...uint16) error {
	want := make(map[uint16]bool, len(ports))
	for _, port := range ports {
		want[port] = true
		if err := p.maps.ProbePorts.Put(port, uint8(1)); err != nil {
			return fmt.Errorf("set port %d: %w", port, err)
		}
	}
	var (
		key   uint16
		stale []uint16
	)
	it := p.maps.ProbePorts.Iterate()
	var val uint8
	for it.Next(&key, &val) {
		if !want[key] {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list ports: %w", err)
	}
	for _, k := range stale {
		if err := p.maps.ProbePorts.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove port %d: %w", k, err)
		}
	}
	return nil
}

// SetXDPProgID sets the XDP program whose redirect errors and exceptions
// are counted (ebpf.Program.Info's ID); 0 counts none.
func (p *Probes) SetXDPProgID(id uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg.XdpProgId = id
	return p.writeConfig()
}

// RefreshClock re-reads CLOCK_TAI − CLOCK_REALTIME and writes it to the
// config map; the refresher calls it periodically.
func (p *Probes) RefreshClock() error {
	off, err := TAIOffset()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.TaiOffsetNs == off.Nanoseconds() && p.cfg.TaiOffsetNs != 0 {
		return nil
	}
	p.cfg.TaiOffsetNs = off.Nanoseconds()
	return p.writeConfig()
}

func (p *Probes) writeConfig() error {
	if err := p.maps.ProbeCfg.Put(uint32(0), p.cfg); err != nil {
		return fmt.Errorf("write probe config: %w", err)
	}
	return nil
}

// TAIOffset is CLOCK_TAI − CLOCK_REALTIME. The kernel keeps it as whole
// seconds (the TAI−UTC offset, 0 until someone sets it, 37 s since 2017),
// so the difference of two clock reads is rounded to the second; reads are
// repeated until both bracket the same value.
func TAIOffset() (time.Duration, error) {
	var rt1, tai, rt2 unix.Timespec
	for range 3 {
		if err := unix.ClockGettime(unix.CLOCK_REALTIME, &rt1); err != nil {
			return 0, fmt.Errorf("clock_gettime(CLOCK_REALTIME): %w", err)
		}
		if err := unix.ClockGettime(unix.CLOCK_TAI, &tai); err != nil {
			return 0, fmt.Errorf("clock_gettime(CLOCK_TAI): %w", err)
		}
		if err := unix.ClockGettime(unix.CLOCK_REALTIME, &rt2); err != nil {
			return 0, fmt.Errorf("clock_gettime(CLOCK_REALTIME): %w", err)
		}
		a := time.Duration(tai.Nano() - rt1.Nano()).Round(time.Second)
		b := time.Duration(tai.Nano() - rt2.Nano()).Round(time.Second)
		if a == b {
			return a, nil
		}
	}
	return 0, errors.New("TAI offset: clocks kept moving (realtime being stepped?)")
}

func (p *Probes) refresher(every time.Duration) {
	defer close(p.done)
	if every < 0 {
		<-p.stop
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.RefreshClock() // a failed refresh keeps the last offset
		}
	}
}

// LatencyBucket is one log2 bucket: Count packets with latency ≤ UpperBound
// and above the previous bucket's bound (not cumulative). The last
// bucket's UpperBound is math.MaxInt64 (+Inf).
type LatencyBucket struct {
	UpperBound time.Duration
	Count      uint64
}

// LatencyHistogram is the socket-path latency (skb receive timestamp →
// socket filter) of the sampled packets (one in SockSample per CPU),
// summed over CPUs.
type LatencyHistogram struct {
	Buckets []LatencyBucket
	Count   uint64        // sum of the buckets
	Sum     time.Duration // sum of the latencies counted
	// Sampled packets that are not in the histogram.
	NoTimestamp uint64 // skb without a receive timestamp
	ClockSkew   uint64 // stamped in the future, or not a realtime stamp
}

// Cumulative returns the histogram as Prometheus wants it: upper bound in
// seconds → count of latencies ≤ bound, without the +Inf bucket (that is
// Count), for prometheus.MustNewConstHistogram(desc, h.Count,
// h.Sum.Seconds(), h.Cumulative()).
func (h LatencyHistogram) Cumulative() map[float64]uint64 {
	out := make(map[float64]uint64, len(h.Buckets))
	var acc uint64
	for _, b := range h.Buckets {
		acc += b.Count
		if b.UpperBound != math.MaxInt64 {
			out[b.UpperBound.Seconds()] = acc
		}
	}
	return out
}

// ReadLatencyHistogram sums the per-CPU histogram.
func (p *Probes) ReadLatencyHistogram() (LatencyHistogram, error) {
	m := p.maps.ProbeLatency
	n := m.MaxEntries()
	h := LatencyHistogram{Buckets: make([]LatencyBucket, n)}
	var percpu []uint64
	for i := range n {
		if err := m.Lookup(i, &percpu); err != nil {
			return h, fmt.Errorf("read latency bucket %d: %w", i, err)
		}
		b := &h.Buckets[i]
		b.UpperBound = math.MaxInt64
		if i < n-1 {
			b.UpperBound = time.Duration(1<<i) * time.Microsecond
		}
		b.Count = sumPerCPU(percpu)
		h.Count += b.Count
	}
	st, err := p.readStats()
	if err != nil {
		return h, err
	}
	h.Sum = time.Duration(st[probesKernProbeStatPROBE_STAT_SOCK_LAT_SUM_NS])
	h.NoTimestamp = st[probesKernProbeStatPROBE_STAT_SOCK_NO_TSTAMP]
	h.ClockSkew = st[probesKernProbeStatPROBE_STAT_SOCK_CLOCK_SKEW]
	return h, nil
}

// ProbeStats are the probes' own counters, summed over CPUs.
type ProbeStats struct {
	SockPackets    uint64 // packets the socket filter saw
	SockSampled    uint64 // …of which it timed (Count + SockNoTstamp + SockClockSkew)
	SockNoTstamp   uint64
	SockClockSkew  uint64
	Drops          uint64 // kfree_skb drops for our ports, all reasons
	XDPRedirectErr uint64
	XDPException   uint64
	NoConfig       uint64 // must stay 0
}

// ReadStats sums the probes' own counters.
func (p *Probes) ReadStats() (ProbeStats, error) {
	st, err := p.readStats()
	if err != nil {
		return ProbeStats{}, err
	}
	ticks, err := p.readSockTicks()
	if err != nil {
		return ProbeStats{}, err
	}
	var packets uint64
	for _, t := range ticks {
		packets += t.Packets
	}
	return ProbeStats{
		SockPackets:    packets,
		SockSampled:    st[probesKernProbeStatPROBE_STAT_SOCK_SAMPLED],
		SockNoTstamp:   st[probesKernProbeStatPROBE_STAT_SOCK_NO_TSTAMP],
		SockClockSkew:  st[probesKernProbeStatPROBE_STAT_SOCK_CLOCK_SKEW],
		Drops:          st[probesKernProbeStatPROBE_STAT_DROPS],
		XDPRedirectErr: st[probesKernProbeStatPROBE_STAT_XDP_REDIRECT_ERR],
		XDPException:   st[probesKernProbeStatPROBE_STAT_XDP_EXCEPTION],
		NoConfig:       st[probesKernProbeStatPROBE_STAT_NO_CONFIG],
	}, nil
}

// readSockTicks reads the socket filter's per-CPU state, by CPU.
func (p *Probes) readSockTicks() ([]probesKernProbeSockTick, error) {
	var percpu []probesKernProbeSockTick
	if err := p.maps.ProbeSockTicks.Lookup(uint32(0), &percpu); err != nil {
		return nil, fmt.Errorf("read socket filter packets: %w", err)
	}
	return percpu, nil
}

func (p *Probes) readStats() ([probesKernProbeStatPROBE_STAT__MAX]uint64, error) {
	var out [probesKernProbeStatPROBE_STAT__MAX]uint64
	var percpu []uint64
	for i := range out {
		if err := p.maps.ProbeStats.Lookup(uint32(i), &percpu); err != nil {
			return out, fmt.Errorf("read probe stat %d: %w", i, err)
		}
		out[i] = sumPerCPU(percpu)
	}
	return out, nil
}

// ReadKernelDrops returns the kernel's drops of packets to our ports by
// drop reason: the kernel's enum skb_drop_reason names read from its BTF,
// without the SKB_DROP_REASON_ prefix, lower-cased ("socket_rcvbuff",
// "udp_csum", "not_specified"). A value the BTF does not name is
// "reason_<n>".
func (p *Probes) ReadKernelDrops() (map[string]uint64, error) {
	out := make(map[string]uint64)
	var (
		reason uint32
		percpu []uint64
	)
	it := p.maps.ProbeDrops.Iterate()
	for it.Next(&reason, &percpu) {
		out[DropReasonName(reason)] += sumPerCPU(percpu)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read drops: %w", err)
	}
	return out, nil
}

var dropReasonNames = sync.OnceValue(func() map[uint32]string {
	names := make(map[uint32]string)
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return names
	}
	var e *btf.Enum
	if spec.TypeByName("skb_drop_reason", &e) != nil {
		return names
	}
	for _, v := range e.Values {
		name, ok := strings.CutPrefix(v.Name, "SKB_DROP_REASON_")
		if !ok || v.Value > math.MaxUint32 {
			continue
		}
		if _, dup := names[uint32(v.Value)]; !dup {
			names[uint32(v.Value)] = strings.ToLower(name)
		}
	}
	return names
})

// DropReasonName names a value of the kernel's enum skb_drop_reason, from
// the running kernel's BTF.
func DropReasonName(reason uint32) string {
	if n, ok := dropReasonNames()[reason]; ok {
		return n
	}
	return "reason_" + strconv.FormatUint(uint64(reason), 10)
}

// XDPEvents count our XDP program's failures seen by the xdp tracepoints.
type XDPEvents struct {
	// RedirectErr by errno name ("ENOBUFS": AF_XDP rx ring full, "EINVAL",
	// "ENETDOWN"…).
	RedirectErr map[string]uint64
	// Exception by XDP action ("aborted", or "action_<n>" for an invalid
	// one).
	Exception map[string]uint64
}

// ReadXDPEvents sums the xdp_redirect_err and xdp_exception counters.
func (p *Probes) ReadXDPEvents() (XDPEvents, error) {
	ev := XDPEvents{RedirectErr: map[string]uint64{}, Exception: map[string]uint64{}}
	var (
		key    probesKernProbeXdpKey
		percpu []uint64
	)
	it := p.maps.ProbeXdpEvents.Iterate()
	for it.Next(&key, &percpu) {
		sum := sumPerCPU(percpu)
		switch key.Event {
		case probesKernProbeXdpEventPROBE_XDP_REDIRECT_ERR:
			ev.RedirectErr[errnoName(key.Code)] += sum
		case probesKernProbeXdpEventPROBE_XDP_EXCEPTION:
			ev.Exception[xdpActionName(key.Code)] += sum
		}
	}
	if err := it.Err(); err != nil {
		return ev, fmt.Errorf("read xdp events: %w", err)
	}
	return ev, nil
}

func errnoName(code int32) string {
	if code < 0 {
		code = -code
	}
	if n := unix.ErrnoName(unix.Errno(code)); n != "" {
		return n
	}
	return "errno_" + strconv.Itoa(int(code))
}

func xdpActionName(act int32) string {
	switch act {
	case 0:
		return "aborted"
	case 1:
		return "drop"
	case 2:
		return "pass"
	case 3:
		return "tx"
	case 4:
		return "redirect"
	}
	return "action_" + strconv.Itoa(int(act))
}

// Close stops the clock refresher, detaches the tracing probes and closes
// programs and maps. Sockets keep their filter until they close.
func (p *Probes) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	if p.stop != nil {
		close(p.stop)
		<-p.done
	}
	var errs []error
	if p.tsFD >= 0 {
		errs = append(errs, unix.Close(p.tsFD))
	}
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	for _, prog := range p.progs {
		errs = append(errs, prog.Close())
	}
	errs = append(errs, p.maps.Close())
	return errors.Join(errs...)
}

// Unpin removes the pins of the probes' maps (and the pin directory if
// that leaves it empty). Call it before Close.
func (p *Probes) Unpin() error {
	m := &p.maps
	return unpinAll(p.pinPath, m.ProbeCfg, m.ProbeDrops, m.ProbeLatency, m.ProbePorts, m.ProbeSockTicks,
		m.ProbeStats, m.ProbeXdpEvents)
}

// sumPerCPU adds up the per-CPU values of one PERCPU map entry.
func sumPerCPU(percpu []uint64) uint64 {
	var sum uint64
	for _, v := range percpu {
		sum += v
	}
	return sum
}

// NetnsIno is the inode of the calling thread's network namespace, as the
// probes compare it (0 when it cannot be read).
func NetnsIno() uint32 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0
	}
	return uint32(st.Ino)
}
