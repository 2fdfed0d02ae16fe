package bpf

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// MaxNUMANodes is how many NUMA nodes the sk_reuseport layout has room for.
const MaxNUMANodes = len(ReuseportXgateRpConfig{}.Count)

// ReuseportOptions for NewReuseport.
type ReuseportOptions struct {
	// PinPath pins the maps by name under this bpffs directory; empty
	// means no pinning.
	PinPath string
	// Nodes is the number of NUMA nodes to lay out; 0 means the nodes
	// this host has (/sys/devices/system/node/possible).
	Nodes int
	// PerNode is the number of socket slots per node; 0 means 64.
	PerNode int
}

// Reuseport is the loaded sk_reuseport program and its maps.
//
// Layout of the REUSEPORT_SOCKARRAY: node n owns slots
// [n*PerNode, (n+1)*PerNode); the first count[n] of them hold the node's
// sockets and the flow hash picks one (slot n*PerNode + hash % count[n]).
// The counts live in the xgate_rp_cfg map, written by SetNodeSockets.
type Reuseport struct {
	objs    reuseportObjects
	pinPath string
	nodes   int
	perNode int

	mu  sync.Mutex // serialises SetNodeSockets (read-modify-write of cfg)
	cfg ReuseportXgateRpConfig
}

type reuseportObjects struct {
	ReuseportPrograms
	ReuseportMaps
}

// NewReuseport checks privileges and kernel features and loads the
// sk_reuseport program. Attach it with AttachTo on a socket of the group.
func NewReuseport(opts ReuseportOptions) (*Reuseport, error) {
	if err := checkCaps(false); err != nil {
		return nil, fmt.Errorf("load reuseport: %w", err)
	}
	if err := checkFeatures(reuseportRequirements); err != nil {
		return nil, fmt.Errorf("load reuseport: %w", err)
	}
	nodes, perNode := opts.Nodes, opts.PerNode
	if nodes == 0 {
		n, err := possibleNUMANodes()
		if err != nil {
			return nil, fmt.Errorf("load reuseport: %w", err)
		}
		nodes = min(n, MaxNUMANodes)
	}
	if perNode == 0 {
		perNode = 64
	}
	if nodes < 1 || nodes > MaxNUMANodes || perNode < 1 || perNode > 1<<16 {
		return nil, fmt.Errorf("load reuseport: %d nodes x %d slots: need 1..%d nodes and 1..65536 slots", nodes, perNode, MaxNUMANodes)
	}

	spec, err := LoadReuseport()
	if err != nil {
		return nil, err
	}
	spec.Maps[ReuseportMapXgateRpSocks].MaxEntries = uint32(nodes * perNode)
	if err := preparePins(spec.Maps, opts.PinPath); err != nil {
		return nil, fmt.Errorf("load reuseport: %w", err)
	}
	r := &Reuseport{pinPath: opts.PinPath, nodes: nodes, perNode: perNode}
	err = spec.LoadAndAssign(&r.objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: opts.PinPath},
	})
	if err != nil {
		return nil, explainLoad("reuseport", err)
	}
	// Start empty: every datagram goes to the kernel's choice until
	// SetNodeSockets places sockets (a reused pinned map is reset too).
	r.cfg.PerNode = uint32(perNode)
	if err := r.objs.XgateRpCfg.Put(uint32(0), r.cfg); err != nil {
		r.Close()
		return nil, fmt.Errorf("load reuseport: write config: %w", err)
	}
	return r, nil
}

// possibleNUMANodes parses /sys/devices/system/node/possible ("0", "0-1").
func possibleNUMANodes() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/node/possible")
	if errors.Is(err, os.ErrNotExist) {
		return 1, nil // kernel without NUMA: one node
	}
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	last := s[strings.LastIndexAny(s, "-,")+1:]
	n, err := strconv.Atoi(last)
	if err != nil {
		return 0, fmt.Errorf("parse NUMA nodes %q: %w", s, err)
	}
	return n + 1, nil
}

