//go:build linux

package testenv

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace and the alias of every link
// this package creates.
const Prefix = "xgate-test-"

// Options shape a Pair. The zero value is one RX/TX queue, MTU 1500, both
// ends in fresh namespaces, IPv4 only.
type Options struct {
	// RxQueues and TxQueues per veth end (numrxqueues/numtxqueues).
	// Default 1; TxQueues defaults to RxQueues.
	RxQueues int
	TxQueues int
	// MTU of both ends; default 1500.
	MTU int
	// RootA puts end A in the calling process's namespace (the root one,
	// normally) instead of a fresh namespace. B is always in a namespace.
	RootA bool
	// ThreadedNAPI turns GRO on (veth has NAPI instances only with GRO on
	// or an XDP program attached) and writes 1 to
	// /sys/class/net/<dev>/threaded on both ends, so receive work runs in
	// napi/<dev>-* kernel threads instead of on the sending CPU.
	ThreadedNAPI bool
	// IPv6 adds 2001:2:0:<n>::1/64 and ::2 (no DAD) next to IPv4. Without
	// it IPv6 is disabled on the veth ends, so no router solicitations or
	// MLD reports cross the pair.
	IPv6 bool
	// KernelQueues creates the veth as `ip link add A type veth peer name B`
	// does: without numrxqueues/numtxqueues, so the kernel picks the
	// device's maximum (one queue per possible CPU for veth) and activates
	// one. RxQueues and TxQueues must be 0. Host.Queues is the active count;
	// Host.SetChannels activates more.
	KernelQueues bool
	// DynamicNeighbors keeps ARP/ND. By default each end gets a permanent
	// neighbour entry for the other, so no ARP or ND packet crosses the
	// pair: counters see only the test's traffic, and an XDP program that
	// drops everything does not starve address resolution.
	DynamicNeighbors bool
}

// Host is one end of a Pair: a namespace and the veth end inside it.
type Host struct {
	// NS is the namespace name under /run/netns, "" for the caller's
	// namespace (Options.RootA).
	NS string
	// Link is the veth end's name, Ifindex its index inside NS.
	Link    string
	Ifindex int
	MAC     net.HardwareAddr
	// Addr is the IPv4 address, Prefix its /30.
	Addr   netip.Addr
	Prefix netip.Prefix
	// Addr6 is the IPv6 address (/64), invalid unless Options.IPv6.
	Addr6 netip.Addr
	// Queues is the number of active RX queues of Link (ethtool -l).
	Queues int

	ns   netns.NsHandle
	root bool
}

// Pair is two hosts joined by a veth pair: A (the peer that sends,
// usually) and B (where the system under test listens, usually).
type Pair struct {
	A, B *Host
	// Tag is the unique xgate-test-<pid>-<counter>-<random> of this pair.
	Tag string

	mu     sync.Mutex
	closed bool
}

var (
	counter   atomic.Uint32
	sweepOnce sync.Once
)

// New builds a Pair for a test, skips the test when not root, fails it on
// error, and removes the Pair when the test ends (also when it fails).
func New(tb testing.TB, opts Options) *Pair {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("testenv: needs root (network namespaces, veth)")
	}
	p, err := NewPair(opts)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Errorf("testenv: close: %v", err)
		}
	})
	return p
}

