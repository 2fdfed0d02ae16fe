package bpf

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Mode says where survivors of the XDP program go (enum xgate_mode).
type Mode uint32

const (
	// ModeSocket passes survivors to the stack (the SO_REUSEPORT group).
	ModeSocket = Mode(XdpXgateModeXGATE_MODE_SOCKET)
	// ModeAFXDP stamps survivors and redirects them to the RX queue's
	// AF_XDP socket (XDP_PASS when the queue has none).
	ModeAFXDP = Mode(XdpXgateModeXGATE_MODE_AFXDP)
)

func (m Mode) String() string {
	switch m {
	case ModeSocket:
		return "socket"
	case ModeAFXDP:
		return "afxdp"
	}
	return fmt.Sprintf("mode(%d)", uint32(m))
}

// DefaultCostSampleN is how often the program times itself by default:
// one packet in 64 per CPU.
const DefaultCostSampleN = 64

// CostSampleOff in Config.CostSampleN turns the cost sampling off.
const CostSampleOff = math.MaxUint32

// Config is the run-time policy of the XDP program (the xgate_cfg map);
// SetConfig changes it on a loaded program without reloading.
type Config struct {
	Mode Mode
	// BucketRate is the per-source token rate in packets per second;
	// 0 disables the token bucket.
	BucketRate uint64
	// BucketBurst is how many packets a source may send back to back;
	// 0 means 1 when BucketRate is set.
	BucketBurst uint64
	// PayloadCheck drops UDP payloads whose first non-blank byte is not '{'.
	PayloadCheck bool
	// CostSampleN times one packet in N per CPU; 0 means
	// DefaultCostSampleN, CostSampleOff disables it.
	CostSampleN uint32
}

func (c Config) raw() (XdpXgateConfig, error) {
	var r XdpXgateConfig
	switch c.Mode {
	case ModeSocket, ModeAFXDP:
		r.Mode = XdpXgateMode(c.Mode)
	default:
		return r, fmt.Errorf("unknown mode %d", uint32(c.Mode))
	}
	if c.BucketRate > 0 {
		burst := max(c.BucketBurst, 1)
		r.BucketIntervalNs = max(uint64(time.Second)/c.BucketRate, 1)
		if burst > math.MaxUint64/r.BucketIntervalNs {
			return r, fmt.Errorf("bucket burst %d at rate %d/s overflows", burst, c.BucketRate)
		}
		r.BucketLimitNs = burst * r.BucketIntervalNs
	}
	if c.PayloadCheck {
		r.Flags |= XdpXgateFlagsXGATE_F_PAYLOAD_CHECK
	}
	switch c.CostSampleN {
	case 0:
		r.CostSampleN = DefaultCostSampleN
	case CostSampleOff:
		r.CostSampleN = 0
	default:
		r.CostSampleN = c.CostSampleN
	}
	return r, nil
}

// Options for LoadXDP.
type Options struct {
	// PinPath pins the maps by name under this bpffs directory (e.g.
	// /sys/fs/bpf/xgate) and reuses maps already pinned there; empty
	// means no pinning.
	PinPath string
	// Queues sizes the XSKMAP: one slot per NIC RX queue. 0 means 64.
	Queues int
	// BlocklistSize and BucketSize size the two LRU maps; 0 keeps the
	// C defaults (65536 each).
	BlocklistSize, BucketSize int
	// ListenPorts is the initial listen set (UDP destination ports).
	ListenPorts []uint16
	Config
}

// XDP is the loaded ingest program and its maps. See the package
// documentation for lifetime and concurrency.
type XDP struct {
	objs    xdpObjects
	pinPath string
	mu      sync.Mutex // serialises SetListenPorts
}

// xdpObjects leaves out the BTF anchor variable (.rodata) the program
// never reads, so loading creates no map for it.
type xdpObjects struct {
	XdpPrograms
	XdpMaps
}

