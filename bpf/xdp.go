package bpf

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Delivery is where the XDP program sends the datagrams it lets through
// (enum xgate_mode in xgate.h): up the stack to our socket group, or into
// the RX queue's AF_XDP socket.
type Delivery uint32

const (
	// DeliverStack passes survivors to the stack (the socket path).
	DeliverStack = Delivery(XdpXgateModeXGATE_MODE_SOCKET)
	// DeliverXSK stamps survivors and redirects them to the RX queue's
	// AF_XDP socket (XDP_PASS when the queue has none).
	DeliverXSK = Delivery(XdpXgateModeXGATE_MODE_AFXDP)
)

func (d Delivery) String() string {
	switch d {
	case DeliverStack:
		return "stack"
	case DeliverXSK:
		return "xsk"
	}
	return fmt.Sprintf("delivery(%d)", uint32(d))
}

// Stamp is how a redirected frame carries its receive timestamp to the
// AF_XDP worker (enum xgate_stamp; the frame layouts are drawn in xgate.h).
type Stamp uint32

const (
	// StampAuto lets LoadXDP choose: StampMeta where the kernel lets XDP
	// programs call bpf_xdp_adjust_meta (FeatXDPMeta), else StampPrefix.
	StampAuto Stamp = 0
	// StampMeta writes the stamp as XDP metadata in front of the packet.
	StampMeta = Stamp(XdpXgateStampXGATE_STAMP_META)
	// StampPrefix writes it as a 16-byte header that becomes part of the
	// frame; the worker strips it (xdp.Config.PrefixStamp).
	StampPrefix = Stamp(XdpXgateStampXGATE_STAMP_PREFIX)
)

func (s Stamp) String() string {
	switch s {
	case StampAuto:
		return "auto"
	case StampMeta:
		return "meta"
	case StampPrefix:
		return "prefix"
	}
	return fmt.Sprintf("stamp(%d)", uint32(s))
}

// chooseStamp resolves StampAuto from the probe and says why.
func chooseStamp(s Stamp) (Stamp, string, error) {
	switch s {
	case StampMeta:
		if err := Probe(FeatXDPMeta); err != nil {
			return 0, "", fmt.Errorf("stamp meta: %w", err)
		}
		return StampMeta, "configured", nil
	case StampPrefix:
		return StampPrefix, "configured", nil
	case StampAuto:
	default:
		return 0, "", fmt.Errorf("unknown stamp %d", uint32(s))
	}
	err := Probe(FeatXDPMeta)
	if err == nil {
		return StampMeta, FeatXDPMeta + " available", nil
	}
	// Refused, switched off or not known: the prefix works wherever
	// bpf_xdp_adjust_head does, which every XDP kernel allows.
	return StampPrefix, fmt.Sprintf("%s: %v", FeatXDPMeta, err), nil
}

// DefaultCostSampleN is how often the program times itself by default:
// one packet in 64 per CPU.
const DefaultCostSampleN = 64

// CostSampleOff in Config.CostSampleN turns the cost sampling off.
const CostSampleOff = math.MaxUint32