// NewPair builds a Pair; the caller must Close it. On error nothing is left
// behind.
func NewPair(opts Options) (*Pair, error) {
	sweepOnce.Do(func() { Sweep() })

	if opts.KernelQueues && (opts.RxQueues != 0 || opts.TxQueues != 0) {
		return nil, errors.New("KernelQueues with RxQueues or TxQueues: the kernel picks the queues")
	}
	if opts.RxQueues <= 0 && !opts.KernelQueues {
		opts.RxQueues = 1
	}
	if opts.TxQueues <= 0 {
		opts.TxQueues = opts.RxQueues
	}
	if opts.MTU <= 0 {
		opts.MTU = 1500
	}
	if opts.RxQueues > 256 || opts.TxQueues > 256 {
		return nil, fmt.Errorf("queues %d/%d: at most 256", opts.RxQueues, opts.TxQueues)
	}
	if opts.MTU < 68 || opts.MTU > 65535 {
		return nil, fmt.Errorf("mtu %d out of range", opts.MTU)
	}

	pid := os.Getpid()
	n := counter.Add(1)
	var rb [4]byte
	rand.Read(rb[:])
	rnd := binary.LittleEndian.Uint32(rb[:]) % (36 * 36 * 36)
	tag := fmt.Sprintf("%s%d-%d-%s", Prefix, pid, n, pad36(rnd, 3))
	// IFNAMSIZ is 16: "xt" + pid + counter + random + side, base 36.
	short := "xt" + strconv.FormatUint(uint64(pid), 36) + strconv.FormatUint(uint64(n%1296), 36) + pad36(rnd, 3)

	// One /30 of 198.18.0.0/15 per pair; distinct within a process, and
	// different processes rarely collide (it only matters with RootA).
	slot := (uint32(pid)*7919 + n*4099 + rnd) % (1 << 15)
	base := 198<<24 | 18<<16 | slot<<2
	v4 := func(host uint32) netip.Addr {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], base|host)
		return netip.AddrFrom4(b)
	}
	v6 := func(host byte) netip.Addr {
		b := [16]byte{0x20, 0x01, 0x00, 0x02, 0, 0, byte(slot >> 8), byte(slot), 15: host}
		return netip.AddrFrom16(b)
	}

	p := &Pair{Tag: tag}
	p.A = &Host{Link: short + "a", Addr: v4(1), Prefix: netip.PrefixFrom(v4(0), 30), Queues: opts.RxQueues, ns: netns.None()}
	p.B = &Host{Link: short + "b", Addr: v4(2), Prefix: netip.PrefixFrom(v4(0), 30), Queues: opts.RxQueues, ns: netns.None()}
	if opts.IPv6 {
		p.A.Addr6, p.B.Addr6 = v6(1), v6(2)
	}

	if err := p.build(opts); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

func (p *Pair) build(opts Options) error {
	var err error
	if opts.RootA {
		p.A.root = true
		if p.A.ns, err = netns.Get(); err != nil {
			return fmt.Errorf("get current netns: %w", err)
		}
	} else {
		p.A.NS = p.Tag + "-a"
		if p.A.ns, err = newNamedNS(p.A.NS); err != nil {
			return err
		}
	}
	p.B.NS = p.Tag + "-b"
	if p.B.ns, err = newNamedNS(p.B.NS); err != nil {
		return err
	}

	ha, err := netlink.NewHandleAt(p.A.ns)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer ha.Close()

	la := netlink.NewLinkAttrs()
	la.Name = p.A.Link
	la.Alias = p.Tag
	la.MTU = opts.MTU
	la.NumRxQueues = opts.RxQueues
	la.NumTxQueues = opts.TxQueues
	veth := &netlink.Veth{
		LinkAttrs:       la,
		PeerName:        p.B.Link,
		PeerNamespace:   netlink.NsFd(p.B.ns),
		PeerNumRxQueues: uint32(opts.RxQueues),
		PeerNumTxQueues: uint32(opts.TxQueues),
		PeerMTU:         uint32(opts.MTU),
		PeerTxQLen:      -1,
	}
	if err := ha.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s/%s: %w", p.A.Link, p.B.Link, err)
	}
	for _, h := range []*Host{p.A, p.B} {
		if err := h.configure(p.Tag, opts); err != nil {
			return err
		}
	}
	for _, h := range []*Host{p.A, p.B} {
		if err := h.waitReady(5 * time.Second); err != nil {
			return err
		}
		if opts.KernelQueues {
			if h.Queues, err = h.ActiveRxQueues(); err != nil {
				return err
			}
		}
	}
	if !opts.DynamicNeighbors {
		for _, h := range []*Host{p.A, p.B} {
			if err := h.addNeighbor(p.Peer(h)); err != nil {
				return err
			}
		}
	}
	if opts.ThreadedNAPI {
		// Both ends must be up before veth creates its NAPI instances.
		for _, h := range []*Host{p.A, p.B} {
			if err := h.setGRO(true); err != nil {
				return err
			}
			if err := h.SetThreadedNAPI(true); err != nil {
				return err
			}
		}
	}
	return nil
}

