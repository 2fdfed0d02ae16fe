package gateway

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/metrics"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
)

// sockLatencyRun runs the gateway on the socket path (2 queues) with the
// socket latency probe sampling one datagram in sample (rx_timestamps on),
// skipping the test when the probe is not running, and sends it n
// datagrams, 100 at a time under the XDP bucket; it returns once the
// workers have received all of them, with their stats.
func sockLatencyRun(t *testing.T, sample, n int) (*Gateway, func() error, metrics.Stats) {
	t.Helper()
	pair, g, stop := runIT(t, 2, "socket", func(cfg *config.Config) { cfg.Probes.Sample, cfg.Probes.RxTimestamps = sample, true })
	if !g.probeUp()[bpf.ProbeSockLatency] {
		t.Skipf("socket latency probe not running: %v", g.probesMissing)
	}
	payload := []byte(`{"user_id":"u1","event_type":"click","amount":1}`)
	for sent := 0; sent < n; sent += 100 {
		if _, err := pair.A.SendUDP(netip.AddrPortFrom(pair.B.Addr, itPort), payload, 100); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // under the XDP bucket (burst 300)
	}
	s := quiesce(t, g, uint64(n))
	if s.Datagrams != uint64(n) {
		t.Fatalf("workers received %d datagrams, %d sent (socket drops %d)", s.Datagrams, n, s.SocketDrops)
	}
	return g, stop, s
}

