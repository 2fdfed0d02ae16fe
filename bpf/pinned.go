package bpf

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// Pinned are the XDP program's counters, cost and blocklist maps opened
// read-only from their pins (LoadXDP with PinPath and pin.keep), for
// reading them while no gateway runs: `xgate stats --pins`. The counts
// are those of the maps' whole life, across gateway restarts.
type Pinned struct {
	Dir       string
	counters  *ebpf.Map
	cost      *ebpf.Map
	blocklist *ebpf.Map
}

// OpenPinned opens dir/xgate_counters, dir/xgate_cost_ns and
// dir/xgate_blocklist read-only. The error names the missing pin.
func OpenPinned(dir string) (*Pinned, error) {
	p := &Pinned{Dir: dir}
	open := func(name string) (*ebpf.Map, error) {
		path := filepath.Join(dir, name)
		m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", path, err)
		}
		return m, nil
	}
	var err error
	if p.counters, err = open(XdpMapXgateCounters); err != nil {
		return nil, err
	}
	if p.cost, err = open(XdpMapXgateCostNs); err != nil {
		_ = p.Close()
		return nil, err
	}
	if p.blocklist, err = open(XdpMapXgateBlocklist); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// ReadCounters reads and sums the per-CPU counters.
func (p *Pinned) ReadCounters() (Counters, error) { return readCounters(p.counters) }

// ReadCost reads and sums the per-CPU cost samples.
func (p *Pinned) ReadCost() (Cost, error) { return readCost(p.cost) }

// ListBlocked reads the blocklist, expired entries included (marked).
func (p *Pinned) ListBlocked() ([]Blocked, error) { return listBlocked(p.blocklist) }

// Close releases the maps; the pins stay.
func (p *Pinned) Close() error {
	var errs []error
	for _, m := range []*ebpf.Map{p.counters, p.cost, p.blocklist} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
