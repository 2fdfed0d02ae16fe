//go:build linux

package bench

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/vg"
)

func TestSweepPlan(t *testing.T) {
	plan, err := SweepPlan(2e6, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 10 {
		t.Fatalf("%d steps, want 10: %v", len(plan), plan)
	}
	for i, r := range plan {
		want := 2e5 * float64(i+1) // 10 %, 20 %, …, 100 % of 2 M/s
		if math.Abs(r-want) > 1e-6 {
			t.Errorf("step %d: %v, want %v", i, r, want)
		}
	}
	if plan, err := SweepPlan(1000, 1); err != nil || len(plan) != 1 || plan[0] != 1000 {
		t.Errorf("one step: %v, %v", plan, err)
	}
	if plan, err := SweepPlan(1e6, 4); err != nil || plan[1] != 5e5 {
		t.Errorf("quarters: %v, %v; want 50 %% at 500000", plan, err)
	}
	for _, c := range []struct {
		max   float64
		steps int
	}{{1e6, 0}, {1e6, -1}, {1e6, maxSweepSteps + 1}, {0, 10}, {-5, 10}, {math.NaN(), 10}, {math.Inf(1), 10}, {0.5, 10}} {
		if plan, err := SweepPlan(c.max, c.steps); err == nil {
			t.Errorf("SweepPlan(%v, %d) = %v, want an error", c.max, c.steps, plan)
		}
	}
}

// A sweep with bad steps fails before it builds test hosts (no root needed).
func TestSweepBadSteps(t *testing.T) {
	if _, err := Sweep(context.Background(), SweepOptions{Options: Options{Mode: "afxdp"}, Steps: -3}); err == nil || !strings.Contains(err.Error(), "steps") {
		t.Fatalf("err %v, want one about the steps", err)
	}
}

// sweepFixture is a made-up afxdp sweep: the probe, then 4 steps with a
// tail that grows with the load.
func sweepFixture() []SweepPoint {
	pts := []SweepPoint{{OfferedRate: 2.1e6, Report: Report{Mode: "afxdp", EventsPerSec: 2e6, LatencyP50US: 40, LatencyP99US: 3000, LatencyP999US: 4000, RingDropped: 1000, Complete: true}}}
	for i, p99 := range []float64{30, 60, 150, 2500} {
		rate := 5e5 * float64(i+1)
		pts = append(pts, SweepPoint{LoadPct: 25 * float64(i+1), TargetRate: rate, OfferedRate: rate * 0.99,
			Report: Report{Mode: "afxdp", EventsPerSec: rate * 0.99, LatencyP50US: 5 + float64(i), LatencyP99US: p99, LatencyP999US: 2 * p99, Complete: true}})
	}
	for i := range pts {
		pts[i].Generator, pts[i].GeneratorCeilingPPS = "afxdp", 2.2e6
	}
	pts[0].GeneratorBound = true
	return pts
}

func TestWriteSweepPlot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sweep.png")
	if err := WriteSweepPlot(path, sweepFixture()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	wantW, wantH := int(PlotWidth/vg.Inch*PlotDPI), int(PlotHeight/vg.Inch*PlotDPI)
	if b := img.Bounds(); b.Dx() != wantW || b.Dy() != wantH {
		t.Errorf("image %v, want %d×%d", b, wantW, wantH)
	}
	// Something is drawn: more than a couple of colours (white, black
	// axes), the series' red and blue among them.
	colors := map[[3]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colors[[3]uint32{r >> 8, g >> 8, bl >> 8}] = true
		}
	}
	if !colors[[3]uint32{0xd6, 0x27, 0x28}] || !colors[[3]uint32{0x1f, 0x77, 0xb4}] {
		t.Errorf("the p99 (red) or p50 (blue) series is not drawn (%d colours)", len(colors))
	}
}

func TestWriteSweepPlotErrors(t *testing.T) {
	dir := t.TempDir()
	if err := WriteSweepPlot(filepath.Join(dir, "sweep.svg"), sweepFixture()); err == nil {
		t.Error("a .svg path accepted")
	}
	// A socket sweep has no latency: an error, and no file left behind.
	pts := sweepFixture()
	for i := range pts {
		pts[i].Mode, pts[i].LatencyP50US, pts[i].LatencyP99US = "socket", 0, 0
	}
	path := filepath.Join(dir, "socket.png")
	if err := WriteSweepPlot(path, pts); err == nil || !strings.Contains(err.Error(), "latency") {
		t.Errorf("err %v, want one about the missing latency", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a failed plot left %s behind (%v)", path, err)
	}
	if err := WriteSweepPlot(filepath.Join(dir, "no", "such", "dir.png"), sweepFixture()); err == nil {
		t.Error("a path in a missing directory accepted")
	}
}

func TestWriteSweepTable(t *testing.T) {
	var buf bytes.Buffer
	WriteSweepTable(&buf, sweepFixture())
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1+5+2+2 { // header, probe and 4 steps, footnote, generator and the generator-bound probe
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	if !strings.HasPrefix(lines[0], "load") || !strings.Contains(lines[0], "p99") {
		t.Errorf("header: %q", lines[0])
	}
	for i, want := range []string{"max ", "25 % ", "50 % ", "75 % ", "100 % "} {
		if !strings.HasPrefix(lines[i+1], want) {
			t.Errorf("line %d does not start with %q:\n%s", i+1, want, out)
		}
	}
	if f := strings.Fields(lines[3]); len(f) < 12 || f[10]+" "+f[11] != "60.0 µs" {
		t.Errorf("50 %% line: p99 should read 60.0 µs: %q", lines[3])
	}
	if f := strings.Fields(lines[1]); len(f) < 13 || f[12] != "1000" {
		t.Errorf("probe line: drops should read 1000: %q", lines[1])
	}
	if lines[8] != "generator afxdp, 2.200 M/s alone into XDP drop" || !strings.HasPrefix(lines[9], "max: generator-bound") {
		t.Errorf("generator lines:\n%s", out)
	}
}
