//go:build !lean

package main

import (
	"encoding/json"
	"image/png"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/loadgen"
)

// benchKeys are the keys `xgate bench --json` must print, exactly.
var benchKeys = []string{"mode", "duration_s", "sent", "xdp_dropped", "not_ours", "socket_dropped",
	"ring_dropped", "decode_errors", "decided", "unaccounted", "events_per_sec", "latency_p50_us",
	"latency_p99_us", "latency_p999_us", "gc_per_min", "rss_bytes", "cpu_seconds_per_million", "receiver_cpu_s", "events_per_cpu_s", "sender_cpu_s", "allocs_per_event",
	"worker_busy_s", "events_per_busy_s", "generator", "generator_ceiling_pps", "generator_bound"}

func checkReport(t *testing.T, m map[string]any, mode string) {
	t.Helper()
	if len(m) != len(benchKeys) {
		t.Errorf("%d keys, want %d: %v", len(m), len(benchKeys), m)
	}
	for _, k := range benchKeys {
		if _, ok := m[k]; !ok {
			t.Errorf("key %q missing: %v", k, m)
		}
	}
	if m["mode"] != mode {
		t.Errorf("mode %v, want %s", m["mode"], mode)
	}
	if m["unaccounted"] != 0.0 {
		t.Errorf("unaccounted %v, want 0: %v", m["unaccounted"], m)
	}
	if s, _ := m["sent"].(float64); s <= 0 {
		t.Errorf("nothing sent: %v", m)
	}
	if d, _ := m["decided"].(float64); d <= 0 {
		t.Errorf("nothing decided: %v", m)
	}
	if g, _ := m["generator"].(string); g != loadgen.EngineLiveFrames && g != loadgen.EngineAFXDP {
		t.Errorf("generator %v, want xdp or afxdp", m["generator"])
	}
	if c, _ := m["generator_ceiling_pps"].(float64); c <= 0 {
		t.Errorf("no generator ceiling: %v", m)
	}
	// The receiver's CPU, the same measure for every mode: > 0 and at
	// most every CPU of the machine over the window.
	cpu, _ := m["receiver_cpu_s"].(float64)
	if dur, _ := m["duration_s"].(float64); cpu <= 0 || cpu > dur*float64(runtime.NumCPU()) {
		t.Errorf("receiver CPU %v s over %v s: %v", cpu, dur, m)
	} else if e, _ := m["events_per_cpu_s"].(float64); math.Abs(e*cpu-m["decided"].(float64)) > 1 {
		t.Errorf("events per CPU-second %v × %v s ≠ decided %v", e, cpu, m["decided"])
	}
	// The sending thread's CPU (the frame engines measure it), with the
	// receiving host's kernel path.
	if s, _ := m["sender_cpu_s"].(float64); s <= 0 {
		t.Errorf("no sending thread CPU: %v", m)
	}
	if slices.Contains([]string{"afxdp", "socket", "plain"}, mode) {
		// The gateway's workers account their busy time: > 0, and no
		// more than the window's wall time per worker CPU.
		busy, _ := m["worker_busy_s"].(float64)
		dur, _ := m["duration_s"].(float64)
		if busy <= 0 || busy > dur*float64(runtime.NumCPU()) {
			t.Errorf("worker busy %v s over %v s: %v", busy, dur, m)
		}
		if c, _ := m["events_per_busy_s"].(float64); c <= 0 {
			t.Errorf("no capacity: %v", m)
		}
	}
}

func TestBenchJSON(t *testing.T) {
	needRoot(t)
	out, errOut, err := runSplit(t, "bench", "--mode", "afxdp", "--duration", "1s", "--warmup", "300ms", "--json", "--host-check", "200ms")
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("stdout is not the JSON alone: %v:\n%s", err, out)
	}
	// With --json the host check goes to stderr.
	if !strings.Contains(errOut, "host check, CPU ") || !strings.Contains(errOut, "stalls ≥ 200µs") {
		t.Errorf("no host check line on stderr:\n%s", errOut)
	}
	checkReport(t, m, "afxdp")
	if p, _ := m["latency_p50_us"].(float64); p <= 0 {
		t.Errorf("afxdp without a latency: %v", m)
	}
	t.Log(out)
}