// Config is the run-time policy of the XDP program (the xgate_cfg map);
// SetConfig changes it on a loaded program without reloading.
type Config struct {
	// Deliver is where survivors go (default DeliverStack).
	Deliver Delivery
	// BucketRate is the per-source token rate in packets per second;
	// 0 disables the token bucket.
	BucketRate uint64
	// BucketBurst is how many packets a source may send back to back;
	// 0 means 1 when BucketRate is set.
	BucketBurst uint64
	// PayloadCheck drops UDP payloads whose first non-blank byte is not '{'.
	PayloadCheck bool
	// VLANs are the VLAN IDs served (the outer tag's VID): a datagram to a
	// listened port on another VLAN is dropped as vlan_not_served, since no
	// receive path would see it. Untagged frames are always served.
	// AnyVLAN serves every VLAN. (With rx-vlan-offload on, the NIC strips
	// the tag before XDP runs and every frame looks untagged.)
	VLANs   []uint16
	AnyVLAN bool
	// NoIPv6 drops IPv6 datagrams to listened ports as ipv6_not_served:
	// for receive paths with no IPv6 socket.
	NoIPv6 bool
	// Address is the destination address that is ours (listen.address):
	// a datagram to a listened port but to another address, or of the
	// other family, passes to the stack as not_our_address (after the
	// served checks, so NoIPv6 still drops IPv6 first). The zero Addr or
	// an unspecified one (0.0.0.0, ::) means any; a v4-mapped address is
	// its IPv4 address, as for a socket bound to it.
	Address netip.Addr
	// CostSampleN times one packet in N per CPU; 0 means
	// DefaultCostSampleN, CostSampleOff disables it.
	CostSampleN uint32
	// FineClock makes the token bucket read bpf_ktime_get_ns for every
	// packet. By default the bucket uses the kernel tick (jiffies, read
	// without a helper call, so cheaper per packet) whenever the
	// burst lasts at least two ticks (BucketBurst/BucketRate >= 2/CONFIG_HZ),
	// where being up to a tick late costs a source sending at exactly its
	// rate at most half its burst; smaller bursts always use the fine clock.
	FineClock bool
}

// maxBucketLimit bounds burst/rate: TATs are kept modulo 2^48 ns (see
// struct xgate_bucket) and compared as signed differences.
const maxBucketLimit = 1 << 47 // ns, ≈ 39 h

