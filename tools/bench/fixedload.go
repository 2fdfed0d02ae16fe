//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// FixedLoad is one offered load of a fixed-load comparison (`xgate bench
// --compare … --rate 20k,120k,max`) with every mode's report at it.
type FixedLoad struct {
	// Label is the load as given (20k, max); TargetRate the rate asked
	// of the generator, datagrams/s (0: as fast as it can).
	Label      string   `json:"load"`
	TargetRate float64  `json:"target_rate"`
	Reports    []Report `json:"reports"`
}

// ParseRate reads "max" (0) or a positive rate with an optional k or M
// suffix (500000, 500k, 1.5M), up to 1e9.
func ParseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "max") {
		return 0, nil
	}
	mult, num := 1.0, s
	switch {
	case strings.HasSuffix(num, "k"), strings.HasSuffix(num, "K"):
		mult, num = 1e3, num[:len(num)-1]
	case strings.HasSuffix(num, "M"), strings.HasSuffix(num, "m"):
		mult, num = 1e6, num[:len(num)-1]
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !(v > 0) || v*mult > 1e9 {
		return 0, fmt.Errorf("rate %q: want max or a number of datagrams/s up to 1e9 (500000, 500k, 1.5M)", s)
	}
	return v * mult, nil
}

// ParseRates reads a comma list of rates (ParseRate each): the loads of a
// fixed-load comparison, in the order given. A load given twice is an
// error (its rows would be indistinguishable).
func ParseRates(s string) ([]FixedLoad, error) {
	var loads []FixedLoad
	seen := map[float64]string{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			return nil, fmt.Errorf("rates %q: an empty entry", s)
		}
		r, err := ParseRate(f)
		if err != nil {
			return nil, err
		}
		if prev, ok := seen[r]; ok {
			return nil, fmt.Errorf("rates %q: %s and %s are the same load", s, prev, f)
		}
		seen[r] = f
		loads = append(loads, FixedLoad{Label: f, TargetRate: r})
	}
	return loads, nil
}

// CompareLoads runs each mode at each load: per mode one set of test
// hosts and one running target (and one generator ceiling), then, for
// each load in turn, a warm-up at that load (o.Warmup) and the measured
// window (o.Duration). It returns loads with their Reports filled in the
// order of modes; on an error, what was measured so far.
func CompareLoads(ctx context.Context, modes []string, loads []FixedLoad, o Options) ([]FixedLoad, error) {
	out := make([]FixedLoad, len(loads))
	for i, l := range loads {
		out[i] = FixedLoad{Label: l.Label, TargetRate: l.TargetRate}
	}
	for _, m := range modes {
		o.Mode = m
		b, err := start(o)
		if err != nil {
			return out, fmt.Errorf("%s: %w", m, err)
		}
		for i := range out {
			var r Report
			if err = b.warmupAt(ctx, out[i].TargetRate); err == nil {
				r, err = b.phase(ctx, "measure "+out[i].Label, b.o.Duration, out[i].TargetRate)
			}
			if err != nil {
				err = fmt.Errorf("%s at %s: %w", m, out[i].Label, err)
				return out, errors.Join(err, b.close())
			}
			out[i].Reports = append(out[i].Reports, r)
		}
		if err := b.close(); err != nil {
			return out, fmt.Errorf("%s: %w", m, err)
		}
	}
	return out, nil
}

// warmupAt runs b's warm-up (none if Warmup < 0) at rate.
func (b *runner) warmupAt(ctx context.Context, rate float64) error {
	if b.o.Warmup > 0 {
		if _, err := b.phase(ctx, "warmup", b.o.Warmup, rate); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// WriteLoadsTable prints a fixed-load comparison: a line per load and
// mode with the offered and decided rates, the receiver's CPU and the
// events per receiver CPU-second, its ratio against the first mode at the
// same load, and unaccounted (must be 0).
func WriteLoadsTable(w io.Writer, loads []FixedLoad) {
	table := [][]string{{"load", "mode", "offered /s", "events/s", "receiver CPU", "events / CPU-s", "× first", "unaccounted", ""}}
	for _, l := range loads {
		for i, r := range l.Reports {
			ratio := ""
			if i > 0 && l.Reports[0].EventsPerCPUS > 0 {
				ratio = fmt.Sprintf("%.2f×", r.EventsPerCPUS/l.Reports[0].EventsPerCPUS)
			}
			var notes []string
			if r.GeneratorBound {
				notes = append(notes, "generator-bound")
			}
			if !r.Complete && r.Sent > 0 {
				notes = append(notes, "incomplete")
			}
			table = append(table, []string{l.Label, r.Mode, mega(r.OfferedPPS), mega(r.EventsPerSec), secs(r.ReceiverCPUS),
				mega(r.EventsPerCPUS), ratio, strconv.FormatInt(r.Unaccounted, 10), strings.Join(notes, ", ")})
		}
	}
	writeColumns(w, table)
	fmt.Fprintln(w, "receiver CPU: the receiver's own process's CPU (a child of the bench; not the receiving host's kernel path, which runs on the sender's CPU), over each measured window")
}
