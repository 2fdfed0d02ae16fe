package gateway

import (
	"fmt"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"
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