// LoadXDP checks privileges and kernel features, loads the XDP program and
// its maps and writes the initial config and listen set. It does not attach:
// see Attach.
func LoadXDP(opts Options) (*XDP, error) {
	if err := checkCaps(false); err != nil {
		return nil, fmt.Errorf("load xdp: %w", err)
	}
	if err := checkFeatures(xdpRequirements); err != nil {
		return nil, fmt.Errorf("load xdp: %w", err)
	}
	cfg, err := opts.Config.raw()
	if err != nil {
		return nil, fmt.Errorf("load xdp: config: %w", err)
	}

	spec, err := LoadXdp()
	if err != nil {
		return nil, err
	}
	if opts.Queues < 0 || opts.BlocklistSize < 0 || opts.BucketSize < 0 {
		return nil, errors.New("load xdp: negative map size")
	}
	if opts.Queues > 0 {
		spec.Maps[XdpMapXgateXsks].MaxEntries = uint32(opts.Queues)
	}
	if opts.BlocklistSize > 0 {
		spec.Maps[XdpMapXgateBlocklist].MaxEntries = uint32(opts.BlocklistSize)
	}
	if opts.BucketSize > 0 {
		spec.Maps[XdpMapXgateBuckets].MaxEntries = uint32(opts.BucketSize)
	}
	if err := preparePins(spec.Maps, opts.PinPath); err != nil {
		return nil, fmt.Errorf("load xdp: %w", err)
	}

	x := &XDP{pinPath: opts.PinPath}
	err = spec.LoadAndAssign(&x.objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: opts.PinPath},
	})
	if err != nil {
		return nil, explainLoad("xdp", err)
	}
	if err := x.objs.XgateCfg.Put(uint32(0), cfg); err != nil {
		x.Close()
		return nil, fmt.Errorf("load xdp: write config: %w", err)
	}
	if err := x.SetListenPorts(opts.ListenPorts...); err != nil {
		x.Close()
		return nil, fmt.Errorf("load xdp: %w", err)
	}
	return x, nil
}

// Program is the XDP program, for attaching or BPF_PROG_TEST_RUN.
func (x *XDP) Program() *ebpf.Program { return x.objs.XgateXdp }

// Maps gives direct access to the maps (read-mostly; prefer the helpers).
func (x *XDP) Maps() *XdpMaps { return &x.objs.XdpMaps }

// Attach attaches the program to an interface through a bpf_link, so that
// it detaches when the process dies. flags picks the mode
// (link.XDPGenericMode, link.XDPDriverMode; 0 lets the kernel choose).
func (x *XDP) Attach(ifindex int, flags link.XDPAttachFlags) (link.Link, error) {
	if err := checkCaps(true); err != nil {
		return nil, fmt.Errorf("attach xdp: %w", err)
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: x.objs.XgateXdp, Interface: ifindex, Flags: flags})
	switch {
	case err == nil:
		return l, nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return nil, fmt.Errorf("attach xdp to ifindex %d: %w", ifindex,
			&UnsupportedError{What: "XDP bpf_link", Hint: "needs Linux >= 5.9", Err: err})
	case errors.Is(err, unix.EINVAL):
		// On 5.7–5.8 a link_create for XDP is EINVAL, not ENOTSUPP.
		return nil, fmt.Errorf("attach xdp to ifindex %d (an XDP link needs Linux >= 5.9): %w", ifindex, err)
	case errors.Is(err, unix.EBUSY):
		return nil, fmt.Errorf("attach xdp to ifindex %d: another XDP program is attached (netlink); remove it first (ip link set dev IF xdp off): %w", ifindex, err)
	}
	return nil, fmt.Errorf("attach xdp to ifindex %d: %w", ifindex, err)
}

// SetConfig replaces the run-time policy. Buckets keep their state: a new
// rate applies from the next packet of each source.
func (x *XDP) SetConfig(c Config) error {
	raw, err := c.raw()
	if err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	if err := x.objs.XgateCfg.Put(uint32(0), raw); err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	return nil
}

// ReadConfig reads back the run-time policy as the program sees it.
func (x *XDP) ReadConfig() (XdpXgateConfig, error) {
	var raw XdpXgateConfig
	if err := x.objs.XgateCfg.Lookup(uint32(0), &raw); err != nil {
		return raw, fmt.Errorf("read config: %w", err)
	}
	return raw, nil
}

// SetListenPorts makes ports the listen set, replacing the previous one in
// one map update. A port in both the old and the new set stays listened
// throughout; the program may see a changed port flip at any point of the
// update.
func (x *XDP) SetListenPorts(ports ...uint16) error {
	x.mu.Lock()
	defer x.mu.Unlock()

	var set XdpXgatePortSet
	for _, p := range ports {
		set.Bits[p/64] |= 1 << (p % 64)
	}
	if err := x.objs.XgatePorts.Put(uint32(0), &set); err != nil {
		return fmt.Errorf("set listen ports: %w", err)
	}
	return nil
}