// Program is the sk_reuseport program.
func (r *Reuseport) Program() *ebpf.Program { return r.objs.XgateReuseport }

// Nodes and PerNode describe the slot layout.
func (r *Reuseport) Nodes() int   { return r.nodes }
func (r *Reuseport) PerNode() int { return r.perNode }

// AttachTo attaches the program to the SO_REUSEPORT group of the socket fd
// (SO_ATTACH_REUSEPORT_EBPF): it then steers for every socket of the group.
// The group outlives the attachment only as long as one of its sockets.
func (r *Reuseport) AttachTo(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, r.objs.XgateReuseport.FD()); err != nil {
		return fmt.Errorf("attach reuseport program to fd %d: %w", fd, err)
	}
	return nil
}

// SetNodeSockets makes fds the sockets of NUMA node node, in slot order
// (nil empties the node). Each fd must be a UDP socket bound with
// SO_REUSEPORT in the group the program is attached to. The sockarray
// holds its own reference: closing an fd empties its slot.
//
// Safe against concurrent traffic: growing places sockets before raising
// the count, shrinking lowers the count before emptying slots.
func (r *Reuseport) SetNodeSockets(node int, fds []int) error {
	if node < 0 || node >= r.nodes {
		return fmt.Errorf("set node sockets: node %d out of 0..%d", node, r.nodes-1)
	}
	if len(fds) > r.perNode {
		return fmt.Errorf("set node sockets: %d sockets for node %d, %d slots per node", len(fds), node, r.perNode)
	}
	r.mu.Lock()
	defer r.mu.Unlock()

	base := uint32(node * r.perNode)
	old := int(r.cfg.Count[node])
	socks := r.objs.XgateRpSocks

	if len(fds) < old {
		r.cfg.Count[node] = uint32(len(fds))
		if err := r.objs.XgateRpCfg.Put(uint32(0), r.cfg); err != nil {
			return fmt.Errorf("set node sockets: write config: %w", err)
		}
	}
	for i, fd := range fds {
		if err := socks.Put(base+uint32(i), uint64(fd)); err != nil {
			return fmt.Errorf("set node sockets: node %d slot %d fd %d: %w", node, i, fd, err)
		}
	}
	for i := len(fds); i < old; i++ {
		if err := socks.Delete(base + uint32(i)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("set node sockets: empty node %d slot %d: %w", node, i, err)
		}
	}
	if len(fds) > old {
		r.cfg.Count[node] = uint32(len(fds))
		if err := r.objs.XgateRpCfg.Put(uint32(0), r.cfg); err != nil {
			return fmt.Errorf("set node sockets: write config: %w", err)
		}
	}
	return nil
}

// RpCounters are the sk_reuseport counters summed over CPUs, by RpReason.
type RpCounters [RpReasonMax]Counter

// ReadCounters reads and sums the per-CPU counters of the program.
func (r *Reuseport) ReadCounters() (RpCounters, error) {
	var out RpCounters
	var perCPU []ReuseportXgateCounter
	for k := RpReason(0); k < RpReasonMax; k++ {
		if err := r.objs.XgateRpStats.Lookup(uint32(k), &perCPU); err != nil {
			return out, fmt.Errorf("read reuseport counter %v: %w", k, err)
		}
		for _, v := range perCPU {
			out[k].Packets += v.Packets
			out[k].Bytes += v.Bytes
		}
	}
	return out, nil
}

// Close releases the program and map file descriptors. Pins stay.
func (r *Reuseport) Close() error {
	o := &r.objs
	return closeAll(o.XgateReuseport, o.XgateRpCfg, o.XgateRpSocks, o.XgateRpStats)
}

// Unpin removes the pins of the maps (and the pin directory if empty).
func (r *Reuseport) Unpin() error {
	o := &r.objs
	return unpinAll(r.pinPath, o.XgateRpCfg, o.XgateRpSocks, o.XgateRpStats)
}
