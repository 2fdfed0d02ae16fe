//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/xgate/xgate/gateway"
)

// The latency histograms of a run (`xgate bench --histograms`), read
// before and after the measured phase so that the buckets hold that window
// only: receive → verdict from Gateway.Latency (what the report's
// quantiles use), the kernel's from the gateway's Prometheus collector
// (what /metrics serves).
var histogramMetrics = []struct{ name, what string }{
	{"xgate_receive_to_verdict_seconds", "receive → verdict (all queues; socket paths: sampled, with probes.rx_timestamps)"},
	{"xgate_kernel_queue_latency_seconds", "kernel queueing latency (socket path, sock_latency probe)"},
	{"xgate_xdp_program_cost_seconds", "XDP program cost (one run in xdp.cost_sample per CPU)"},
}

// Histogram is one latency histogram over a measured window.
type Histogram struct {
	Metric string `json:"metric"`
	What   string `json:"what"`
	Count  uint64 `json:"count"`
	// Buckets are per bucket (not cumulative), by ascending upper bound;
	// the last is +Inf.
	Buckets []Bucket `json:"buckets"`
}

// Bucket counts the observations above the previous bucket's bound and
// at most Le.
type Bucket struct {
	Le    string  `json:"le"` // seconds as Prometheus writes it ("1e-06", "+Inf")
	Upper float64 `json:"-"`  // Le as a number (+Inf for the last)
	Count uint64  `json:"count"`
}

// Quantile estimates the q-quantile in seconds as PromQL's
// histogram_quantile does (linear within the bucket; a quantile in the
// +Inf bucket is the highest finite bound). NaN without observations.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 {
		return math.NaN()
	}
	rank := q * float64(h.Count)
	var cum uint64
	lower := 0.0
	for i, b := range h.Buckets {
		if b.Count > 0 && float64(cum+b.Count) >= rank {
			if math.IsInf(b.Upper, 1) {
				if i == 0 {
					return math.NaN()
				}
				return h.Buckets[i-1].Upper
			}
			return lower + (b.Upper-lower)*(rank-float64(cum))/float64(b.Count)
		}
		cum += b.Count
		lower = b.Upper
	}
	return lower
}

// RunHistograms is Run, returning as well the gateway's latency histograms
// over the measured phase: those it has in o.Mode (none for the
// yardsticks; the kernel queueing latency needs the socket path and the
// probe). The warm-up is not in them.
func RunHistograms(ctx context.Context, o Options) (rep Report, hs []Histogram, err error) {
	o.InProcess = true // the histograms are read off the gateway itself
	b, err := start(o)
	if err != nil {
		return rep, nil, err
	}
	defer func() { err = errors.Join(err, b.close()) }()
	if err := b.warmup(ctx); err != nil {
		return rep, nil, err
	}
	gt, ok := b.t.(gatewayTarget)
	if !ok {
		rep, err = b.phase(ctx, "measure", b.o.Duration, b.o.Rate)
		return rep, nil, err
	}
	before, err := gatherHistograms(gt.g)
	if err != nil {
		return rep, nil, err
	}
	if rep, err = b.phase(ctx, "measure", b.o.Duration, b.o.Rate); err != nil {
		return rep, nil, err
	}
	after, err := gatherHistograms(gt.g)
	if err != nil {
		return rep, nil, err
	}
	for _, m := range histogramMetrics {
		a, ok := after[m.name]
		if !ok {
			continue // not on this path, or the probe is missing
		}
		h, err := histogramSince(a, before[m.name])
		if err != nil {
			return rep, nil, fmt.Errorf("bench: %s: %w", m.name, err)
		}
		h.Metric, h.What = m.name, m.what
		hs = append(hs, h)
	}
	return rep, hs, nil
}

// cumulative is a histogram as the collector gives it, summed over its
// series: upper bound → observations at most that bound, +Inf included.
type cumulative map[float64]uint64

// gatherHistograms reads the histograms of histogramMetrics from g; one
// that is empty is left out (not on this path, or its probe is missing).
func gatherHistograms(g *gateway.Gateway) (map[string]cumulative, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(g.Collector()); err != nil {
		return nil, fmt.Errorf("bench: register the gateway's collector: %w", err)
	}
	fams, err := reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("bench: gather the gateway's metrics: %w", err)
	}
	out := map[string]cumulative{}
	for _, f := range fams {
		if f.GetType() != dto.MetricType_HISTOGRAM {
			continue
		}
		for _, m := range histogramMetrics {
			if f.GetName() == m.name {
				out[m.name] = sumSeries(f)
			}
		}
	}
	// Bucket i of Latency counts ≤ 2^i µs, the last everything slower:
	// the collector's bounds, whether or not it exports this path's.
	lat := g.Latency()
	c := cumulative{}
	var acc uint64
	for i, n := range lat {
		acc += n
		if i < len(lat)-1 {
			c[math.Ldexp(1e-6, i)] = acc
		}
	}
	c[math.Inf(1)] = acc
	out[histogramMetrics[0].name] = c
	for name, c := range out {
		if c[math.Inf(1)] == 0 {
			delete(out, name)
		}
	}
	return out, nil
}