func (c Config) raw() (XdpXgateConfig, error) {
	var r XdpXgateConfig
	switch c.Deliver {
	case DeliverStack, DeliverXSK:
		r.Mode = XdpXgateMode(c.Deliver)
	default:
		return r, fmt.Errorf("unknown delivery %d", uint32(c.Deliver))
	}
	if c.BucketRate > 0 {
		burst := max(c.BucketBurst, 1)
		r.BucketIntervalNs = max(uint64(time.Second)/c.BucketRate, 1)
		if burst > math.MaxUint64/r.BucketIntervalNs {
			return r, fmt.Errorf("bucket burst %d at rate %d/s overflows", burst, c.BucketRate)
		}
		r.BucketLimitNs = burst * r.BucketIntervalNs
		if r.BucketLimitNs >= maxBucketLimit {
			return r, fmt.Errorf("bucket burst %d at rate %d/s lasts %v, more than the %v the program can hold",
				burst, c.BucketRate, time.Duration(r.BucketLimitNs), time.Duration(maxBucketLimit))
		}
		if tick := kernelTick(); !c.FineClock && r.BucketLimitNs >= 2*tick {
			r.TickNs = tick
		}
	}
	if c.PayloadCheck {
		r.Flags |= XdpXgateFlagsXGATE_F_PAYLOAD_CHECK
	}
	if c.AnyVLAN {
		r.Flags |= XdpXgateFlagsXGATE_F_VLAN_ANY
	}
	if c.NoIPv6 {
		r.Flags |= XdpXgateFlagsXGATE_F_NO_IPV6
	}
	if a, ok := ourAddress(c.Address); ok {
		if a.Is4() {
			r.Flags |= XdpXgateFlagsXGATE_F_DST_V4
		} else {
			r.Flags |= XdpXgateFlagsXGATE_F_DST_V6
		}
		r.DstAddr = a.As16() // an IPv4 address v4-mapped, as xgate.h says
	}
	for _, v := range c.VLANs {
		if v == 0 || v > 4094 {
			return r, fmt.Errorf("VLAN ID %d: want 1..4094", v)
		}
		r.Vlans[v/64] |= 1 << (v % 64)
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
	// BlocklistSize sizes the blocklist LRU; 0 keeps the C default (65536).
	BlocklistSize int
	// CIDRSize is the capacity of the CIDR trie (prefixes over all
	// lists); 0 means DefaultCIDRSize.
	CIDRSize int
	// BucketSize is the number of token-bucket slots, rounded up to a
	// power of two; 0 keeps the C default (65536). Sources share slots by
	// hash: size it well above the number of sources active at once (see
	// bucket_admit in xdp.c for the collision odds).
	BucketSize int
	// ListenPorts is the initial listen set (UDP destination ports).
	ListenPorts []uint16
	// Stamp picks how AF_XDP frames carry their receive timestamp; it is
	// fixed for the life of the loaded program. Default StampAuto.
	Stamp Stamp
	Config
}

// XDP is the loaded ingest program and its maps. See the package
// documentation for lifetime and concurrency.
type XDP struct {
	objs    xdpObjects
	pinPath string
	mu      sync.Mutex // serialises SetListenPorts, SetConfig and the block filter updates

	// Fixed for the life of the maps (read from pinned maps on reuse).
	hashKey    [4]uint32
	bucketMask uint32

	// Fixed for the life of the program.
	stamp    Stamp
	stampWhy string

	// cidrs: the CIDR trie has entries (XGATE_F_CIDRS); under mu.
	cidrs bool
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
	if opts.Queues < 0 || opts.BlocklistSize < 0 || opts.BucketSize < 0 || opts.CIDRSize < 0 {
		return nil, errors.New("load xdp: negative map size")
	}
	stamp, stampWhy, err := chooseStamp(opts.Stamp)
	if err != nil {
		return nil, fmt.Errorf("load xdp: %w", err)
	}
	if err := spec.Variables[XdpVarXgateStamp].Set(uint32(stamp)); err != nil {
		return nil, fmt.Errorf("load xdp: set stamp: %w", err)
	}
	if opts.Queues > 0 {
		spec.Maps[XdpMapXgateXsks].MaxEntries = uint32(opts.Queues)
	}
	if opts.CIDRSize > 0 {
		spec.Maps[XdpMapXgateCidrs].MaxEntries = uint32(opts.CIDRSize)
	}
	if opts.BlocklistSize > 0 {
		spec.Maps[XdpMapXgateBlocklist].MaxEntries = uint32(opts.BlocklistSize)
	}
	if opts.BucketSize > 0 {
		if opts.BucketSize > 1<<30 {
			return nil, fmt.Errorf("load xdp: %d bucket slots: at most 2^30", opts.BucketSize)
		}
		spec.Maps[XdpMapXgateBuckets].MaxEntries = 1 << bits.Len32(uint32(opts.BucketSize-1))
	}
	if err := preparePins(spec.Maps, opts.PinPath); err != nil {
		return nil, fmt.Errorf("load xdp: %w", err)
	}

	x := &XDP{pinPath: opts.PinPath, stamp: stamp, stampWhy: stampWhy}
	err = spec.LoadAndAssign(&x.objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: opts.PinPath},
	})
	if err != nil {
		return nil, explainLoad("xdp", err)
	}
	if err := x.initHash(); err != nil {
		x.Close()
		return nil, fmt.Errorf("load xdp: %w", err)
	}
	// Pinned maps reused from a previous run may hold CIDR lists already.
	var ck XdpXgateCidrKey
	var cv XdpXgateCidrValue
	x.cidrs = x.objs.XgateCidrs.Iterate().Next(&ck, &cv)
	if err := x.putConfig(cfg); err != nil {
		x.Close()
		return nil, fmt.Errorf("load xdp: write config: %w", err)
	}
	if err := x.SetListenPorts(opts.ListenPorts...); err != nil {
		x.Close()
		return nil, fmt.Errorf("load xdp: %w", err)
	}
	return x, nil
}

// Stamp is how this program hands the receive timestamp to AF_XDP
// sockets, and why it was chosen. Sockets must be opened to match
// (xdp.Config.PrefixStamp for StampPrefix).
func (x *XDP) Stamp() (Stamp, string) { return x.stamp, x.stampWhy }

