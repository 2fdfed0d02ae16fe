//go:build linux

package bench

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Size of the sweep plot: 8 × 4.5 in at gonum/plot's 96 dpi, 768 × 432
// pixels.
const (
	PlotWidth  = 8 * vg.Inch
	PlotHeight = 4.5 * vg.Inch
	// PlotDPI is the resolution vgimg renders PNG at by default.
	PlotDPI = 96
)

// P99Target is the latency target: p99 ≤ 200 µs at 50 % of the
// max rate (afxdp). The plot draws it as a reference line.
const P99Target = 200.0

// WriteSweepPlot writes the sweep as a PNG to path: p50 and p99 latency
// (log scale, µs) against the offered load the generator achieved (M
// datagrams/s), with the p99 target and 50 % of the max rate as dashed
// lines. The max-rate probe is left out (its load is whatever the
// generator reached). Points without a latency (modes that do not measure
// one) are left out; if none remain it is an error.
func WriteSweepPlot(path string, pts []SweepPoint) (err error) {
	if !strings.EqualFold(filepath.Ext(path), ".png") {
		return fmt.Errorf("plot %s: want a .png file", path)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("plot %s: %w", path, cerr)
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	if err := writeSweepPNG(f, pts); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

func writeSweepPNG(w io.Writer, pts []SweepPoint) error {
	var p50, p99 plotter.XYs
	lo, hi, xmax := math.Inf(1), math.Inf(-1), 0.0
	mode := ""
	var maxRate float64
	for _, p := range pts {
		if p.TargetRate == 0 {
			maxRate = p.EventsPerSec
			continue
		}
		mode = p.Mode
		if p.LatencyP50US <= 0 || p.LatencyP99US <= 0 || p.OfferedRate <= 0 {
			continue
		}
		x := p.OfferedRate / 1e6
		p50 = append(p50, plotter.XY{X: x, Y: p.LatencyP50US})
		p99 = append(p99, plotter.XY{X: x, Y: p.LatencyP99US})
		lo, hi, xmax = min(lo, p.LatencyP50US), max(hi, p.LatencyP99US), max(xmax, x)
	}
	if len(p50) == 0 {
		return errors.New("no step measured a latency (only the afxdp path does)")
	}
	// By offered load: near the max the generator may fall short of a
	// step's target, and a line in step order would double back.
	for _, xys := range []plotter.XYs{p50, p99} {
		sort.SliceStable(xys, func(i, j int) bool { return xys[i].X < xys[j].X })
	}
	lo, hi = min(lo, P99Target), max(hi, P99Target)

	plt := plot.New()
	plt.Title.Text = fmt.Sprintf("xgate %s: receive → verdict latency against offered load", mode)
	if maxRate > 0 {
		plt.Title.Text += fmt.Sprintf(" (max %.2f M/s)", maxRate/1e6)
	}
	plt.X.Label.Text = "offered load (M datagrams/s)"
	plt.Y.Label.Text = "latency (µs, log scale)"
	plt.X.Min, plt.X.Max = 0, 1.05*max(xmax, maxRate/1e6)
	plt.Y.Scale = plot.LogScale{}
	plt.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	// Whole decades, so the log axis starts and ends on a labelled tick,
	// and one more at the bottom for the legend.
	plt.Y.Min = math.Pow(10, math.Floor(math.Log10(lo))-1)
	plt.Y.Max = math.Pow(10, math.Ceil(math.Log10(hi)))
	plt.Add(plotter.NewGrid())
	plt.Legend.Top, plt.Legend.Left = false, false
	plt.Legend.XOffs, plt.Legend.YOffs = -vg.Points(6), vg.Points(6)

	for _, s := range []struct {
		name  string
		xys   plotter.XYs
		color color.Color
		glyph draw.GlyphDrawer
	}{
		{"p50", p50, color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, draw.CircleGlyph{}},
		{"p99", p99, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, draw.SquareGlyph{}},
	} {
		line, points, err := plotter.NewLinePoints(s.xys)
		if err != nil {
			return err
		}
		line.Color, line.Width = s.color, vg.Points(1.5)
		points.Color, points.Shape, points.Radius = s.color, s.glyph, vg.Points(3)
		plt.Add(line, points)
		plt.Legend.Add(s.name, line, points)
	}
	target := plotter.NewFunction(func(float64) float64 { return P99Target })
	target.Color = color.Gray{Y: 0x60}
	target.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	plt.Add(target)
	plt.Legend.Add(fmt.Sprintf("p99 target at 50 %% load: %.0f µs", P99Target), target)
	if maxRate > 0 {
		half, err := plotter.NewLine(plotter.XYs{{X: maxRate / 2e6, Y: plt.Y.Min}, {X: maxRate / 2e6, Y: plt.Y.Max}})
		if err != nil {
			return err
		}
		half.Color = color.Gray{Y: 0x60}
		half.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
		plt.Add(half)
		plt.Legend.Add("50 % of the max rate", half)
	}

	wt, err := plt.WriterTo(PlotWidth, PlotHeight, "png")
	if err != nil {
		return err
	}
	_, err = wt.WriteTo(w)
	return err
}
