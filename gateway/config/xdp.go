package config

import (
	"net/netip"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine/lists"
)

// The configuration as the XDP program takes it (as EngineConfig is the
// configuration as the engine takes it).

// CIDRLists are the XDP program's CIDR lists of c: xdp.never_block
// (list 0), xdp.drop (list 1), then the lists of xdp.never_block_lists and
// xdp.drop_lists, each under its own name (so counted apart). data gives a
// list's contents (nil: the config's own, as loaded). A network already in
// an earlier list of the same action is left out of the later one: the
// trie holds a prefix once.
func (c *Config) CIDRLists(data func(name string) *lists.ListData) []bpf.CIDRList {
	out := []bpf.CIDRList{
		{Name: "never_block", Action: bpf.CIDRNeverBlock, Prefixes: c.XDP.NeverBlock},
		{Name: "drop", Action: bpf.CIDRDrop, Prefixes: c.XDP.Drop},
	}
	if data == nil {
		data = func(name string) *lists.ListData {
			if l := c.ListByName(name); l != nil {
				return l.Data
			}
			return nil
		}
	}
	seen := map[netip.Prefix]bpf.CIDRAction{}
	for _, l := range out {
		for _, p := range l.Prefixes {
			seen[p] = l.Action
		}
	}
	add := func(names []string, action bpf.CIDRAction) {
		for _, name := range names {
			l := bpf.CIDRList{Name: name, Action: action}
			if d := data(name); d != nil {
				for _, p := range d.Prefixes() {
					if a, ok := seen[p]; ok && a == action {
						continue
					}
					seen[p] = action
					l.Prefixes = append(l.Prefixes, p)
				}
			}
			out = append(out, l)
		}
	}
	add(c.XDP.NeverBlockLists, bpf.CIDRNeverBlock)
	add(c.XDP.DropLists, bpf.CIDRDrop)
	return out
}

// XDPConfig is the XDP program's run-time policy for the receive path
// path (ModeAFXDP redirects survivors to the AF_XDP sockets, the others
// pass them to the stack).
func (c *Config) XDPConfig(path Mode) bpf.Config {
	mode := bpf.DeliverStack
	if path == ModeAFXDP {
		mode = bpf.DeliverXSK
	}
	costN := uint32(bpf.CostSampleOff)
	if c.XDP.CostSample > 0 {
		costN = uint32(c.XDP.CostSample)
	}
	// The socket path serves IPv6 only when its sockets do (bound to an
	// IPv6 address, "::" included); AF_XDP workers parse both families.
	// The address (checked: "" or an IP) is the program's to check on
	// every path: a datagram to another address passes on as
	// not_our_address ("" and unspecified: any). On the afxdp path nothing
	// else would; on the socket path the sockets' bind would leave it to
	// the stack, but as a survivor of XDP that no worker decides. The
	// kfree_skb probe gets the same address (gateway setupProbes), so the
	// stack's drop of such a datagram is not counted again as a kernel
	// drop. The plain path loads no program.
	addr, err := netip.ParseAddr(c.Listen.Address)
	noIPv6 := false
	if path != ModeAFXDP {
		noIPv6 = err != nil || !addr.Is6() || addr.Is4In6()
	}
	// A bucket without a burst holds one second's worth, as documented
	// (at least one packet).
	rate := c.XDP.RateLimit.PerSecond()
	burst := c.XDP.RateLimit.Burst
	if burst == 0 && rate > 0 {
		burst = max(rate, 1)
	}
	return bpf.Config{Deliver: mode, BucketRate: uint64(rate), BucketBurst: uint64(burst),
		PayloadCheck: c.XDP.PayloadCheck, CostSampleN: costN, VLANs: c.Listen.VLANs, AnyVLAN: c.Listen.AnyVLAN,
		NoIPv6: noIPv6, Address: addr}
}
