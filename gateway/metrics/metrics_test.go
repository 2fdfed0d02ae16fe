package metrics

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/engine/state"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/lists"
	"github.com/xgate/xgate/gateway/metrics/metricstest"
	"github.com/xgate/xgate/gateway/sink"
	"github.com/xgate/xgate/xdp"
)

func TestLog2Histogram(t *testing.T) {
	// bucket i: <= 2^i µs; the last one also everything slower.
	n, sum, b := Log2Histogram([]uint64{1, 0, 2, 3}, 1e-6)
	if n != 6 {
		t.Errorf("count %d, want 6", n)
	}
	if want := (1*1 + 2*4 + 3*8) * 1e-6; math.Abs(sum-want) > 1e-12 {
		t.Errorf("sum %g, want %g", sum, want)
	}
	want := map[float64]uint64{1e-6: 1, 2e-6: 1, 4e-6: 3} // 8µs is the overflow: only in +Inf
	if len(b) != len(want) {
		t.Fatalf("buckets %v, want %v", b, want)
	}
	for le, c := range want {
		if got, ok := b[le]; !ok || got != c {
			t.Errorf("bucket le=%g: %d, want %d (all %v)", le, got, c, b)
		}
	}
}

func TestRuleLabels(t *testing.T) {
	got := RuleLabels([]engine.RuleStats{{Name: "a"}, {Name: ""}, {Name: "a"}, {Name: "b"}, {Name: "a"}})
	want := []string{"a", "rule_1", "a#2", "b", "a#3"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("RuleLabels = %q, want %q", got, want)
		}
	}
}

func TestMetricNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range Names() {
		if seen[n] {
			t.Errorf("metric %s described twice", n)
		}
		seen[n] = true
	}
	if len(seen) < 40 {
		t.Errorf("only %d metric names", len(seen))
	}
}

// TestAccountingIdentity: the terms of Accounting sum (reassembled taken
// off) to Accounted, Seen is the XDP program's count or, in plain mode,
// what arrived at the sockets, and Unaccounted is their difference.
func TestAccountingIdentity(t *testing.T) {
	s := Stats{Identity: config.ModeSocket, XDPSeen: 100, XDPDrops: 10, NotForUs: 20, KernelDrops: 3,
		SocketDrops: 4, Rejected: 5, Decided: 60, Reassembled: 2, Datagrams: 65}
	s.Engine.Events = 130
	a := AccountingOf(&s)
	var sum int64
	for _, tm := range a.Terms() {
		if tm.Name == "reassembled" {
			sum -= int64(tm.V)
		} else {
			sum += int64(tm.V)
		}
	}
	if sum != int64(a.Accounted) || a.Accounted != 100 || a.Seen != 100 || a.Unaccounted != 0 {
		t.Errorf("socket: terms sum %d, accounted %d, seen %d, unaccounted %d: want 100, 100, 100, 0",
			sum, a.Accounted, a.Seen, a.Unaccounted)
	}
	if a.EventsPerDatagram != 2 {
		t.Errorf("events per datagram %v, want 2", a.EventsPerDatagram)
	}
	s.Decided-- // a datagram lost without a term
	if a := AccountingOf(&s); a.Unaccounted != 1 {
		t.Errorf("one datagram in no term: unaccounted %d, want 1", a.Unaccounted)
	}
	p := Stats{Identity: config.ModePlain, XDPSeen: 7, Datagrams: 9, SocketDrops: 1, Rejected: 2, Decided: 7}
	if a := AccountingOf(&p); a.Seen != 10 || a.Unaccounted != 0 {
		t.Errorf("plain: seen %d unaccounted %d, want 10 and 0 (datagrams + socket drops)", a.Seen, a.Unaccounted)
	}
}

// fakeSource is a Source with fixed readings.
type fakeSource struct {
	stats    Stats
	statsErr error
	xdp      bool
	costErr  error
	tap      bool
	queues   []Queue
	probes   []Probe
	readings *ProbeReadings
}