// configure addresses and brings up the host's end (and lo).
func (h *Host) configure(tag string, opts Options) error {
	nh, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return fmt.Errorf("netlink handle %s: %w", h.NS, err)
	}
	defer nh.Close()

	link, err := nh.LinkByName(h.Link)
	if err != nil {
		return fmt.Errorf("find %s: %w", h.Link, err)
	}
	if link.Attrs().Alias != tag {
		if err := nh.LinkSetAlias(link, tag); err != nil {
			return fmt.Errorf("alias %s: %w", h.Link, err)
		}
	}
	addrs := []*netlink.Addr{{IPNet: ipnet(h.Addr, 30)}}
	if h.Addr6.IsValid() {
		addrs = append(addrs, &netlink.Addr{IPNet: ipnet(h.Addr6, 64), Flags: unix.IFA_F_NODAD})
	}
	for _, a := range addrs {
		if err := nh.AddrAdd(link, a); err != nil {
			return fmt.Errorf("address %s on %s: %w", a.IPNet, h.Link, err)
		}
	}
	if !h.Addr6.IsValid() {
		if err := h.WriteSysctl("net/ipv6/conf/"+h.Link+"/disable_ipv6", "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if !h.root {
		if lo, err := nh.LinkByName("lo"); err == nil {
			if err := nh.LinkSetUp(lo); err != nil {
				return fmt.Errorf("lo up: %w", err)
			}
		}
	}
	if err := nh.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s up: %w", h.Link, err)
	}
	if link, err = nh.LinkByName(h.Link); err != nil {
		return fmt.Errorf("find %s: %w", h.Link, err)
	}
	h.Ifindex = link.Attrs().Index
	h.MAC = link.Attrs().HardwareAddr
	return nil
}

// waitReady waits until linkwatch has activated the device (operstate up,
// the noop qdisc that drops everything replaced) and the addresses are
// local. Packets sent before that
// are lost without a trace in the counters a test reads.
func (h *Host) waitReady(timeout time.Duration) error {
	nh, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return fmt.Errorf("netlink handle %s: %w", h.NS, err)
	}
	defer nh.Close()
	deadline := time.Now().Add(timeout)
	for {
		link, err := nh.LinkByName(h.Link)
		if err != nil {
			return fmt.Errorf("find %s: %w", h.Link, err)
		}
		if link.Attrs().OperState == netlink.OperUp && h.qdiscReady(nh, link) && h.addrsLocal(nh) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not up after %v (operstate %v)", h.Link, timeout, link.Attrs().OperState)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *Host) qdiscReady(nh *netlink.Handle, link netlink.Link) bool {
	qs, err := nh.QdiscList(link)
	return err == nil && len(qs) > 0 && !slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Type() == "noop" })
}

// addrsLocal reports whether the host's addresses are installed as local
// (IPv6 does that from a work queue after the link comes up, also with
// nodad; until then packets to the address count as Ip6InAddrErrors).
func (h *Host) addrsLocal(nh *netlink.Handle) bool {
	for _, a := range []netip.Addr{h.Addr, h.Addr6} {
		if !a.IsValid() {
			continue
		}
		rs, err := nh.RouteGet(a.AsSlice())
		if err != nil || len(rs) == 0 || rs[0].Type != unix.RTN_LOCAL {
			return false
		}
	}
	return true
}

// addNeighbor adds permanent neighbour entries for the peer's addresses.
func (h *Host) addNeighbor(peer *Host) error {
	nh, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return fmt.Errorf("netlink handle %s: %w", h.NS, err)
	}
	defer nh.Close()
	for _, a := range []netip.Addr{peer.Addr, peer.Addr6} {
		if !a.IsValid() {
			continue
		}
		n := &netlink.Neigh{LinkIndex: h.Ifindex, State: netlink.NUD_PERMANENT, IP: a.AsSlice(), HardwareAddr: peer.MAC}
		if err := nh.NeighSet(n); err != nil {
			return fmt.Errorf("neighbour %s on %s: %w", a, h.Link, err)
		}
	}
	return nil
}

// WriteSysctl writes /proc/sys/<key> as the host's namespace sees it (the
// net.* keys are per namespace), e.g. "net/core/rmem_max".
func (h *Host) WriteSysctl(key, value string) error {
	return h.Do(func() error {
		if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
			return fmt.Errorf("sysctl %s: %w", key, err)
		}
		return nil
	})
}