func TestBenchCompare(t *testing.T) {
	needRoot(t)
	out, errOut, err := runSplit(t, "bench", "--compare", "afxdp,socket", "--duration", "1s", "--warmup", "300ms", "--rate", "200k", "--json", "--host-check", "0")
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, errOut)
	}
	// stderr is not a terminal: a line per mode and phase, never an escape.
	for _, want := range []string{"bench: mode 1/2 afxdp: generator ceiling", "bench: mode 1/2 afxdp: start", "bench: mode 1/2 afxdp: measure",
		"bench: mode 2/2 socket: start", "bench: mode 2/2 socket: measure"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "\033[") {
		t.Errorf("escapes on a stderr that is not a terminal:\n%q", errOut)
	}
	var ms []map[string]any
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(ms) != 2 {
		t.Fatalf("%d reports, want 2", len(ms))
	}
	checkReport(t, ms[0], "afxdp")
	checkReport(t, ms[1], "socket")
	// The socket path samples receive → verdict (probes.rx_timestamps, on
	// by default): one datagram in probes.sample per socket.
	if p50, _ := ms[1]["latency_p50_us"].(float64); p50 <= 0 {
		t.Errorf("socket path reports no receive → verdict latency: %v", ms[1])
	} else if p99, _ := ms[1]["latency_p99_us"].(float64); p99 < p50 {
		t.Errorf("socket latency p99 %v < p50 %v", p99, p50)
	}
}

// The yardsticks of --compare: the count-only receivers and the plain Go
// baseline, at max rate, every datagram accounted for.
func TestBenchCompareYardsticks(t *testing.T) {
	needRoot(t)
	modes := []string{"afxdp", "rawxsk", "rawsock", "baseline", "gjson"}
	out, _, err := runSplit(t, "bench", "--compare", strings.Join(modes, ","), "--duration", "1s", "--warmup", "0", "--json", "--host-check", "0")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var ms []map[string]any
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(ms) != len(modes) {
		t.Fatalf("%d reports, want %d", len(ms), len(modes))
	}
	for i, m := range modes {
		checkReport(t, ms[i], m) // unaccounted 0, decided > 0
	}
	for _, m := range ms[1:] {
		if d, _ := m["decode_errors"].(float64); d != 0 {
			t.Errorf("%v: decode errors from the default mix without bad events: %v", m["mode"], m)
		}
	}
	t.Log(out)
}

func TestBenchCompareTable(t *testing.T) {
	needRoot(t)
	out, err := run(t, "bench", "--compare", "plain,afxdp", "--duration", "1s", "--warmup", "0", "--rate", "100k", "--host-check", "200ms")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"afxdp/plain", "events/s", "unaccounted", "host check, CPU ", "events / busy CPU-s", "generator ceiling /s", "plain: generator "} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	t.Log("\n" + out)
}

