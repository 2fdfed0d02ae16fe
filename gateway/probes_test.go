package gateway

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/bpf"
)

// TestKernelQueueLatency: on the socket path every datagram a worker
// receives went through the latency filter of its socket, so the kernel
// queueing histogram counts exactly the datagrams received, in Go and on
// /metrics.
func TestKernelQueueLatency(t *testing.T) {
	pair, g, stop := runIT(t, 2, "socket", nil)
	if !g.probeUp()[bpf.ProbeSockLatency] {
		t.Skipf("socket latency probe not running: %v", g.probesMissing)
	}
	const n = 500
	payload := []byte(`{"user_id":"u1","event_type":"click","amount":1}`)
	for sent := 0; sent < n; sent += 100 {
		if _, err := pair.A.SendUDP(netip.AddrPortFrom(pair.B.Addr, itPort), payload, 100); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // under the XDP bucket (burst 300)
	}
	s := quiesce(t, g, n)
	if s.Datagrams != n {
		t.Fatalf("workers received %d datagrams, %d sent (socket drops %d)", s.Datagrams, n, s.SocketDrops)
	}
	h, ok, err := g.KernelLatency()
	if err != nil || !ok {
		t.Fatalf("kernel latency: ok %v, %v", ok, err)
	}
	t.Logf("kernel queue latency: count %d sum %v no timestamp %d clock skew %d", h.Count, h.Sum, h.NoTimestamp, h.ClockSkew)
	if h.Count != s.Datagrams {
		t.Errorf("latency histogram counts %d, workers received %d (no timestamp %d, clock skew %d)",
			h.Count, s.Datagrams, h.NoTimestamp, h.ClockSkew)
	}
	if h.Count > 0 && (h.Sum <= 0 || h.Sum/time.Duration(h.Count) > time.Second) {
		t.Errorf("mean latency %v: implausible", h.Sum/time.Duration(max(h.Count, 1)))
	}
	fams := scrape(t, g)
	f := fams["xgate_kernel_queue_latency_seconds"]
	if f == nil || len(f.Metric) != 1 {
		t.Fatalf("xgate_kernel_queue_latency_seconds: %v", f)
	}
	if got := f.Metric[0].Histogram.GetSampleCount(); got != s.Datagrams {
		t.Errorf("/metrics latency count %d, workers received %d", got, s.Datagrams)
	}
	if v := metricValue(t, fams, "xgate_probe_up", "probe="+bpf.ProbeSockLatency); v != 1 {
		t.Errorf("xgate_probe_up{probe=sock_latency} = %v", v)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if g.probes == nil {
		return
	}
	// Closed with the gateway: reading now reports no probe.
	if _, ok, _ := g.KernelLatency(); ok {
		t.Error("kernel latency readable after stop")
	}
}

// TestProbesDisabled: probes.enabled: false loads none and says so.
func TestProbesDisabled(t *testing.T) {
	_, g, _ := runIT(t, 1, "socket", func(cfg *Config) { cfg.Probes.Enabled = false })
	if g.probes != nil {
		t.Fatal("probes loaded although disabled")
	}
	fams := scrape(t, g)
	for _, n := range probeNames {
		if v := metricValue(t, fams, "xgate_probe_up", "probe="+n); v != 0 {
			t.Errorf("xgate_probe_up{probe=%s} = %v, want 0", n, v)
		}
	}
	if fams["xgate_kernel_queue_latency_seconds"] != nil {
		t.Error("latency histogram exported without probes")
	}
	st, err := g.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Probes) != len(probeNames) {
		t.Fatalf("status probes %+v", st.Probes)
	}
	for _, p := range st.Probes {
		if p.Running || p.Reason != "disabled by probes.enabled: false" {
			t.Errorf("status probe %+v: want missing, disabled by probes.enabled: false", p)
		}
	}
	var b strings.Builder
	s := &Snapshot{Probes: st.Probes}
	if err := s.WriteText(&b, nil, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "probes:\n  "+probeNames[0]) || !strings.Contains(b.String(), "missing: disabled by probes.enabled: false") {
		t.Errorf("text lacks the probes:\n%s", b.String())
	}
}
