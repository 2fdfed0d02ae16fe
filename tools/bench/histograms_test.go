//go:build linux

package bench

import (
	"bytes"
	"context"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// histogramSince takes the window's observations out of two cumulative
// readings; Quantile interpolates as histogram_quantile does.
func TestHistogramSince(t *testing.T) {
	inf := math.Inf(1)
	before := cumulative{1e-6: 10, 2e-6: 10, 4e-6: 20, inf: 20}
	after := cumulative{1e-6: 10, 2e-6: 50, 4e-6: 150, inf: 160}
	h, err := histogramSince(after, before)
	if err != nil {
		t.Fatal(err)
	}
	want := []Bucket{{"1e-06", 1e-6, 0}, {"2e-06", 2e-6, 40}, {"4e-06", 4e-6, 90}, {"+Inf", inf, 10}}
	if h.Count != 140 || len(h.Buckets) != len(want) {
		t.Fatalf("histogram %+v, want 140 observations in %v", h, want)
	}
	for i, b := range h.Buckets {
		if b != want[i] {
			t.Errorf("bucket %d: %+v, want %+v", i, b, want[i])
		}
	}
	// p50: rank 70, 30 into the (2µs, 4µs] bucket of 90 → 2µs + 2µs·30/90.
	if q := h.Quantile(0.5); math.Abs(q-(2e-6+2e-6*30/90)) > 1e-12 {
		t.Errorf("p50 %g", q)
	}
	// p99 falls in +Inf: the highest finite bound.
	if q := h.Quantile(0.99); q != 4e-6 {
		t.Errorf("p99 %g, want 4e-06", q)
	}
	if q := (Histogram{}).Quantile(0.5); !math.IsNaN(q) {
		t.Errorf("empty histogram: p50 %g, want NaN", q)
	}
	if _, err := histogramSince(before, after); err == nil {
		t.Error("counts going backwards: no error")
	}

	var out bytes.Buffer
	h.Metric, h.What = "xgate_x_seconds", "x"
	WriteHistograms(&out, "afxdp", []Histogram{h})
	for _, s := range []string{"xgate_x_seconds, 140 observations; p50 2.667µs  p99 4µs", "       ≤ 2µs           40   28.57   28.57",
		"      ≤ +Inf           10    7.14  100.00"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
	if strings.Contains(out.String(), "≤ 1µs") {
		t.Errorf("leading empty bucket printed:\n%s", out.String())
	}
}

// RunHistograms on the socket path: the measured window's three
// histograms, with the receive → verdict one agreeing with the report's
// quantiles (the same counts) and the kernel's non-empty.
func TestRunHistograms(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (test hosts, XDP)")
	}
	rep, hs, err := RunHistograms(context.Background(), Options{Mode: "socket", Duration: 300 * time.Millisecond,
		Warmup: -1, Rate: 50000})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Histogram{}
	for _, h := range hs {
		byName[h.Metric] = h
		var sum uint64
		for _, b := range h.Buckets {
			sum += b.Count
		}
		if h.Count == 0 || sum != h.Count || h.Buckets[len(h.Buckets)-1].Le != "+Inf" {
			t.Errorf("%s: %d observations, buckets sum to %d, last bucket %+v", h.Metric, h.Count, sum, h.Buckets[len(h.Buckets)-1])
		}
	}
	if _, ok := byName["xgate_xdp_program_cost_seconds"]; !ok {
		t.Errorf("no XDP cost histogram: %v", hs)
	}
	if _, ok := byName["xgate_kernel_queue_latency_seconds"]; !ok {
		t.Logf("no kernel queueing latency histogram (probe missing?): %v", hs)
	}
	if h, ok := byName["xgate_receive_to_verdict_seconds"]; ok {
		if p50 := h.Quantile(0.5) * 1e6; math.Abs(p50-rep.LatencyP50US) > 1e-6*p50 {
			t.Errorf("receive → verdict p50 %.3fµs, report %.3fµs", p50, rep.LatencyP50US)
		}
	} else if rep.LatencyP50US != 0 {
		t.Errorf("report has p50 %.1fµs but no receive → verdict histogram", rep.LatencyP50US)
	}
	var out bytes.Buffer
	WriteHistograms(&out, rep.Mode, hs)
	t.Logf("decided %d\n%s", rep.Decided, out.String())
}
