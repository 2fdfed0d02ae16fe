package gateway

import (
	"errors"
	"fmt"
	"strings"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/vishvananda/netlink"

	"github.com/xgate/xgate/bpf"
)

// plan is the topology the receive path is laid out on.
type plan struct {
	topo *host.Topology
	cpus []int // workers.cpus; nil: every online CPU
}

// topology reads the NUMA nodes and the interface's queue → CPU map. An
// interface that sysfs does not show (a veth inside a network namespace:
// /sys is the root namespace's) falls back to queue i → online CPU i mod n.
func (g *Gateway) topology(cfg *config.Config) (*plan, error) {
	t, err := host.ReadTopology(g.opts.SysRoot, cfg.Interface)
	if err != nil && cfg.Interface != "" {
		t, err = host.ReadTopology(g.opts.SysRoot, "")
		if err == nil {
			t.Notes = append(t.Notes, fmt.Sprintf("interface %s not in sysfs here: queue i is served by online CPU i mod %d", cfg.Interface, len(t.Online)))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	p := &plan{topo: t}
	cpus, err := host.ParseCPUList(cfg.Workers.CPUs)
	if err != nil {
		return nil, fmt.Errorf("workers.cpus: %w", err)
	}
	if len(cpus) == 0 {
		// The CPUs the process was given (taskset, systemd CPUAffinity=,
		// a container's cpuset) are the default: never a worker on a CPU
		// the operator kept from us.
		if own, err := host.ProcessCPUs(); err == nil && len(own) > 0 && len(own) < len(t.Online) {
			cpus = own
			t.Notes = append(t.Notes, "workers on the process's CPUs "+host.FormatCPUList(own)+" (its affinity), not every online CPU")
		}
	}
	if err := p.restrict(cpus); err != nil {
		return nil, err
	}
	if err := host.AllowedCPUs(cpus); err != nil {
		return nil, err
	}
	for _, n := range t.Notes {
		g.log.Info("topology", "note", n)
	}
	return p, nil
}

// restrict confines the workers to cpus (workers.cpus; nil: no limit):
// host.Topology.Restrict.
func (p *plan) restrict(cpus []int) error {
	if err := p.topo.Restrict(cpus); err != nil {
		return err
	}
	if len(cpus) > 0 {
		p.cpus = cpus
	}
	return nil
}

// nodeCPUs returns the online CPUs of each NUMA node, indexed by node ID.
func (p *plan) nodeCPUs() [][]int { return p.topo.NodeCPUs() }

// queueCPU returns the CPU that serves RX queue q.
func (p *plan) queueCPU(q int) int { return p.topo.QueueCPU(q, p.cpus) }

// pathProblems checks what a receive path needs; it returns the fatal
// problems in words the operator can act on.
func pathProblems(cfg *config.Config, path config.Mode) []string {
	if path == config.ModePlain {
		return nil
	}
	need := NeedsFor(cfg, false)
	if path == config.ModeSocket {
		need.NetRaw, need.UMEMBytes = false, 0
	}
	var out []string
	for _, p := range host.FatalProblems(host.CheckPrivileges(need)) {
		if p.What == "bpffs" && host.WillMountBPFFS(cfg.Pin.Path) {
			continue // New mounts it before loading anything
		}
		out = append(out, p.Msg)
	}
	if len(out) > 0 {
		return out
	}
	if err := features.HaveProgramType(ebpf.XDP); err != nil {
		out = append(out, fmt.Sprintf("the kernel cannot run XDP programs: %v", err))
	}
	// The socket path needs no sk_reuseport program: it steers by NUMA
	// node with one where the kernel allows it, else the kernel's flow
	// hash picks the socket (openSockets).
	if path == config.ModeAFXDP {
		if err := features.HaveMapType(ebpf.XSKMap); err != nil {
			out = append(out, fmt.Sprintf("the kernel has no XSKMAP (AF_XDP): %v", err))
		}
	}
	return out
}

// CheckSetup is `xgate validate --host`: the interface exists here, and
// the privileges and kernel features of the configured mode are in place.
// It returns the problems that would stop a run, and notes on what the
// run would do.
func CheckSetup(cfg *config.Config) (problems, notes []string) {
	if cfg.Interface != "" {
		if _, err := netlink.LinkByName(cfg.Interface); err != nil {
			problems = append(problems, fmt.Sprintf("interface %q: %v", cfg.Interface, err))
		}
	}
	path, why, err := choosePath(cfg)
	if err != nil {
		return append(problems, err.Error()), notes
	}
	// The feature switches and the kernel's refusals that mode auto would
	// meet before touching the interface (choosePath fails the strict
	// modes on them).
	var down []string
	if path != config.ModePlain {
		if err := probeXDPLink(); err != nil {
			down = append(down, path.String()+" refused: "+err.Error())
			path = config.ModePlain
		}
	}
	if path == config.ModeAFXDP && bpf.ForcedOff(bpf.FeatAFXDP) {
		down = append(down, path.String()+" refused: "+bpf.ForcedErr(bpf.FeatAFXDP).Error())
		path = config.ModeSocket
	}
	if len(down) > 0 {
		why += "; stepped down: " + strings.Join(down, "; ")
	}
	notes = append(notes, "receive path: "+path.String()+" ("+why+")")
	if path != config.ModePlain && bpf.ForcedOff(bpf.FeatXDPNative) {
		notes = append(notes, "XDP attaches in generic mode: "+bpf.ForcedErr(bpf.FeatXDPNative).Error())
	}
	return problems, notes
}

var errNoPath = errors.New("no receive path possible")

// NeedsFor returns what the configured mode needs. For auto it returns
// the needs of afxdp, the first choice; the caller falls back when
// host.CheckPrivileges reports a problem. UMEMBytes counts one socket per
// configured queue (at least one): with queues: 0 the caller should scale
// it by the interface's queue count.
func NeedsFor(c *config.Config, probes bool) host.Needs {
	n := host.Needs{BPF: true, NetAdmin: true, Probes: probes, PinPath: c.Pin.Path}
	if c.Mode == config.ModeAFXDP || c.Mode == config.ModeAuto {
		n.NetRaw = true
		n.UMEMBytes = uint64(c.AFXDP.Frames) * uint64(c.AFXDP.FrameSize) * uint64(max(c.Queues, 1))
	}
	return n
}
