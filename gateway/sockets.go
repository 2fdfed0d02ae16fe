package gateway

import (
	"fmt"
	"net/netip"

	"github.com/xgate/xgate/gateway/config"

	"github.com/cilium/ebpf"

	"github.com/xgate/xgate/bpf"
)

// openSockets opens the socket group of the socket and plain paths: one
// SO_REUSEPORT socket per worker CPU (workers.cpus). In socket mode on a
// host with several NUMA nodes the sk_reuseport program picks, for each
// datagram, a socket of the receiving CPU's node (by flow hash within the
// node; kernel's choice on a node without workers); on one node, and in
// plain mode, the kernel's own flow hash over the group does, which is the
// same choice without running a program per datagram (what the program
// costs: BENCHMARKS.md, "Why the defaults"). It returns the CPU of each
// socket's worker.
func (g *Gateway) openSockets(cfg *config.Config) ([]int, error) {
	topo, err := g.topology(cfg)
	if err != nil {
		return nil, err
	}
	addr := netip.IPv4Unspecified()
	if cfg.Listen.Address != "" {
		if addr, err = netip.ParseAddr(cfg.Listen.Address); err != nil {
			return nil, fmt.Errorf("listen.address %q: %w", cfg.Listen.Address, err)
		}
	}
	if len(cfg.Listen.Ports) != 1 {
		return nil, fmt.Errorf("socket and plain modes serve one port per group; %d ports configured (use afxdp mode for several)", len(cfg.Listen.Ports))
	}
	port := cfg.Listen.Ports[0]
	nodes := topo.nodeCPUs()
	perNode, withCPUs := 0, 0
	for _, cpus := range nodes {
		perNode = max(perNode, len(cpus))
		if len(cpus) > 0 {
			withCPUs++
		}
	}
	steer := g.path == config.ModeSocket && withCPUs > 1
	if steer {
		if perr := bpf.Probe(bpf.FeatReuseport); perr != nil {
			// The fallback: the kernel's flow hash picks the socket, on
			// any node; datagrams may cross nodes.
			g.log.Warn("no NUMA steering of the socket group: the kernel's flow hash picks the socket", "reason", perr)
			steer = false
		}
	}
	if steer {
		if g.reuse, err = bpf.NewReuseport(bpf.ReuseportOptions{PinPath: cfg.Pin.Path, Nodes: len(nodes), PerNode: perNode}); err != nil {
			return nil, err
		}
	}
	var cpus []int
	for node, nodeCPUs := range nodes {
		var fds []int
		for _, cpu := range nodeCPUs {
			s, err := openUDP(netip.AddrPortFrom(addr, port), true, cfg.Socket.RcvBuf, g.opts.RecvTimeout)
			if err != nil {
				return nil, err
			}
			g.sockets = append(g.sockets, s)
			cpus = append(cpus, cpu)
			fds = append(fds, s.fd)
			if g.reuse != nil && len(g.sockets) == 1 {
				// The program is the group's: attaching it to one socket
				// before the others join covers all of them.
				if err := g.reuse.AttachTo(s.fd); err != nil {
					return nil, err
				}
			}
		}
		if g.reuse != nil {
			if err := g.reuse.SetNodeSockets(node, fds); err != nil {
				return nil, err
			}
		}
	}
	if err := g.joinSocketGroups(cfg); err != nil {
		return nil, err
	}
	g.log.Info("socket group open", "path", g.path, "address", netip.AddrPortFrom(addr, port),
		"sockets", len(g.sockets), "numa_nodes", len(nodes), "rcvbuf", cfg.Socket.RcvBuf)
	return cpus, nil
}

// progName returns the name of a loaded BPF program.
func progName(id uint32) (string, error) {
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return "", err
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return "", err
	}
	return info.Name, nil
}