func sumSeries(f *dto.MetricFamily) cumulative {
	c := cumulative{}
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		for _, b := range h.GetBucket() {
			c[b.GetUpperBound()] += b.GetCumulativeCount()
		}
		c[math.Inf(1)] += h.GetSampleCount()
	}
	return c
}

// histogramSince is the histogram of the observations made between the
// readings before (nil: none) and after.
func histogramSince(after, before cumulative) (Histogram, error) {
	bounds := make([]float64, 0, len(after))
	for b := range after {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	var h Histogram
	var prev uint64 // cumulative count of the window up to the previous bound
	for _, b := range bounds {
		if after[b] < before[b] {
			return h, fmt.Errorf("bucket le=%g went backwards (%d → %d)", b, before[b], after[b])
		}
		cum := after[b] - before[b]
		if cum < prev {
			return h, fmt.Errorf("bucket le=%g: cumulative counts not monotonic", b)
		}
		h.Buckets = append(h.Buckets, Bucket{Le: formatLe(b), Upper: b, Count: cum - prev})
		prev = cum
	}
	h.Count = prev
	return h, nil
}

func formatLe(b float64) string {
	if math.IsInf(b, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(b, 'g', -1, 64)
}

// WriteHistograms prints each histogram as a bucket table, from its first
// to its last non-empty bucket, with p50/p99/p99.9 as histogram_quantile
// would give them.
func WriteHistograms(w io.Writer, mode string, hs []Histogram) {
	if len(hs) == 0 {
		fmt.Fprintf(w, "\n%s: no latency histograms (not a gateway path)\n", mode)
		return
	}
	dur := func(s float64) string {
		if math.IsNaN(s) {
			return "-"
		}
		if math.IsInf(s, 1) {
			return "+Inf"
		}
		return time.Duration(math.Round(s * 1e9)).String()
	}
	for _, h := range hs {
		fmt.Fprintf(w, "\n%s: %s\n%s, %d observations; p50 %s  p99 %s  p99.9 %s\n", mode, h.What, h.Metric, h.Count,
			dur(h.Quantile(0.5)), dur(h.Quantile(0.99)), dur(h.Quantile(0.999)))
		first, last := -1, -1
		for i, b := range h.Buckets {
			if b.Count > 0 {
				if first < 0 {
					first = i
				}
				last = i
			}
		}
		if first < 0 {
			continue
		}
		fmt.Fprintf(w, "  %12s %12s %7s %7s\n", "le", "count", "%", "cum %")
		var cum uint64
		for _, b := range h.Buckets[first : last+1] {
			cum += b.Count
			pct := 100 * float64(b.Count) / float64(h.Count)
			fmt.Fprintf(w, "  %12s %12d %7.2f %7.2f  %s\n", "≤ "+dur(b.Upper), b.Count, pct,
				100*float64(cum)/float64(h.Count), strings.Repeat("#", int(math.Ceil(pct/2))))
		}
	}
}

// RunHistogramsTo runs each mode as Compare does, with the latency
// histograms of each measured window (`xgate bench --histograms`), and
// writes the reports' table followed by the bucket tables to w; with
// asJSON, the report of one mode, or an array for several, each with a
// "histograms" array. A Progress line on errw is cleared at the end.
func RunHistogramsTo(ctx context.Context, w, errw io.Writer, modes []string, o Options, asJSON bool) error {
	type run struct {
		Report
		Histograms []Histogram `json:"histograms"`
	}
	var runs []run
	for _, m := range modes {
		o.Mode = m
		rep, hs, err := RunHistograms(ctx, o)
		if err != nil {
			if o.Progress != nil {
				fmt.Fprint(errw, "\r\033[K")
			}
			return fmt.Errorf("%s: %w", m, err)
		}
		runs = append(runs, run{rep, hs})
	}
	if o.Progress != nil {
		fmt.Fprint(errw, "\r\033[K")
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if len(runs) == 1 {
			return enc.Encode(runs[0])
		}
		return enc.Encode(runs)
	}
	reps := make([]Report, len(runs))
	for i, r := range runs {
		reps[i] = r.Report
	}
	WriteTable(w, reps)
	for _, r := range runs {
		WriteHistograms(w, r.Mode, r.Histograms)
	}
	return nil
}
