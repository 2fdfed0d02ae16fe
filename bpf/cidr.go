package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// CIDRAction is what the program does with a source in a CIDR list (enum
// xgate_cidr_action).
type CIDRAction uint32

const (
	// CIDRNeverBlock: the source's datagrams skip the blocklist and the
	// token bucket, and Block refuses the address (ErrNeverBlock), so
	// spoofed floods cannot get a partner network blocked.
	CIDRNeverBlock = CIDRAction(XdpXgateCidrActionXGATE_CIDR_NEVER_BLOCK)
	// CIDRDrop: the source's datagrams to our ports are dropped in XDP
	// (reason cidr_drop).
	CIDRDrop = CIDRAction(XdpXgateCidrActionXGATE_CIDR_DROP)
)

func (a CIDRAction) String() string {
	switch a {
	case CIDRNeverBlock:
		return "never_block"
	case CIDRDrop:
		return "drop"
	}
	return fmt.Sprintf("cidr_action(%d)", uint32(a))
}

// MaxCIDRLists is how many CIDR lists the program counts (list ids 0..63).
const MaxCIDRLists = 64

// DefaultCIDRSize is the default capacity of the CIDR trie (prefixes over
// all lists); Options.CIDRSize changes it.
const DefaultCIDRSize = 16384

// CIDRList is a named set of networks with one action.
type CIDRList struct {
	Name     string
	Action   CIDRAction
	Prefixes []netip.Prefix
}

// ErrNeverBlock is returned by Block for an address in a never-block list.
var ErrNeverBlock = errors.New("address is in a never_block list")

// cidrKey is the trie key of p: IPv4 as v4-mapped IPv6, as the program
// builds the source key.
func cidrKey(p netip.Prefix) (XdpXgateCidrKey, error) {
	if !p.IsValid() {
		return XdpXgateCidrKey{}, fmt.Errorf("invalid prefix %v", p)
	}
	p = p.Masked()
	k := XdpXgateCidrKey{Prefixlen: uint32(p.Bits()), Addr: p.Addr().WithZone("").As16()}
	if p.Addr().Is4() {
		k.Prefixlen += 96
	}
	return k, nil
}

// SetCIDRLists makes lists the program's CIDR lists, replacing the ones
// before: list i gets id i (CIDRHits reports by it). New entries are
// written before stale ones are removed, so a prefix in both the old and
// the new lists never lapses. A prefix may be in one list only.
func (x *XDP) SetCIDRLists(lists []CIDRList) error {
	if len(lists) > MaxCIDRLists {
		return fmt.Errorf("set cidr lists: %d lists: at most %d", len(lists), MaxCIDRLists)
	}
	want := map[XdpXgateCidrKey]XdpXgateCidrValue{}
	owner := map[XdpXgateCidrKey]string{}
	for i, l := range lists {
		if l.Action != CIDRNeverBlock && l.Action != CIDRDrop {
			return fmt.Errorf("set cidr lists: list %q: unknown action %d", l.Name, uint32(l.Action))
		}
		for _, p := range l.Prefixes {
			k, err := cidrKey(p)
			if err != nil {
				return fmt.Errorf("set cidr lists: list %q: %w", l.Name, err)
			}
			if o, dup := owner[k]; dup && o != l.Name {
				return fmt.Errorf("set cidr lists: %v is in lists %q and %q", p.Masked(), o, l.Name)
			}
			owner[k] = l.Name
			want[k] = XdpXgateCidrValue{List: uint32(i), Action: uint32(l.Action)}
		}
	}
	if max := x.objs.XgateCidrs.MaxEntries(); uint32(len(want)) > max {
		return fmt.Errorf("set cidr lists: %d prefixes: the trie holds %d (xdp cidr size)", len(want), max)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for k, v := range want {
		if err := x.objs.XgateCidrs.Put(k, v); err != nil {
			return fmt.Errorf("set cidr lists: %w", err)
		}
	}
	var stale []XdpXgateCidrKey
	var k XdpXgateCidrKey
	var v XdpXgateCidrValue
	it := x.objs.XgateCidrs.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("set cidr lists: %w", err)
	}
	for _, k := range stale {
		if err := x.objs.XgateCidrs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("set cidr lists: %w", err)
		}
	}
	x.cidrs = len(want) > 0
	raw, err := x.readConfigLocked()
	if err != nil {
		return fmt.Errorf("set cidr lists: %w", err)
	}
	if err := x.putConfig(raw); err != nil {
		return fmt.Errorf("set cidr lists: %w", err)
	}
	return nil
}

// LookupCIDR finds addr's longest matching prefix in the CIDR lists: the
// list id and its action; ok is false when no list holds it.
func (x *XDP) LookupCIDR(addr netip.Addr) (list int, action CIDRAction, ok bool, err error) {
	if !addr.IsValid() {
		return 0, 0, false, errors.New("lookup cidr: invalid address")
	}
	k := XdpXgateCidrKey{Prefixlen: 128, Addr: addr.WithZone("").As16()}
	var v XdpXgateCidrValue
	switch err := x.objs.XgateCidrs.Lookup(k, &v); {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return 0, 0, false, nil
	case err != nil:
		return 0, 0, false, fmt.Errorf("lookup cidr %v: %w", addr, err)
	}
	return int(v.List), CIDRAction(v.Action), true, nil
}

// CIDRHits reads the packets (and bytes) per list id that matched a CIDR
// list, summed over CPUs.
func (x *XDP) CIDRHits() ([MaxCIDRLists]Counter, error) {
	var out [MaxCIDRLists]Counter
	var perCPU []XdpXgateCounter
	for i := uint32(0); i < MaxCIDRLists; i++ {
		if err := x.objs.XgateCidrHits.Lookup(i, &perCPU); err != nil {
			return out, fmt.Errorf("read cidr hits: %w", err)
		}
		for _, v := range perCPU {
			out[i].Packets += v.Packets
			out[i].Bytes += v.Bytes
		}
	}
	return out, nil
}

// MaxGroups is how many multicast groups SetGroups takes (XGATE_MAX_GROUPS).
const MaxGroups = 64

// SetGroups makes groups the multicast groups the program serves: a
// datagram to a listened port and to a multicast address not among them
// passes to the stack as group_not_joined (not for us). With none, every
// multicast datagram is not for us.
func (x *XDP) SetGroups(groups []netip.Addr) error {
	if len(groups) > MaxGroups {
		return fmt.Errorf("set groups: %d groups: at most %d", len(groups), MaxGroups)
	}
	want := map[XdpXgateSrcKey]bool{}
	for _, g := range groups {
		if !g.IsMulticast() {
			return fmt.Errorf("set groups: %v is not a multicast address", g)
		}
		k, err := srcKey(g) // v4-mapped, as the program keys a destination group
		if err != nil {
			return fmt.Errorf("set groups: %w", err)
		}
		want[k] = true
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	m := x.objs.XgateGroups
	for k := range want {
		if err := m.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("set groups: %w", err)
		}
	}
	var k XdpXgateSrcKey
	var v uint8
	var stale []XdpXgateSrcKey
	for it := m.Iterate(); it.Next(&k, &v); {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil {
			return fmt.Errorf("set groups: %w", err)
		}
	}
	return nil
}