// Fixed offered loads: every mode at every load, one target per mode, a
// report per load and mode with every datagram accounted for; the table
// has a line per load and mode.
func TestBenchCompareLoads(t *testing.T) {
	needRoot(t)
	out, errOut, err := runSplit(t, "bench", "--compare", "plain,gjson", "--rate", "20k,max", "--duration", "700ms", "--warmup", "200ms", "--json", "--host-check", "0")
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, errOut)
	}
	for _, want := range []string{"bench: mode 1/2 plain: measure 20k", "bench: mode 1/2 plain: measure max", "bench: mode 2/2 gjson: measure max"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	var loads []struct {
		Load       string           `json:"load"`
		TargetRate float64          `json:"target_rate"`
		Reports    []map[string]any `json:"reports"`
	}
	if err := json.Unmarshal([]byte(out), &loads); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(loads) != 2 || loads[0].Load != "20k" || loads[0].TargetRate != 20000 || loads[1].Load != "max" || loads[1].TargetRate != 0 {
		t.Fatalf("loads %+v, want 20k and max", loads)
	}
	for _, l := range loads {
		if len(l.Reports) != 2 {
			t.Fatalf("%s: %d reports, want 2", l.Load, len(l.Reports))
		}
		checkReport(t, l.Reports[0], "plain")
		checkReport(t, l.Reports[1], "gjson")
	}
	// The 20k window offered about 20k/s (the pacing is the generator's).
	if r, _ := loads[0].Reports[0]["events_per_sec"].(float64); r < 10e3 || r > 30e3 {
		t.Errorf("plain at 20k: %v events/s", r)
	}
	table, err := run(t, "bench", "--compare", "plain,gjson", "--rate", "20k,max", "--duration", "300ms", "--warmup", "0", "--host-check", "0")
	if err != nil {
		t.Fatalf("%v\n%s", err, table)
	}
	for _, want := range []string{"events / CPU-s", "× first", "20k   plain", "max   gjson", "receiver CPU: "} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	t.Log("\n" + table)
}

// A tiny sweep: the max-rate probe and two loads, each point accounted for,
// and its plot.
func TestBenchSweep(t *testing.T) {
	needRoot(t)
	plot := filepath.Join(t.TempDir(), "sweep.png")
	out, errOut, err := runSplit(t, "bench", "--sweep", "--steps", "2", "--duration", "700ms", "--warmup", "300ms", "--json", "--plot", plot, "--host-check", "0")
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, errOut)
	}
	if !strings.Contains(errOut, "afxdp: 100%") || !strings.Contains(errOut, "plot written to") {
		t.Errorf("stderr lacks the step lines or the plot's note:\n%s", errOut)
	}
	var pts []map[string]any
	if err := json.Unmarshal([]byte(out), &pts); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(pts) != 3 {
		t.Fatalf("%d points, want the probe and 2 loads:\n%s", len(pts), out)
	}
	probe, _ := pts[0]["events_per_sec"].(float64)
	for i, p := range pts {
		if i > 0 { // the point's own keys; the probe's are 0
			if l, _ := p["load_pct"].(float64); l != float64(50*i) {
				t.Errorf("point %d: load_pct %v, want %d", i, p["load_pct"], 50*i)
			}
			if r, _ := p["target_rate"].(float64); math.Abs(r-probe*float64(i)/2) > 1 {
				t.Errorf("point %d: target_rate %v, want %v", i, r, probe*float64(i)/2)
			}
			if r, _ := p["offered_rate"].(float64); r <= 0 {
				t.Errorf("point %d: offered_rate %v", i, r)
			}
		}
		delete(p, "load_pct")
		delete(p, "target_rate")
		delete(p, "offered_rate")
		checkReport(t, p, "afxdp") // the report's keys, unaccounted 0
		if l, _ := p["latency_p99_us"].(float64); l <= 0 {
			t.Errorf("point %d without a latency: %v", i, p)
		}
	}
	f, err := os.Open(plot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("plot: %v", err)
	}
}

// TestLoadTestHostCount: every engine sends an exact count into the test
// host's receiver and says which engine ran; auto with live frames
// switched off runs afxdp (never skipped), xdp runs only where this
// kernel allows live frames.
func TestLoadTestHostCount(t *testing.T) {
	needRoot(t)
	for _, c := range []struct{ name, engine, want string }{
		{"afxdp", "afxdp", "afxdp"},
		{"auto, live frames off", "auto", "afxdp"},
		{"xdp", "xdp", "xdp"},
		{"socket", "socket", "socket"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "auto, live frames off" {
				defer bpf.ForceOff(bpf.FeatLiveFrames)()
			}
			if c.engine == "xdp" {
				if err := bpf.Probe(bpf.FeatLiveFrames); err != nil {
					t.Skipf("kernel refuses %s: %v", bpf.FeatLiveFrames, err)
				}
			}
			const n = 50000
			out, err := run(t, "load", "--testhost", "--engine", c.engine, "--count", "50000", "--sources", "4", "--bad-share", "0.1", "--json")
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			var r struct {
				Engine                      string
				Sent, Received, Undelivered uint64
				CeilingPPS                  float64           `json:"ceiling_pps"`
				ByKind                      map[string]uint64 `json:"by_kind"`
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			if r.Engine != c.want {
				t.Errorf("engine %q, want %q", r.Engine, c.want)
			}
			if r.Sent != n || r.Received+r.Undelivered != n {
				t.Errorf("sent %d received %d undelivered %d, want %d sent and all seen:\n%s", r.Sent, r.Received, r.Undelivered, n, out)
			}
			if c.engine == "socket" {
				return
			}
			var kinds uint64
			for _, k := range r.ByKind {
				kinds += k
			}
			if kinds != n || r.ByKind["valid"] == n || r.CeilingPPS <= 0 {
				t.Errorf("by kind %v (want %d with 10 %% bad), ceiling %v:\n%s", r.ByKind, n, r.CeilingPPS, out)
			}
		})
	}
}

func TestBenchBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--mode", "nosuchmode"},
		{"bench", "--rate", "fast"},
		{"load", "--engine", "xdp", "--to", "127.0.0.1:9"},
		{"load", "--engine", "afxdp", "--to", "127.0.0.1:9"},
		{"load", "--testhost", "--engine", "bogus", "--count", "1"},
		{"bench", "--engine", "bogus"},
		{"load", "--to", "nonsense"},
		{"bench", "--sweep", "--compare", "afxdp,socket"},
		{"bench", "--plot", "x.png"},
		{"bench", "--sweep", "--plot", "x.svg"},
		{"bench", "--sweep", "--mode", "socket", "--plot", "x.png"},
		{"bench", "--sweep", "--steps", "0"},
		{"bench", "--spin", "20ms"},
		{"bench", "--spin", "-1us"},
		{"bench", "--host-check", "-1s"},
		{"bench", "--rate", "20k,20000"},
		{"bench", "--rate", "20k,"},
		{"bench", "--sweep", "--rate", "20k,max"},
		{"bench", "--histograms", "--rate", "20k,max"},
	} {
		if out, err := run(t, args...); err == nil {
			t.Errorf("%v accepted:\n%s", args, out)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"max": 0, "": 0, "1000": 1000, "500k": 5e5, "1.5M": 1.5e6} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "0", "x", "2000M"} {
		if _, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) accepted", in)
		}
	}
}

// load from an existing namespace: the frame engine (auto: xdp where the
// kernel allows it, else afxdp) out of an interface (destination MAC from
// the neighbour table) and the socket engine.
func TestLoadFromNamespace(t *testing.T) {
	needRoot(t)
	pair := testenv.New(t, testenv.Options{})
	rcv, err := loadgen.AttachDrop(pair.B)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	dst := netip.AddrPortFrom(pair.B.Addr, 9000).String()
	var want uint64
	for _, args := range [][]string{
		{"load", "--engine", "auto", "--netns", pair.A.NS, "--iface", pair.A.Link, "--to", dst, "--count", "20000", "--json"},
		{"load", "--engine", "afxdp", "--netns", pair.A.NS, "--iface", pair.A.Link, "--to", dst, "--count", "20000", "--json"},
		{"load", "--engine", "socket", "--netns", pair.A.NS, "--to", dst, "--count", "20000", "--json"},
	} {
		out, err := run(t, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		var r struct{ Sent uint64 }
		if err := json.Unmarshal([]byte(out), &r); err != nil || r.Sent != 20000 {
			t.Fatalf("%v: sent %d (%v):\n%s", args, r.Sent, err, out)
		}
		want += r.Sent
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		seen, err := rcv.Seen()
		if err != nil {
			t.Fatal(err)
		}
		if seen == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver saw %d of %d", seen, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if out, err := run(t, "load", "--engine", "auto", "--netns", pair.A.NS, "--iface", "nosuchif", "--to", dst, "--count", "1"); err == nil {
		t.Errorf("missing interface accepted:\n%s", out)
	}
}