// ListenPorts reads the listen set back, sorted.
func (x *XDP) ListenPorts() ([]uint16, error) {
	var set XdpXgatePortSet
	if err := x.objs.XgatePorts.Lookup(uint32(0), &set); err != nil {
		return nil, fmt.Errorf("read listen ports: %w", err)
	}
	var ports []uint16
	for i, w := range set.Bits {
		for b := 0; w != 0; b++ {
			if w&1 != 0 {
				ports = append(ports, uint16(i*64+b))
			}
			w >>= 1
		}
	}
	return ports, nil
}

// srcKey is the map key for addr: IPv6, or IPv4 as v4-mapped IPv6, as the
// program builds it from the packet.
func srcKey(addr netip.Addr) (XdpXgateSrcKey, error) {
	if !addr.IsValid() {
		return XdpXgateSrcKey{}, errors.New("invalid address")
	}
	return XdpXgateSrcKey{Addr: addr.WithZone("").As16()}, nil
}

// Forever as a Block ttl blocks until Unblock.
const Forever time.Duration = 0

// Block drops every packet from addr (to our ports) for ttl, measured from
// now; ttl <= 0 (Forever) blocks until Unblock. Blocking again replaces the
// expiry. The blocklist is an LRU: when full, the least recently hit entry
// is evicted.
func (x *XDP) Block(addr netip.Addr, ttl time.Duration) error {
	key, err := srcKey(addr)
	if err != nil {
		return fmt.Errorf("block %v: %w", addr, err)
	}
	exp := uint64(math.MaxUint64)
	if ttl > 0 {
		exp = Ktime() + uint64(ttl)
	}
	if err := x.objs.XgateBlocklist.Put(key, XdpXgateBlock{ExpiresNs: exp}); err != nil {
		return fmt.Errorf("block %v: %w", addr, err)
	}
	return nil
}

// blockAt is Block with an absolute expiry in Ktime ns (tests).
func (x *XDP) blockAt(addr netip.Addr, expiresNs uint64) error {
	key, err := srcKey(addr)
	if err != nil {
		return err
	}
	return x.objs.XgateBlocklist.Put(key, XdpXgateBlock{ExpiresNs: expiresNs})
}

// Unblock removes addr from the blocklist; removing an absent address is
// not an error.
func (x *XDP) Unblock(addr netip.Addr) error {
	key, err := srcKey(addr)
	if err != nil {
		return fmt.Errorf("unblock %v: %w", addr, err)
	}
	if err := x.objs.XgateBlocklist.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unblock %v: %w", addr, err)
	}
	return nil
}

// Blocked is one blocklist entry.
type Blocked struct {
	Addr      netip.Addr // IPv4 addresses come back as IPv4 (unmapped)
	ExpiresNs uint64     // Ktime ns; math.MaxUint64 when Permanent
	Permanent bool
	Expired   bool // at the time of ListBlocked: the program ignores it
}

// TTL is the time left at Ktime now (negative once expired; MaxInt64 when
// permanent).
func (b Blocked) TTL(now uint64) time.Duration {
	if b.Permanent {
		return math.MaxInt64
	}
	return time.Duration(int64(b.ExpiresNs - now))
}

