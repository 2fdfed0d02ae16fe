package gateway

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/gateway/config"
)

// Multicast input (listen.groups).
//
// Socket and plain paths. The kernel hands a multicast datagram to every
// socket bound to its port that accepts the group — to each socket of an
// SO_REUSEPORT group, which balances only unicast — so joining a group on
// every socket would decide each datagram once per worker. Instead every
// socket of the group refuses groups it did not join itself
// (IP_MULTICAST_ALL / IPV6_MULTICAST_ALL off: also groups other programs
// on the host joined), and group j is joined on socket j mod n: each
// datagram reaches exactly one worker, and the groups spread over the
// workers (one group's traffic is one worker's).
//
// afxdp path. The XDP program matches datagrams by destination port,
// whatever the destination address, so a group's datagrams to a listened
// port are redirected like unicast ones. A join is still needed for them to
// arrive: the NIC filters multicast MAC addresses, and the switch forwards
// a group only to ports that answered IGMP/MLD. So the gateway holds the
// memberships on a socket of its own that is bound to no port
// (membershipFd), which never receives anything.

// groupIfindex returns the index of the interface groups are joined on: the
// configured one, or 0 (the kernel picks by route) without one.
func groupIfindex(cfg *config.Config) (int, error) {
	if cfg.Interface == "" {
		return 0, nil
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return 0, fmt.Errorf("listen.groups: interface %q: %w", cfg.Interface, err)
	}
	return ifi.Index, nil
}

// joinGroup joins group on interface ifindex for the socket fd.
func joinGroup(fd int, group netip.Addr, ifindex int) error {
	var err error
	if group.Is4() {
		mreq := &unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(ifindex)}
		err = unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq)
	} else {
		mreq := &unix.IPv6Mreq{Multiaddr: group.As16(), Interface: uint32(ifindex)}
		err = unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq)
	}
	if err != nil {
		return fmt.Errorf("join multicast group %v: %w", group, err)
	}
	return nil
}

// onlyJoined makes the socket fd receive only the groups joined on it.
func onlyJoined(fd int, v6 bool) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0); err != nil {
		return fmt.Errorf("IP_MULTICAST_ALL: %w", err)
	}
	if v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0); err != nil {
			return fmt.Errorf("IPV6_MULTICAST_ALL: %w", err)
		}
	}
	return nil
}

// joinSocketGroups joins the configured groups on the socket group
// (socket and plain paths): each group on one socket, round robin.
func (g *Gateway) joinSocketGroups(cfg *config.Config) error {
	groups := cfg.Listen.Groups
	if len(groups) == 0 || len(g.sockets) == 0 {
		return nil
	}
	ifindex, err := groupIfindex(cfg)
	if err != nil {
		return err
	}
	for _, s := range g.sockets {
		if err := onlyJoined(s.fd, s.addr.Addr().Is6()); err != nil {
			return fmt.Errorf("udp %s: %w", s.addr, err)
		}
	}
	for j, grp := range groups {
		s := g.sockets[j%len(g.sockets)]
		if err := joinGroup(s.fd, grp, ifindex); err != nil {
			return fmt.Errorf("udp %s: %w", s.addr, err)
		}
	}
	g.log.Info("multicast groups joined", "groups", groups, "interface", cfg.Interface, "sockets", min(len(groups), len(g.sockets)))
	return nil
}

// openMembership holds the configured groups' memberships on a socket
// bound to no port (afxdp path); it sets g.membershipFd.
func (g *Gateway) openMembership(cfg *config.Config) error {
	groups := cfg.Listen.Groups
	if len(groups) == 0 {
		return nil
	}
	ifindex, err := groupIfindex(cfg)
	if err != nil {
		return err
	}
	domain := unix.AF_INET
	for _, grp := range groups {
		if grp.Is6() {
			domain = unix.AF_INET6 // joins IPv4 groups too (IPPROTO_IP options)
		}
	}
	fd, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return fmt.Errorf("listen.groups: socket: %w", err)
	}
	for _, grp := range groups {
		if err := joinGroup(fd, grp, ifindex); err != nil {
			unix.Close(fd)
			return fmt.Errorf("listen.groups: %w", err)
		}
	}
	g.membershipFd = fd
	g.log.Info("multicast groups joined for the XDP path", "groups", groups, "interface", cfg.Interface)
	return nil
}

// closeMembership leaves the groups of the afxdp path (closing the socket
// does).
func (g *Gateway) closeMembership() error {
	if g.membershipFd <= 0 {
		return nil
	}
	err := unix.Close(g.membershipFd)
	g.membershipFd = 0
	return err
}