func (f *fakeSource) Stats() (Stats, error) { return f.stats, f.statsErr }
func (f *fakeSource) Info() Info {
	return Info{Version: "v1", Revision: "abc", Interface: "eth9"}
}
func (f *fakeSource) TapDropped() (uint64, bool) { return 3, f.tap }
func (f *fakeSource) HasXDP() bool               { return f.xdp }
func (f *fakeSource) XDPCost() (bpf.Cost, bool, error) {
	var c bpf.Cost
	c.Hist[2], c.SumNs = 5, 17
	return c, f.costErr == nil, f.costErr
}
func (f *fakeSource) CIDRHits() ([]CIDRHit, bool, error) {
	return []CIDRHit{{"partners", 4}, {"bad", 9}}, true, nil
}
func (f *fakeSource) Blocklist() (int, int, bool, error) { return 2, 1, true, nil }
func (f *fakeSource) Queues() []Queue                    { return f.queues }
func (f *fakeSource) Lists() []lists.Stats {
	return []lists.Stats{{Name: "partners", Type: "cidr", Entries: 3, Reloads: 2}}
}
func (f *fakeSource) Probes() []Probe { return f.probes }
func (f *fakeSource) ProbeReadings() (ProbeReadings, bool) {
	if f.readings == nil {
		return ProbeReadings{}, false
	}
	return *f.readings, true
}

// gather collects c into families by name; the error is the registry's
// (invalid metrics).
func gather(t *testing.T, c prometheus.Collector) (map[string]*dto.MetricFamily, error) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	fs, err := reg.Gather()
	out := map[string]*dto.MetricFamily{}
	for _, f := range fs {
		out[f.GetName()] = f
	}
	return out, err
}

// value is the value of the series of family name with the labels want
// ("k=v"); -1 if there is none.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	if v, ok := metricstest.Value(fams, name, want...); ok {
		return v
	}
	return -1
}

