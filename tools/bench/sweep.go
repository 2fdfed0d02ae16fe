//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Defaults of SweepOptions.
const (
	// DefaultSweepSteps gives loads of 10 %, 20 %, …, 100 % of the max.
	DefaultSweepSteps = 10
	// DefaultSweepDuration is the measured send of each step (and of the
	// max-rate probe): with the 1 s warm-up a whole sweep takes ≈ 40 s.
	DefaultSweepDuration = 3 * time.Second
	// DefaultSweepWarmup is the one warm-up of a sweep, at max rate.
	DefaultSweepWarmup = time.Second
	// maxSweepSteps bounds Steps (each step is a phase of Duration).
	maxSweepSteps = 100
)

// SweepOptions shape a latency-vs-load sweep.
type SweepOptions struct {
	// Options are those of one run: Mode, Duration (of each step;
	// default DefaultSweepDuration), Warmup (once, before the probe;
	// default DefaultSweepWarmup), Sources, Events, Logger, Progress.
	// Rate, if set, is the 100 % load and there is no max-rate probe.
	Options
	// Steps is the number of loads, evenly spaced up to the max:
	// Steps 10 gives 10 %, 20 %, …, 100 %. Default DefaultSweepSteps.
	Steps int
}

// SweepPoint is one step of a sweep: the load and the run's report (its
// fields inline, with the keys of `xgate bench --json`).
type SweepPoint struct {
	// LoadPct is the step's share of the max rate in percent; 0 for the
	// max-rate probe.
	LoadPct float64 `json:"load_pct"`
	// TargetRate is the offered load asked of the generator, datagrams/s
	// (0: as fast as it can, the probe); OfferedRate what it achieved.
	TargetRate  float64 `json:"target_rate"`
	OfferedRate float64 `json:"offered_rate"`
	Report
}

// Sweep measures latency against offered load on one set of test hosts
// and one running target: a max-rate probe (skipped when o.Rate gives the
// max), then a fixed offered load at each step of SweepPlan. The first
// point is the probe (if any). On an error it returns the points so far.
func Sweep(ctx context.Context, o SweepOptions) ([]SweepPoint, error) {
	if o.Duration <= 0 {
		o.Duration = DefaultSweepDuration
	}
	if o.Warmup == 0 {
		o.Warmup = DefaultSweepWarmup
	}
	if o.Steps == 0 {
		o.Steps = DefaultSweepSteps
	}
	if _, err := SweepPlan(1, o.Steps); err != nil { // the steps, before building anything
		return nil, err
	}
	b, err := start(o.Options)
	if err != nil {
		return nil, err
	}
	pts, err := b.sweep(ctx, o.Steps)
	return pts, errors.Join(err, b.close())
}

func (b *runner) sweep(ctx context.Context, steps int) ([]SweepPoint, error) {
	// The warm-up runs at the rate of the probe (max, or the given one).
	if err := b.warmup(ctx); err != nil {
		return nil, err
	}
	var pts []SweepPoint
	maxRate := b.o.Rate
	if maxRate <= 0 {
		r, err := b.phase(ctx, "max", b.o.Duration, 0)
		if err != nil {
			return nil, fmt.Errorf("bench: sweep: max-rate probe: %w", err)
		}
		pts = append(pts, SweepPoint{OfferedRate: r.OfferedPPS, Report: r})
		// The max is what the target decided per second, not what was
		// offered: beyond it the rest is lost at a ring or socket.
		maxRate = r.EventsPerSec
	}
	plan, err := SweepPlan(maxRate, steps)
	if err != nil {
		return pts, fmt.Errorf("bench: sweep: %w", err)
	}
	for i, rate := range plan {
		if err := ctx.Err(); err != nil {
			return pts, err
		}
		pct := 100 * float64(i+1) / float64(len(plan))
		r, err := b.phase(ctx, fmt.Sprintf("%.0f%%", pct), b.o.Duration, rate)
		if err != nil {
			return pts, fmt.Errorf("bench: sweep at %.0f%% (%.0f/s): %w", pct, rate, err)
		}
		pts = append(pts, SweepPoint{LoadPct: pct, TargetRate: rate, OfferedRate: r.OfferedPPS, Report: r})
	}
	return pts, nil
}