func ipnet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

func pad36(v uint32, width int) string {
	s := strconv.FormatUint(uint64(v), 36)
	for len(s) < width {
		s = "0" + s
	}
	return s
}

// Close removes the veth pair and the namespaces. It is idempotent and
// gathers every error instead of stopping at the first.
func (p *Pair) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true

	var errs []error
	// Deleting one end deletes both. Try from A's side, then B's, so a half
	// built pair goes too.
	for _, h := range []*Host{p.A, p.B} {
		if h == nil || !h.ns.IsOpen() {
			continue
		}
		nh, err := netlink.NewHandleAt(h.ns)
		if err != nil {
			errs = append(errs, fmt.Errorf("netlink handle: %w", err))
			continue
		}
		if l, err := nh.LinkByName(h.Link); err == nil {
			if err := nh.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", h.Link, err))
			}
		}
		nh.Close()
	}
	for _, h := range []*Host{p.A, p.B} {
		if h == nil {
			continue
		}
		if h.ns.IsOpen() {
			h.ns.Close()
			h.ns = netns.None()
		}
		if h.NS != "" {
			if err := deleteNamedNS(h.NS); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Do runs fn on a locked OS thread inside the host's namespace (see the
// package comment for what fn may and may not do).
func (h *Host) Do(fn func() error) error {
	return inNS(h.ns, fn)
}

// NetNS returns the handle of the host's namespace, valid until Close; for
// netlink.NewHandleAt and the like. Do not close it.
func (h *Host) NetNS() netns.NsHandle { return h.ns }

// Peer returns the other end of the pair.
func (p *Pair) Peer(h *Host) *Host {
	if h == p.A {
		return p.B
	}
	return p.A
}

// SetThreadedNAPI switches threaded NAPI on the host's veth end by writing
// /sys/class/net/<dev>/threaded (EOPNOTSUPP while veth has no NAPI: turn
// GRO on or attach XDP first). sysfs shows the namespace of whoever mounted
// it, so for a host in its own namespace the write happens on a locked
// thread with a private mount namespace and a fresh sysfs; the thread is
// then moved back to its mount and network namespaces, or discarded if
// that fails.
func (h *Host) SetThreadedNAPI(on bool) error {
	val := []byte("0")
	if on {
		val = []byte("1")
	}
	path := "/sys/class/net/" + h.Link + "/threaded"
	if h.root {
		if err := os.WriteFile(path, val, 0); err != nil {
			return fmt.Errorf("threaded napi: %w", err)
		}
		return nil
	}
	mnt, err := os.Open("/proc/thread-self/ns/mnt")
	if err != nil {
		return fmt.Errorf("open mount ns: %w", err)
	}
	defer mnt.Close()
	return onThread(func() error {
		if err := netns.Set(h.ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return nil
	}, func() error {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("unshare mount ns: %w", err)
		}
		werr := func() error {
			if err := unix.Mount("", "/", "none", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("make / slave: %w", err)
			}
			if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
				return fmt.Errorf("mount sysfs: %w", err)
			}
			if err := os.WriteFile(path, val, 0); err != nil {
				return fmt.Errorf("threaded napi: %w", err)
			}
			return nil
		}()
		if err := unix.Setns(int(mnt.Fd()), unix.CLONE_NEWNS); err != nil {
			// The netns restore in onThread may still succeed; make sure
			// the thread is discarded anyway.
			runtime.LockOSThread()
			return errors.Join(werr, fmt.Errorf("restore mount ns: %w (%w)", err, errThreadTainted))
		}
		return werr
	})
}

// TxDropped is the veth end's tx_dropped count: datagrams the kernel sent
// through it that veth could not hand to its peer (the peer's ring full).
func (h *Host) TxDropped() (uint64, error) {
	nh, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return 0, fmt.Errorf("testenv: netlink in %s: %w", h.NS, err)
	}
	defer nh.Close()
	l, err := nh.LinkByIndex(h.Ifindex)
	if err != nil {
		return 0, fmt.Errorf("testenv: link %s: %w", h.Link, err)
	}
	if st := l.Attrs().Statistics; st != nil {
		return st.TxDropped, nil
	}
	return 0, fmt.Errorf("testenv: link %s has no statistics", h.Link)
}
