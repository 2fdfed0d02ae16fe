package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway/metrics"
)

// PinSnapshot is the XDP part of a snapshot, read from the pinned maps:
// `xgate stats --pins DIR`, while a gateway runs or after it stopped with
// pin.keep. Unlike a gateway's Stats, the counts cover the maps' whole
// life, across restarts that reused the pins.
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

	cost bpf.Cost // as read, for the cost of an interval (WriteLive)
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
	s := &PinSnapshot{Time: time.Now().UTC(), Pins: dir, Packets: map[string]PinCount{}, Events: map[string]uint64{}, cost: cost}
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
	s.Cost = pinCost(cost)
	for _, b := range bl {
		if b.Expired {
			s.Blocklist.Expired++
		} else {
			s.Blocklist.Live++
		}
	}
	return s
}

// pinCost summarises cost samples; nil without any.
func pinCost(cost bpf.Cost) *PinCost {
	if cost.Samples == 0 {
		return nil
	}
	n, _, cum := metrics.Log2Histogram(cost.Hist[:], 1e-9)
	bounds := make([]float64, 0, len(cum))
	for b := range cum {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	return &PinCost{Samples: cost.Samples, MeanNs: uint64(cost.Mean()), Quantile: Quantiles{Count: n,
		P50: quantile(0.5, bounds, cum, n), P99: quantile(0.99, bounds, cum, n), P999: quantile(0.999, bounds, cum, n)}}
}

// costSince is the cost samples taken between prev and s; ok is false if
// the counters went backwards (the maps were created anew in between).
func (s *PinSnapshot) costSince(prev *PinSnapshot) (d bpf.Cost, ok bool) {
	if s.cost.Samples < prev.cost.Samples || s.cost.SumNs < prev.cost.SumNs {
		return d, false
	}
	d.Samples, d.SumNs = s.cost.Samples-prev.cost.Samples, s.cost.SumNs-prev.cost.SumNs
	for i := range d.Hist {
		if s.cost.Hist[i] < prev.cost.Hist[i] {
			return bpf.Cost{}, false
		}
		d.Hist[i] = s.cost.Hist[i] - prev.cost.Hist[i]
	}
	return d, true
}

// WriteText prints the pinned snapshot as plain text.
func (s *PinSnapshot) WriteText(w io.Writer) error { return s.WriteLive(w, nil, false) }

// WriteLive prints the pinned snapshot as plain text. With prev (an
// earlier reading of the same pins) it adds rates per second, from the
// difference of the two readings, and the program's cost over that
// interval; with color, packets dropped since prev are shown in bold red
// (ANSI). A counter that went backwards (the maps were created anew
// between the readings) gets no rate.
func (s *PinSnapshot) WriteLive(w io.Writer, prev *PinSnapshot, color bool) error {
	dt := 0.0
	if prev != nil {
		dt = s.Time.Sub(prev.Time).Seconds()
	}
	rate := rateText(dt)
	hi := func(line string, cur, old uint64) string { return boldRed(line, color && prev != nil && cur > old) }
	var b strings.Builder
	fmt.Fprintf(&b, "xgate XDP maps pinned at %s (read directly: counts since the maps were created)\n", s.Pins)
	fmt.Fprintf(&b, "packets: seen %d = xdp_dropped %d + not_for_us %d + survivors %d\n", s.Seen, s.Dropped, s.NotForUs, s.Survivors)
	if prev != nil && dt > 0 {
		b.WriteString("per second:\n")
		for _, t := range []struct {
			name      string
			cur, old  uint64
			highlight bool
		}{{"seen", s.Seen, prev.Seen, false}, {"xdp_dropped", s.Dropped, prev.Dropped, true},
			{"not_for_us", s.NotForUs, prev.NotForUs, false}, {"survivors", s.Survivors, prev.Survivors, false}} {
			line := fmt.Sprintf("  %-22s%s", t.name, rate(t.cur, t.old))
			if t.highlight {
				line = hi(line, t.cur, t.old)
			}
			b.WriteString(line + "\n")
		}
	}
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
			c := s.Packets[n]
			line := fmt.Sprintf("  %-22s %12d packets %14d bytes", n, c.Packets, c.Bytes)
			if prev != nil {
				old := prev.Packets[n].Packets
				line += rate(c.Packets, old)
				if r, ok := reasonNamed(n); ok && r.Fate() == bpf.FateDropped {
					line = hi(line, c.Packets, old)
				}
			}
			b.WriteString(line + "\n")
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
			line := fmt.Sprintf("  %-22s %12d", n, s.Events[n])
			if prev != nil {
				line += rate(s.Events[n], prev.Events[n])
			}
			b.WriteString(line + "\n")
		}
	}
	if c := s.Cost; c != nil {
		fmt.Fprintf(&b, "program cost: %d samples, mean %dns, p50 %s p99 %s p999 %s\n", c.Samples, c.MeanNs,
			fmtSeconds(c.Quantile.P50), fmtSeconds(c.Quantile.P99), fmtSeconds(c.Quantile.P999))
	} else {
		b.WriteString("program cost: no samples\n")
	}
	if prev != nil {
		if d, ok := s.costSince(prev); ok && d.Samples > 0 {
			c := pinCost(d)
			fmt.Fprintf(&b, "program cost since the last reading: %d samples, mean %dns, p50 %s p99 %s p999 %s\n",
				c.Samples, c.MeanNs, fmtSeconds(c.Quantile.P50), fmtSeconds(c.Quantile.P99), fmtSeconds(c.Quantile.P999))
		}
	}
	fmt.Fprintf(&b, "blocklist: %d live, %d expired\n", s.Blocklist.Live, s.Blocklist.Expired)
	_, err := io.WriteString(w, b.String())
	return err
}

// reasonNamed is the XDP reason called name.
func reasonNamed(name string) (bpf.Reason, bool) {
	for r := bpf.Reason(0); r < bpf.ReasonMax; r++ {
		if r.String() == name {
			return r, true
		}
	}
	return 0, false
}