// TestCollectorReadsSource: every series the collector makes comes from
// its Source, under the documented names and labels.
func TestCollectorReadsSource(t *testing.T) {
	s := Stats{Path: config.ModeAFXDP, Identity: config.ModeAFXDP, XDPMode: bpf.AttachMode("native"),
		XDPSeen: 50, XDPDrops: 5, NotForUs: 5, NoSocket: 2, RingDrops: 3, BadFrames: 1, Rejected: 4, Decided: 30, Datagrams: 35}
	s.XDP[bpf.ReasonCIDRDrop] = bpf.Counter{Packets: 5, Bytes: 500}
	s.Engine.Frames = 35
	s.Engine.Verdicts[engine.ActionDrop] = 6
	s.Engine.Rules = []engine.RuleStats{
		{Name: "limit", Action: engine.ActionDrop, Fired: 6, Limiter: &state.RateLimitStats{Keys: 2, Limited: 6}},
		{Name: "limit", Action: engine.ActionAlert, Fired: 1, Window: &state.WindowStats{Keys: 1}},
	}
	s.Feedback.Applied = 2
	s.Sinks = []sink.Stats{{Name: "out", Records: 7}, {Name: "out", Records: 8},
		{Name: "kafka", Spool: true, Spooled: 4, SpoolOldest: time.Now().Add(-time.Hour)}}
	src := &fakeSource{stats: s, xdp: true, tap: true,
		queues: []Queue{{ID: 0, XSK: true, Datagrams: 35, Ring: xdp.Stats{RxDropped: 1, RxRingFull: 2}, RingDropped: 3,
			BadFrames: 1, Latency: []uint64{1, 2, 0}, LatencySum: time.Millisecond}},
		probes: []Probe{{"kfree_skb", true}, {"sock_latency", false}},
		readings: &ProbeReadings{Drops: map[string]uint64{"netfilter_drop": 2},
			XDP: bpf.XDPEvents{RedirectErr: map[string]uint64{"ENOBUFS": 1}}, XDPOK: true}}
	fams, err := gather(t, NewCollector(src))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range Names() {
		names[n] = true
	}
	for n := range fams {
		if !names[n] {
			t.Errorf("family %s is not in Names()", n)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"xgate_info", []string{"version=v1", "mode=afxdp", "xdp_mode=native", "interface=eth9"}, 1},
		{"xgate_build_info", []string{"version=v1", "revision=abc"}, 1},
		{"xgate_rules", nil, 2},
		{"xgate_tap_dropped_total", nil, 3},
		{"xgate_xdp_packets_total", []string{"reason=cidr_drop"}, 5},
		{"xgate_xdp_bytes_total", []string{"reason=cidr_drop"}, 500},
		{"xgate_xdp_program_cost_seconds", nil, 5},
		{"xgate_xdp_cidr_packets_total", []string{"list=bad"}, 9},
		{"xgate_xdp_blocklist_entries", []string{"state=expired"}, 1},
		{"xgate_datagrams_total", []string{"mode=afxdp", "queue=0"}, 35},
		{"xgate_afxdp_ring_drops_total", []string{"queue=0"}, 3},
		{"xgate_afxdp_rx_ring_full_total", []string{"queue=0"}, 2},
		{"xgate_afxdp_bad_frames_total", []string{"queue=0"}, 1},
		{"xgate_receive_to_verdict_seconds", []string{"queue=0"}, 3},
		{"xgate_events_total", []string{"verdict=drop"}, 6},
		{"xgate_rule_fired_total", []string{"rule=limit", "action=drop"}, 6},
		{"xgate_rule_fired_total", []string{"rule=limit#2", "action=alert"}, 1},
		{"xgate_rule_ratelimit_decisions_total", []string{"rule=limit", "result=limited"}, 6},
		{"xgate_rule_window_keys", []string{"rule=limit#2"}, 1},
		{"xgate_feedback_blocks_total", []string{"result=applied"}, 2},
		{"xgate_sink_records_total", []string{"sink=out"}, 7},
		{"xgate_sink_records_total", []string{"sink=out#1"}, 8},
		{"xgate_sink_spool_records", []string{"sink=kafka"}, 4},
		{"xgate_list_entries", []string{"list=partners", "type=cidr"}, 3},
		{"xgate_list_reloads_total", []string{"list=partners", "result=ok"}, 2},
		{"xgate_probe_up", []string{"probe=kfree_skb"}, 1},
		{"xgate_probe_up", []string{"probe=sock_latency"}, 0},
		{"xgate_kernel_drops_total", []string{"reason=netfilter_drop"}, 2},
		{"xgate_xdp_redirect_errors_total", []string{"errno=ENOBUFS"}, 1},
		{"xgate_xdp_seen_packets_total", nil, 50},
		{"xgate_accounting_unaccounted", []string{"identity=afxdp"}, 0},
	} {
		if got := value(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if age := value(fams, "xgate_sink_spool_oldest_age_seconds", "sink=kafka"); age < 3600 {
		t.Errorf("spool age %v, want an hour or more", age)
	}
	for _, tm := range AccountingOf(&s).Terms() {
		if got := value(fams, "xgate_accounting_total", "term="+tm.Name); got != float64(tm.V) {
			t.Errorf("accounting term %s = %v, want %d", tm.Name, got, tm.V)
		}
	}
	if fams["xgate_socket_drops_total"] != nil || fams["xgate_kernel_queue_latency_seconds"] != nil {
		t.Error("families of a socket or probe the source does not have")
	}
}

// TestCollectorWithoutXDP: a plain source has no XDP families; an error
// reading Stats fails the scrape with that error, and a failed map read
// fails only its family.
func TestCollectorWithoutXDP(t *testing.T) {
	src := &fakeSource{stats: Stats{Path: config.ModePlain, Identity: config.ModePlain},
		queues: []Queue{{ID: 0, HasSocket: true, SocketDrops: 4, Latency: make([]uint64, 4)}}}
	fams, err := gather(t, NewCollector(src))
	if err != nil {
		t.Fatal(err)
	}
	for n := range fams {
		if strings.HasPrefix(n, "xgate_xdp_") && n != "xgate_xdp_seen_packets_total" || strings.HasPrefix(n, "xgate_afxdp_") ||
			n == "xgate_tap_dropped_total" {
			t.Errorf("plain source: family %s", n)
		}
	}
	if got := value(fams, "xgate_socket_drops_total", "mode=plain", "queue=0"); got != 4 {
		t.Errorf("socket drops %v, want 4", got)
	}

	src.statsErr = errors.New("map gone")
	if _, err := gather(t, NewCollector(src)); err == nil || !strings.Contains(err.Error(), "map gone") {
		t.Errorf("a Stats error: gather %v, want it", err)
	}
	src.statsErr, src.xdp, src.costErr = nil, true, errors.New("cost map gone")
	fams, err = gather(t, NewCollector(src))
	if err == nil || !strings.Contains(err.Error(), "cost map gone") {
		t.Errorf("a cost map error: gather %v, want it", err)
	}
	if value(fams, "xgate_xdp_blocklist_entries", "state=live") != 2 {
		t.Error("a cost map error took the other XDP families with it")
	}
}