// Program is the XDP program, for attaching or BPF_PROG_TEST_RUN.
func (x *XDP) Program() *ebpf.Program { return x.objs.XgateXdp }

// Maps gives direct access to the maps (read-mostly; prefer the helpers).
func (x *XDP) Maps() *XdpMaps { return &x.objs.XdpMaps }

// AttachMode is where the program runs on an interface: in the driver
// (native) or on the skb the stack built (generic: slower, every driver).
type AttachMode string

const (
	AttachNative  AttachMode = "native"
	AttachGeneric AttachMode = "generic"
)

func (m AttachMode) String() string { return string(m) }

// Flags are the link flags that ask for m.
func (m AttachMode) Flags() link.XDPAttachFlags {
	if m == AttachGeneric {
		return link.XDPGenericMode
	}
	return link.XDPDriverMode
}

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

// initHash takes the hash key from the config map when it has one (maps
// reused from pins: the block filter and the bucket slots were built with
// it), or draws a new key and builds the block filter from the blocklist
// (empty unless only the config was recreated).
func (x *XDP) initHash() error {
	var old XdpXgateConfig
	if err := x.objs.XgateCfg.Lookup(uint32(0), &old); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	x.bucketMask = x.objs.XgateBuckets.MaxEntries() - 1
	if old.HashKey != [4]uint32{} {
		x.hashKey = old.HashKey
		return nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("hash key: %w", err)
	}
	for i := range x.hashKey {
		x.hashKey[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	x.hashKey[0] |= 1 // never all zero: zero means "no key yet"
	// Write the key before the filter, so the program hashes with it.
	var raw XdpXgateConfig
	raw.HashKey, raw.BucketMask = x.hashKey, x.bucketMask
	if err := x.objs.XgateCfg.Put(uint32(0), raw); err != nil {
		return fmt.Errorf("write hash key: %w", err)
	}
	return x.SyncBlockFilter()
}

// putConfig writes raw with the map-bound fields (hash key, slot mask)
// and the flags that follow the maps' contents (CIDR lists). Caller holds
// x.mu, or is LoadXDP before x is shared.
func (x *XDP) putConfig(raw XdpXgateConfig) error {
	raw.HashKey, raw.BucketMask = x.hashKey, x.bucketMask
	raw.Flags &^= XdpXgateFlagsXGATE_F_CIDRS
	if x.cidrs {
		raw.Flags |= XdpXgateFlagsXGATE_F_CIDRS
	}
	return x.objs.XgateCfg.Put(uint32(0), raw)
}

// readConfigLocked reads the config entry; caller holds x.mu.
func (x *XDP) readConfigLocked() (XdpXgateConfig, error) {
	var raw XdpXgateConfig
	if err := x.objs.XgateCfg.Lookup(uint32(0), &raw); err != nil {
		return raw, fmt.Errorf("read config: %w", err)
	}
	return raw, nil
}

// SetConfig replaces the run-time policy. Buckets keep their state: a new
// rate applies from the next packet of each source. When the change moves
// the bucket between the fine and the coarse clock (see Config.FineClock),
// every source starts with a full bucket.
func (x *XDP) SetConfig(c Config) error {
	raw, err := c.raw()
	if err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.putConfig(raw); err != nil {
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

// ourAddress is listen.address as the XDP program and the kfree_skb probe
// match a destination against it: unmapped and without a zone; false for
// the zero Addr or an unspecified one (0.0.0.0, ::), which mean any. Both
// use it so that the probe counts the stack's drops to exactly the
// address the program takes as ours.
func ourAddress(a netip.Addr) (netip.Addr, bool) {
	a = a.Unmap().WithZone("")
	return a, a.IsValid() && !a.IsUnspecified()
}

// srcKey is the map key for addr: IPv6, or IPv4 as v4-mapped IPv6, as the
// program builds it from the packet.
func srcKey(addr netip.Addr) (XdpXgateSrcKey, error) {
	if !addr.IsValid() {
		return XdpXgateSrcKey{}, errors.New("invalid address")
	}
	return XdpXgateSrcKey{Addr: addr.WithZone("").As16()}, nil
}

// srcHash is the program's src_hash (xdp.c): NH over the address's four
// little-endian 32-bit words with key k, then the murmur3 finalizer.
func srcHash(addr [16]byte, k [4]uint32) uint64 {
	w := func(i int) uint32 { return binary.LittleEndian.Uint32(addr[4*i:]) + k[i] }
	h := uint64(w(0))*uint64(w(1)) + uint64(w(2))*uint64(w(3))
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// Block-filter geometry (xgate.h).
const (
	bfilterShift    = 32
	bfilterCounters = 1 << 19
)

// bfilterSlot is the word and byte of key's block-filter counter.
func (x *XDP) bfilterSlot(key XdpXgateSrcKey) (word uint32, byteIdx int) {
	ci := uint32(srcHash(key.Addr, x.hashKey)>>bfilterShift) & (bfilterCounters - 1)
	return ci / 8, int(ci % 8)
}

// bfilterAdd adds d (+1 or -1) to key's counter. A counter at 255 is
// saturated and stays there (a permanent false positive until
// SyncBlockFilter). Caller holds x.mu.
func (x *XDP) bfilterAdd(key XdpXgateSrcKey, d int) error {
	word, i := x.bfilterSlot(key)
	var w XdpXgateBfilterWord
	if err := x.objs.XgateBfilter.Lookup(word, &w); err != nil {
		return fmt.Errorf("block filter: %w", err)
	}
	switch {
	case w.N[i] == math.MaxUint8:
		return nil
	case d > 0:
		w.N[i]++
	case w.N[i] > 0:
		w.N[i]--
	}
	if err := x.objs.XgateBfilter.Put(word, w); err != nil {
		return fmt.Errorf("block filter: %w", err)
	}
	return nil
}

// Forever as a Block ttl blocks until Unblock.
const Forever time.Duration = 0

// ManualRule is the rule name of blocks made by hand (Block).
const ManualRule = "manual"

// Block drops every packet from addr (to our ports) for ttl, measured from
// now; ttl <= 0 (Forever) blocks until Unblock. It is BlockBy with the
// rule ManualRule.
func (x *XDP) Block(addr netip.Addr, ttl time.Duration) error {
	return x.BlockBy(addr, ttl, ManualRule)
}

// BlockBy blocks addr for ttl (Forever: until Unblock) and records rule
// (the rule that blocked; truncated to 31 bytes) and the time, for
// ListBlocked and `bpftool map dump`. Blocking again replaces the entry.
// The blocklist is an LRU: when full, the least recently hit entry is
// evicted. An address in a never-block CIDR list is refused
// (ErrNeverBlock).
//
// The program consults a prefilter (xgate_bfilter) before the blocklist
// map, and only this package keeps that filter in step: an entry written
// into the pinned blocklist by other means (bpftool map update) has no
// effect until SyncBlockFilter runs. One process at a time should write
// the blocklist through this API (the filter update is a read-modify-write
// under this XDP's mutex).
func (x *XDP) BlockBy(addr netip.Addr, ttl time.Duration, rule string) error {
	key, err := srcKey(addr)
	if err != nil {
		return fmt.Errorf("block %v: %w", addr, err)
	}
	if _, action, ok, err := x.LookupCIDR(addr); err != nil {
		return fmt.Errorf("block %v: %w", addr, err)
	} else if ok && action == CIDRNeverBlock {
		return fmt.Errorf("block %v: %w", addr, ErrNeverBlock)
	}
	now := Ktime()
	v := XdpXgateBlock{ExpiresNs: math.MaxUint64, SinceNs: now}
	if ttl > 0 {
		v.ExpiresNs = now + uint64(ttl)
	}
	setRule(&v, rule)
	if err := x.block(key, v); err != nil {
		return fmt.Errorf("block %v: %w", addr, err)
	}
	return nil
}

func setRule(v *XdpXgateBlock, rule string) {
	for i := 0; i < len(v.Rule)-1 && i < len(rule); i++ {
		v.Rule[i] = int8(rule[i])
	}
}

func ruleOf(v *XdpXgateBlock) string {
	b := make([]byte, 0, len(v.Rule))
	for _, c := range v.Rule {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// blockAt is Block with an absolute expiry in Ktime ns (tests).
func (x *XDP) blockAt(addr netip.Addr, expiresNs uint64) error {
	key, err := srcKey(addr)
	if err != nil {
		return err
	}
	v := XdpXgateBlock{ExpiresNs: expiresNs, SinceNs: Ktime()}
	setRule(&v, ManualRule)
	return x.block(key, v)
}

// block counts a new key into the filter before the entry becomes
// visible, so the program never sees an entry whose counter is zero.
func (x *XDP) block(key XdpXgateSrcKey, v XdpXgateBlock) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	var old XdpXgateBlock
	err := x.objs.XgateBlocklist.Lookup(key, &old)
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		if err := x.bfilterAdd(key, +1); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	return x.objs.XgateBlocklist.Put(key, v)
}

// SweepExpired removes the entries whose expiry has passed from the
// blocklist and its prefilter (the program already ignores them; removing
// them frees their LRU slots and keeps the prefilter's counts true). It
// returns how many it removed and the earliest expiry still ahead (Ktime
// ns; 0 when no entry expires), for the caller to arm its next sweep.
func (x *XDP) SweepExpired() (removed int, next uint64, err error) {
	now := Ktime()
	var expired []XdpXgateSrcKey
	var key XdpXgateSrcKey
	var val XdpXgateBlock
	it := x.objs.XgateBlocklist.Iterate()
	for it.Next(&key, &val) {
		switch {
		case val.ExpiresNs == math.MaxUint64:
		case val.ExpiresNs <= now:
			expired = append(expired, key)
		case next == 0 || val.ExpiresNs < next:
			next = val.ExpiresNs
		}
	}
	if err := it.Err(); err != nil {
		return 0, next, fmt.Errorf("sweep blocklist: %w", err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, k := range expired {
		// Re-read under the lock: a Block since the scan may have renewed it.
		if err := x.objs.XgateBlocklist.Lookup(k, &val); err != nil || val.ExpiresNs > now {
			continue
		}
		if err := x.objs.XgateBlocklist.Delete(k); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return removed, next, fmt.Errorf("sweep blocklist: %w", err)
		}
		if err := x.bfilterAdd(k, -1); err != nil {
			return removed, next, fmt.Errorf("sweep blocklist: %w", err)
		}
		removed++
	}
	return removed, next, nil
}

// Unblock removes addr from the blocklist; removing an absent address is
// not an error.
func (x *XDP) Unblock(addr netip.Addr) error {
	key, err := srcKey(addr)
	if err != nil {
		return fmt.Errorf("unblock %v: %w", addr, err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	err = x.objs.XgateBlocklist.Delete(key)
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return nil // evicted or never there: its count (if any) is stale, harmless
	case err != nil:
		return fmt.Errorf("unblock %v: %w", addr, err)
	}
	// Deleted first, then uncounted: the counter never drops below the
	// number of entries that can still be found.
	if err := x.bfilterAdd(key, -1); err != nil {
		return fmt.Errorf("unblock %v: %w", addr, err)
	}
	return nil
}

// SyncBlockFilter rebuilds the blocklist prefilter from the blocklist map:
// call it after writing the pinned blocklist by other means than Block and
// Unblock (bpftool), or to drop the stale counts that LRU evictions leave
// (they show as the block_filter_fp event). Entries added by others while
// it runs may be missed: run it with the blocklist quiescent.
func (x *XDP) SyncBlockFilter() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	words := make([]XdpXgateBfilterWord, bfilterCounters/8)
	var key XdpXgateSrcKey
	var val XdpXgateBlock
	it := x.objs.XgateBlocklist.Iterate()
	for it.Next(&key, &val) {
		w, i := x.bfilterSlot(key)
		if words[w].N[i] < math.MaxUint8 {
			words[w].N[i]++
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("sync block filter: %w", err)
	}
	keys := make([]uint32, len(words))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := x.objs.XgateBfilter.BatchUpdate(keys, words, nil); err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("sync block filter: %w", err)
		}
		for i := range words {
			if err := x.objs.XgateBfilter.Put(keys[i], words[i]); err != nil {
				return fmt.Errorf("sync block filter: %w", err)
			}
		}
	}
	return nil
}

// Blocked is one blocklist entry.
type Blocked struct {
	Addr      netip.Addr // IPv4 addresses come back as IPv4 (unmapped)
	Rule      string     // the rule that blocked it, or ManualRule
	SinceNs   uint64     // Ktime ns when it was blocked (0: written by other means)
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
func (x *XDP) ListBlocked() ([]Blocked, error) { return listBlocked(x.objs.XgateBlocklist) }

func listBlocked(m *ebpf.Map) ([]Blocked, error) {
	now := Ktime()
	var out []Blocked
	var key XdpXgateSrcKey
	var val XdpXgateBlock
	it := m.Iterate()
	for it.Next(&key, &val) {
		out = append(out, Blocked{
			Addr:      netip.AddrFrom16(key.Addr).Unmap(),
			Rule:      ruleOf(&val),
			SinceNs:   val.SinceNs,
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

// Split is the packet count of Counters by fate.
type Split struct {
	Seen      uint64 // every packet the program saw: Dropped + NotForUs + Survivors
	Dropped   uint64
	NotForUs  uint64
	Survivors uint64
}

// Split sums the terminal reasons by their Fate.
func (c *Counters) Split() Split {
	var s Split
	for r := Reason(0); r < ReasonTerminal; r++ {
		n := c[r].Packets
		s.Seen += n
		switch r.Fate() {
		case FateSurvivor:
			s.Survivors += n
		case FateNotForUs:
			s.NotForUs += n
		default:
			s.Dropped += n
		}
	}
	return s
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
func (x *XDP) ReadCounters() (Counters, error) { return readCounters(x.objs.XgateCounters) }

func readCounters(m *ebpf.Map) (Counters, error) {
	var out Counters
	var perCPU []XdpXgateCounter
	for r := Reason(0); r < ReasonMax; r++ {
		if err := m.Lookup(uint32(r), &perCPU); err != nil {
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
func (x *XDP) ReadCost() (Cost, error) { return readCost(x.objs.XgateCostNs) }

func readCost(m *ebpf.Map) (Cost, error) {
	var out Cost
	var perCPU []XdpXgateCost
	if err := m.Lookup(uint32(0), &perCPU); err != nil {
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
	return unpinAll(x.pinPath, m.XgateBlocklist, m.XgateBfilter, m.XgateBuckets, m.XgateCfg,
		m.XgateCostNs, m.XgateCounters, m.XgatePorts, m.XgateXsks, m.XgateCidrs, m.XgateCidrHits, m.XgateGroups)
}

func (o *xdpObjects) close() error {
	return closeAll(o.XgateXdp, o.XgateBlocklist, o.XgateBfilter, o.XgateBuckets, o.XgateCfg,
		o.XgateCostNs, o.XgateCounters, o.XgatePorts, o.XgateXsks, o.XgateCidrs, o.XgateCidrHits, o.XgateGroups)
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