// TestKernelQueueLatency: on the socket path every datagram a worker
// receives went through the latency filter of its socket, so with
// probes.sample 1 the kernel queueing histogram counts exactly the
// datagrams received, in Go and on /metrics.
func TestKernelQueueLatency(t *testing.T) {
	g, stop, s := sockLatencyRun(t, 1, 500)
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
	// Receive → verdict: at most one sample per batch, each a stamped one.
	var e2e, noStamp uint64
	for _, c := range g.Latency() {
		e2e += c
	}
	for _, sk := range g.sockets {
		noStamp += sk.noStamp.Load()
	}
	t.Logf("receive → verdict: %d samples, %d without timestamp", e2e, noStamp)
	if e2e == 0 || e2e+noStamp > s.Datagrams {
		t.Errorf("receive → verdict samples %d (+%d without timestamp) of %d datagrams", e2e, noStamp, s.Datagrams)
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
	_, g, _ := runIT(t, 1, "socket", func(cfg *config.Config) { cfg.Probes.Enabled = false })
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
}

// TestKernelQueueLatencySampled: with a sampling period the filter times
// one datagram in probes.sample per CPU, so the histogram holds
// datagrams/N samples, give or take one per CPU, and the receive → verdict
// histogram at most one per N datagrams per socket.
func TestKernelQueueLatencySampled(t *testing.T) {
	const n, period = 800, 8
	g, _, _ := sockLatencyRun(t, period, n)
	st, err := g.probes.ReadStats()
	if err != nil {
		t.Fatal(err)
	}
	h, ok, err := g.KernelLatency()
	if err != nil || !ok {
		t.Fatalf("kernel latency: ok %v, %v", ok, err)
	}
	cpus := uint64(runtime.NumCPU())
	t.Logf("filter saw %d, sampled %d: histogram %d, no timestamp %d, clock skew %d", st.SockPackets, st.SockSampled, h.Count, h.NoTimestamp, h.ClockSkew)
	if st.SockPackets != n {
		t.Errorf("filter saw %d packets, workers received %d", st.SockPackets, n)
	}
	if st.SockSampled > n/period || st.SockSampled+cpus <= n/period {
		t.Errorf("sampled %d of %d packets, want %d (−%d: one partial period per CPU)", st.SockSampled, n, n/period, cpus-1)
	}
	if h.Count+h.NoTimestamp+h.ClockSkew != st.SockSampled {
		t.Errorf("histogram %d + no timestamp %d + clock skew %d != sampled %d", h.Count, h.NoTimestamp, h.ClockSkew, st.SockSampled)
	}
	var e2e uint64
	for _, c := range g.Latency() {
		e2e += c
	}
	if e2e == 0 || e2e > n/period {
		t.Errorf("receive → verdict samples %d of %d datagrams, want 1..%d", e2e, n, n/period)
	}
}

// TestSocketLatencySampling: receive → verdict sampling on one socket,
// read one datagram at a time, is deterministic: after every N datagrams
// the next one is timed, and recorded at the following recv.
func TestSocketLatencySampling(t *testing.T) {
	s, tx, dst := latencyTestSocket(t)
	const period, n = 4, 100
	s.startLatency(period)
	time.Sleep(20 * time.Millisecond) // host receive timestamping turns on from a work queue
	b := newBatch(1, 2048)
	for i := range n {
		if err := unix.Sendto(tx, []byte{byte(i)}, 0, dst); err != nil {
			t.Fatal(err)
		}
		if got, err := s.recv(b); err != nil || got != 1 || b.bufs[0][0] != byte(i) {
			t.Fatalf("datagram %d: recv %d, %v", i, got, err)
		}
	}
	if got, err := s.recv(b); err != nil || got != 0 { // records the last sample, then times out
		t.Fatalf("recv on an empty socket: %d, %v", got, err)
	}
	var count uint64
	h := s.latencyCounts()
	for _, c := range h {
		count += c
	}
	noStamp := s.noStamp.Load()
	t.Logf("%d datagrams, period %d: %d timed, %d without timestamp, histogram %v", n, period, count, noStamp, h)
	// Datagrams 5, 10, … are sampled: the 4 before each leave the countdown at 0.
	if want := uint64(n / (period + 1)); count+noStamp != want {
		t.Errorf("%d timed + %d without timestamp, want %d samples", count, noStamp, want)
	}
	if count == 0 {
		t.Error("no datagram carried a receive timestamp")
	}
	// Over a second from loopback to here means mixed clocks or units, not
	// a slow machine (a loaded CI host does take milliseconds at times).
	for i := 20; i < LatencyBuckets; i++ {
		if h[i] != 0 {
			t.Errorf("bucket %d (≤ 2^%d µs): %d samples", i, i, h[i])
		}
	}
}

// TestSocketLatencySplitBatch: a sampled batch is read in two parts around
// the sample; together they are the whole queue, in order, in place.
func TestSocketLatencySplitBatch(t *testing.T) {
	s, tx, dst := latencyTestSocket(t)
	s.startLatency(1)
	b := newBatch(64, 2048)
	for round := range 20 {
		const k = 40
		for i := range k {
			if err := unix.Sendto(tx, []byte{byte(round), byte(i)}, 0, dst); err != nil {
				t.Fatal(err)
			}
		}
		sampled := s.until <= 0
		got, err := s.recv(b)
		if err != nil || got != k {
			t.Fatalf("round %d (sampled %v): recv %d of %d, %v", round, sampled, got, k, err)
		}
		for i := range got {
			if b.lens[i] != 2 || b.bufs[i][0] != byte(round) || b.bufs[i][1] != byte(i) {
				t.Fatalf("round %d (sampled %v): message %d holds %v", round, sampled, i, b.bufs[i][:b.lens[i]])
			}
		}
	}
	if got, err := s.recv(b); err != nil || got != 0 {
		t.Fatalf("recv on an empty socket: %d, %v", got, err)
	}
	var count uint64
	for _, c := range s.latencyCounts() {
		count += c
	}
	// Period 1: every other batch is sampled (a sample resets the countdown).
	if count+s.noStamp.Load() != 10 {
		t.Errorf("%d timed + %d without timestamp, want 10 samples", count, s.noStamp.Load())
	}
}

// TestSocketLatencyNoAllocs: a sampled recv allocates nothing.
func TestSocketLatencyNoAllocs(t *testing.T) {
	s, tx, dst := latencyTestSocket(t)
	s.startLatency(1)
	b := newBatch(8, 2048)
	payload := []byte("x")
	allocs := testing.AllocsPerRun(200, func() {
		for range 4 {
			if err := unix.Sendto(tx, payload, 0, dst); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.recv(b); err != nil || n == 0 {
			t.Fatalf("recv %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per recv", allocs)
	}
}

// latencyTestSocket opens a loopback UDP socket and a sender to it.
func latencyTestSocket(t testing.TB) (*udpSocket, int, unix.Sockaddr) {
	t.Helper()
	s, err := openUDP(netip.MustParseAddrPort("127.0.0.1:0"), false, 1<<20, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	dst, err := unix.Getsockname(s.fd)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(tx) })
	return s, tx, dst
}

// TestProbesSampledDefaults: with the default probes the filter runs
// sampled and counts every datagram, and the sockets sample receive →
// verdict one datagram in DefaultProbeSample; with probes.rx_timestamps
// false the gateway leaves host timestamping alone and samples nothing.
func TestProbesSampledDefaults(t *testing.T) {
	for _, rxts := range []bool{true, false} {
		t.Run(fmt.Sprintf("rx_timestamps=%v", rxts), func(t *testing.T) {
			pair, g, _ := runIT(t, 2, "socket", func(cfg *config.Config) {
				cfg.Probes = config.Default().Probes
				cfg.Probes.RxTimestamps = rxts
			})
			if !g.probeUp()[bpf.ProbeSockLatency] {
				t.Skipf("socket latency probe not running: %v", g.probesMissing)
			}
			// In rounds of 300, each received before the next is sent: a
			// burst of them all overflows the veth's ring.
			const round, n = 300, 4 * 300
			var s metrics.Stats
			for sent := round; sent <= n; sent += round {
				if _, err := pair.A.SendUDP(netip.AddrPortFrom(pair.B.Addr, itPort), []byte(`{"user_id":"u1","event_type":"click","amount":1}`), round); err != nil {
					t.Fatal(err)
				}
				s = quiesce(t, g, uint64(sent))
			}
			if s.Datagrams < 2*config.DefaultProbeSample {
				t.Fatalf("workers received %d of %d datagrams", s.Datagrams, n)
			}
			st, err := g.probes.ReadStats()
			if err != nil {
				t.Fatal(err)
			}
			if st.SockPackets != s.Datagrams || st.SockSampled > s.Datagrams/config.DefaultProbeSample {
				t.Errorf("filter saw %d and sampled %d of %d datagrams (period %d)", st.SockPackets, st.SockSampled, s.Datagrams, config.DefaultProbeSample)
			}
			want := 0
			if rxts {
				want = config.DefaultProbeSample
			}
			for i, sk := range g.sockets {
				if sk.every != want {
					t.Errorf("socket %d samples receive → verdict every %d, want %d (rx_timestamps %v)", i, sk.every, want, rxts)
				}
			}
			if h := g.Latency(); !rxts && h != [LatencyBuckets]uint64{} {
				t.Errorf("receive → verdict histogram %v without probes.rx_timestamps", h)
			}
		})
	}
}
