package gateway

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/xgate/xgate/bpf"
)

// PinSnapshot is the XDP part of a snapshot, read from the pinned maps
// (pin.keep) while no gateway runs: `xgate stats --pins DIR`. Unlike a
// gateway's Stats, the counts cover the maps' whole life, across restarts
// that reused the pins.
type PinSnapshot struct {
	Time time.Time `json:"time"`
	Pins string    `json:"pins"`
	// Seen = Dropped + NotForUs + Survivors: every packet the program saw.
	Seen      uint64 `json:"seen"`
	Dropped   uint64 `json:"xdp_dropped"`
	NotForUs  uint64 `json:"not_for_us"`
	Survivors uint64 `json:"survivors"` // passed on to the sockets or AF_XDP
	// Packets by terminal reason and events by kind (bpf.Reason names);
	// zero entries left out.
	Packets   map[string]PinCount `json:"packets"`
	Events    map[string]uint64   `json:"events"`
	Cost      *PinCost            `json:"cost,omitempty"` // nil without samples
	Blocklist struct {
		Live    int `json:"live"`
		Expired int `json:"expired"`
	} `json:"blocklist"`
}

// PinCount is packets and bytes of one reason.
type PinCount struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// PinCost is the sampled run time of the XDP program.
type PinCost struct {
	Samples  uint64    `json:"samples"`
	MeanNs   uint64    `json:"mean_ns"`
	Quantile Quantiles `json:"quantiles"`
}

// ReadPins reads the pinned XDP maps under dir.
func ReadPins(dir string) (*PinSnapshot, error) {
	p, err := bpf.OpenPinned(dir)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	c, err := p.ReadCounters()
	if err != nil {
		return nil, err
	}
	cost, err := p.ReadCost()
	if err != nil {
		return nil, err
	}
	bl, err := p.ListBlocked()
	if err != nil {
		return nil, err
	}
	s := pinSnapshot(dir, c, cost, bl)
	return s, nil
}

func pinSnapshot(dir string, c bpf.Counters, cost bpf.Cost, bl []bpf.Blocked) *PinSnapshot {
	s := &PinSnapshot{Time: time.Now().UTC(), Pins: dir, Packets: map[string]PinCount{}, Events: map[string]uint64{}}
	for r := bpf.Reason(0); r < bpf.ReasonMax; r++ {
		n := c[r].Packets
		if !r.Terminal() {
			if n != 0 {
				s.Events[r.String()] = n
			}
			continue
		}
		if n != 0 {
			s.Packets[r.String()] = PinCount{n, c[r].Bytes}
		}
	}
	split := c.Split()
	s.Seen, s.Dropped, s.NotForUs, s.Survivors = split.Seen, split.Dropped, split.NotForUs, split.Survivors
	if cost.Samples > 0 {
		n, _, cum := log2Histogram(cost.Hist[:], 1e-9)
		bounds := make([]float64, 0, len(cum))
		for b := range cum {
			bounds = append(bounds, b)
		}
		sort.Float64s(bounds)
		s.Cost = &PinCost{Samples: cost.Samples, MeanNs: uint64(cost.Mean()), Quantile: Quantiles{Count: n,
			P50: quantile(0.5, bounds, cum, n), P99: quantile(0.99, bounds, cum, n), P999: quantile(0.999, bounds, cum, n)}}
	}
	for _, b := range bl {
		if b.Expired {
			s.Blocklist.Expired++
		} else {
			s.Blocklist.Live++
		}
	}
	return s
}

// WriteText prints the pinned snapshot as plain text.
func (s *PinSnapshot) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "xgate XDP maps pinned at %s (no gateway: counts since the maps were created)\n", s.Pins)
	fmt.Fprintf(&b, "packets: seen %d = xdp_dropped %d + not_for_us %d + survivors %d\n", s.Seen, s.Dropped, s.NotForUs, s.Survivors)
	names := func(m map[string]PinCount) []string {
		var n []string
		for k := range m {
			n = append(n, k)
		}
		sort.Strings(n)
		return n
	}
	if len(s.Packets) > 0 {
		b.WriteString("by reason:\n")
		for _, n := range names(s.Packets) {
			fmt.Fprintf(&b, "  %-22s %12d packets %14d bytes\n", n, s.Packets[n].Packets, s.Packets[n].Bytes)
		}
	}
	if len(s.Events) > 0 {
		b.WriteString("events:\n")
		var ev []string
		for k := range s.Events {
			ev = append(ev, k)
		}
		sort.Strings(ev)
		for _, n := range ev {
			fmt.Fprintf(&b, "  %-22s %12d\n", n, s.Events[n])
		}
	}
	if c := s.Cost; c != nil {
		fmt.Fprintf(&b, "program cost: %d samples, mean %dns, p50 %s p99 %s p999 %s\n", c.Samples, c.MeanNs,
			fmtSeconds(c.Quantile.P50), fmtSeconds(c.Quantile.P99), fmtSeconds(c.Quantile.P999))
	} else {
		b.WriteString("program cost: no samples\n")
	}
	fmt.Fprintf(&b, "blocklist: %d live, %d expired\n", s.Blocklist.Live, s.Blocklist.Expired)
	_, err := io.WriteString(w, b.String())
	return err
}