// SweepPlan returns the offered loads of a sweep: steps rates evenly
// spaced up to maxRate, maxRate·1/steps … maxRate·steps/steps.
func SweepPlan(maxRate float64, steps int) ([]float64, error) {
	if steps < 1 || steps > maxSweepSteps {
		return nil, fmt.Errorf("%d steps: want 1..%d", steps, maxSweepSteps)
	}
	if !(maxRate >= 1) || maxRate > 1e9 { // also NaN
		return nil, fmt.Errorf("max rate %.3g/s: want 1..1e9 (did the probe decide anything?)", maxRate)
	}
	out := make([]float64, steps)
	for i := range out {
		out[i] = maxRate * float64(i+1) / float64(steps)
	}
	return out, nil
}

// WriteSweepTable prints one line per point: load, offered and achieved
// rates, latency quantiles, drops and unaccounted.
// sweepLabel names a point of a sweep: its load, or max for the probe.
func sweepLabel(p SweepPoint) string {
	if p.TargetRate == 0 {
		return "max"
	}
	return fmt.Sprintf("%.0f %%", p.LoadPct)
}

func WriteSweepTable(w io.Writer, pts []SweepPoint) {
	if len(pts) == 0 {
		return
	}
	table := [][]string{{"load", "target /s", "offered /s", "events/s", "p50", "p99", "p99.9", "drops", "unaccounted", "others", "wait"}}
	lat := func(v float64) string {
		if v == 0 {
			return "—"
		}
		return usec(v)
	}
	for _, p := range pts {
		load, target := fmt.Sprintf("%.0f %%", p.LoadPct), mega(p.TargetRate)
		if p.TargetRate == 0 {
			load, target = "max", "max"
		}
		drops := p.XDPDropped + p.SocketDropped + p.RingDropped
		table = append(table, []string{load, target, mega(p.OfferedRate), mega(p.EventsPerSec),
			lat(p.LatencyP50US), lat(p.LatencyP99US), lat(p.LatencyP999US), count(float64(drops)), count(float64(p.Unaccounted)),
			cpus(p.OtherCPU), pct(p.WorkerWait)})
	}
	writeColumns(w, table)
	fmt.Fprintf(w, "mode %s; offered: the generator's achieved rate; drops: xdp_dropped + socket_dropped + ring_dropped;\n"+
		"others: other processes' CPU during the step; wait: share of it the worker waited for its CPU\n", pts[0].Mode)
	if g := pts[0].Generator; g != "" {
		fmt.Fprintf(w, "generator %s", g)
		if c := pts[0].GeneratorCeilingPPS; c > 0 {
			fmt.Fprintf(w, ", %.3f M/s alone into XDP drop", c/1e6)
		}
		fmt.Fprintln(w)
	}
	for _, p := range pts {
		if p.GeneratorBound {
			fmt.Fprintf(w, "%s: generator-bound (within 10 %% of the generator's ceiling)\n", sweepLabel(p))
		}
	}
	for _, p := range pts {
		if !p.Complete {
			fmt.Fprintf(w, "%s at %.0f %%: the accounting did not catch up with sent within 1 s of the end of the send\n", p.Mode, p.LoadPct)
		}
	}
}

// writeColumns prints a table: the first column left-aligned, the others
// right-aligned, two spaces apart.
func writeColumns(w io.Writer, table [][]string) {
	var widths []int
	for _, l := range table {
		for i, c := range l {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, l := range table {
		var sb strings.Builder
		for i, c := range l {
			pad := widths[i] - len([]rune(c))
			if i == 0 {
				sb.WriteString(c + strings.Repeat(" ", pad))
			} else {
				sb.WriteString("  " + strings.Repeat(" ", pad) + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(sb.String(), " "))
	}
}
