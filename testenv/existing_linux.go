//go:build linux

package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Existing describes the interface link inside the named network
// namespace ns ("" = the caller's) as a Host, for tools that send from a
// namespace they did not build (`xgate load --netns --iface`). Addr and
// Prefix are the link's first IPv4 address. Nothing is created; Release
// closes the namespace handle.
func Existing(ns, link string) (*Host, error) {
	var h *Host
	var err error
	var handle netns.NsHandle
	if ns == "" {
		handle, err = netns.Get()
	} else {
		handle, err = netns.GetFromName(ns)
	}
	if err != nil {
		return nil, fmt.Errorf("namespace %q: %w", ns, err)
	}
	h = &Host{NS: ns, Link: link, ns: handle, root: ns == ""}
	nh, err := netlink.NewHandleAt(handle)
	if err != nil {
		handle.Close()
		return nil, fmt.Errorf("netlink handle %q: %w", ns, err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(link)
	if err != nil {
		handle.Close()
		return nil, fmt.Errorf("%s in namespace %q: %w", link, ns, err)
	}
	h.Ifindex = l.Attrs().Index
	h.MAC = l.Attrs().HardwareAddr
	// The active RX queues (ethtool -l), not the device's maximum; a
	// driver without ethtool channels gets 1.
	if n, err := h.ActiveRxQueues(); err == nil && n > 0 {
		h.Queues = n
	} else {
		h.Queues = 1
	}
	addrs, err := nh.AddrList(l, unix.AF_INET)
	if err != nil || len(addrs) == 0 {
		handle.Close()
		return nil, errors.Join(fmt.Errorf("%s in namespace %q has no IPv4 address", link, ns), err)
	}
	a, _ := netip.AddrFromSlice(addrs[0].IP.To4())
	ones, _ := addrs[0].Mask.Size()
	h.Addr, h.Prefix = a, netip.PrefixFrom(a, ones).Masked()
	return h, nil
}

// Release closes the namespace handle of a Host from Existing.
func (h *Host) Release() {
	if h.ns.IsOpen() {
		h.ns.Close()
		h.ns = netns.None()
	}
}

// NeighborMAC reads the link-layer address of addr from the host's
// neighbour table (entries that are reachable, stale, permanent, ...).
func (h *Host) NeighborMAC(addr netip.Addr) (net.HardwareAddr, error) {
	nh, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return nil, err
	}
	defer nh.Close()
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	ns, err := nh.NeighList(h.Ifindex, family)
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == addr && len(n.HardwareAddr) == 6 &&
			n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
			return n.HardwareAddr, nil
		}
	}
	return nil, fmt.Errorf("no neighbour entry for %s on %s (ping it first, or give --dst-mac)", addr, h.Link)
}