// ListBlocked reads the blocklist, expired entries included (marked).
func (x *XDP) ListBlocked() ([]Blocked, error) {
	now := Ktime()
	var out []Blocked
	var key XdpXgateSrcKey
	var val XdpXgateBlock
	it := x.objs.XgateBlocklist.Iterate()
	for it.Next(&key, &val) {
		out = append(out, Blocked{
			Addr:      netip.AddrFrom16(key.Addr).Unmap(),
			ExpiresNs: val.ExpiresNs,
			Permanent: val.ExpiresNs == math.MaxUint64,
			Expired:   val.ExpiresNs <= now,
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list blocked: %w", err)
	}
	return out, nil
}

// Counter is a packet and byte count.
type Counter struct {
	Packets, Bytes uint64
}

func (c Counter) add(o Counter) Counter {
	return Counter{c.Packets + o.Packets, c.Bytes + o.Bytes}
}

// Counters are the XDP counters summed over CPUs, indexed by Reason.
type Counters [ReasonMax]Counter

// Total sums the terminal reasons: every packet the program saw, once.
func (c *Counters) Total() Counter {
	var t Counter
	for r := Reason(0); r < ReasonTerminal; r++ {
		t = t.add(c[r])
	}
	return t
}

// ByName maps Reason.String() to its counter, for logs and JSON.
func (c *Counters) ByName() map[string]Counter {
	m := make(map[string]Counter, len(c))
	for r := range c {
		m[Reason(r).String()] = c[r]
	}
	return m
}

// ReadCounters reads and sums the per-CPU counters.
func (x *XDP) ReadCounters() (Counters, error) {
	var out Counters
	var perCPU []XdpXgateCounter
	for r := Reason(0); r < ReasonMax; r++ {
		if err := x.objs.XgateCounters.Lookup(uint32(r), &perCPU); err != nil {
			return out, fmt.Errorf("read counter %v: %w", r, err)
		}
		for _, v := range perCPU {
			out[r].Packets += v.Packets
			out[r].Bytes += v.Bytes
		}
	}
	return out, nil
}

// CostBuckets is the number of log2 buckets of the cost histogram.
const CostBuckets = len(XdpXgateCost{}.Hist)

// Cost is the sampled run time of the XDP program, summed over CPUs.
// Hist[i] counts samples that took <= 2^i ns (the last bucket also counts
// everything slower), per bucket, not cumulative.
type Cost struct {
	Samples uint64
	SumNs   uint64
	Hist    [CostBuckets]uint64
}

// Mean is the mean sampled ns per packet (0 without samples).
func (c Cost) Mean() time.Duration {
	if c.Samples == 0 {
		return 0
	}
	return time.Duration(c.SumNs / c.Samples)
}

// ReadCost reads and sums the per-CPU cost samples.
func (x *XDP) ReadCost() (Cost, error) {
	var out Cost
	var perCPU []XdpXgateCost
	if err := x.objs.XgateCostNs.Lookup(uint32(0), &perCPU); err != nil {
		return out, fmt.Errorf("read cost: %w", err)
	}
	for _, v := range perCPU {
		out.Samples += v.Samples
		out.SumNs += v.SumNs
		for i := range v.Hist {
			out.Hist[i] += v.Hist[i]
		}
	}
	return out, nil
}

// RegisterXSK puts an AF_XDP socket into the slot of its RX queue; the
// socket must be bound to that queue of the interface the program runs on.
func (x *XDP) RegisterXSK(queue uint32, fd int) error {
	if fd < 0 || fd > math.MaxUint32 {
		return fmt.Errorf("register xsk for queue %d: bad fd %d", queue, fd)
	}
	if err := x.objs.XgateXsks.Put(queue, uint32(fd)); err != nil {
		return fmt.Errorf("register xsk for queue %d: %w", queue, err)
	}
	return nil
}

// UnregisterXSK empties the slot of an RX queue: its packets pass to the
// stack (counted as pass_no_xsk). An empty slot is not an error.
func (x *XDP) UnregisterXSK(queue uint32) error {
	if err := x.objs.XgateXsks.Delete(queue); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unregister xsk for queue %d: %w", queue, err)
	}
	return nil
}

// Close releases the program and map file descriptors. Pins stay: see Unpin.
func (x *XDP) Close() error {
	return x.objs.close()
}

// Unpin removes the pins of the maps (and the pin directory if that leaves
// it empty), so the maps die with their last user.
func (x *XDP) Unpin() error {
	m := &x.objs.XdpMaps
	return unpinAll(x.pinPath, m.XgateBlocklist, m.XgateBuckets, m.XgateCfg,
		m.XgateCostNs, m.XgateCounters, m.XgatePorts, m.XgateXsks)
}

func (o *xdpObjects) close() error {
	return closeAll(o.XgateXdp, o.XgateBlocklist, o.XgateBuckets, o.XgateCfg,
		o.XgateCostNs, o.XgateCounters, o.XgatePorts, o.XgateXsks)
}

// closeAll closes everything and joins the errors; nil *ebpf.Map and
// *ebpf.Program close as no-ops.
func closeAll(cs ...io.Closer) error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
