package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/sink"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/metrics"
	"github.com/xgate/xgate/gateway/metrics/metricstest"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/testenv"
)

// httpGet fetches a path of the gateway's HTTP server.
func httpGet(t testing.TB, g *Gateway, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+g.HTTPAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok := g.httpToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, b
}

// waitReady waits for Run to bind the HTTP server and start receiving.
func waitReady(t testing.TB, g *Gateway) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !g.ready() {
		if time.Now().After(deadline) {
			t.Fatal("gateway not ready within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func scrape(t testing.TB, g *Gateway) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(t, g, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue finds the sample of family name whose labels include want
// ("k=v" pairs); for a histogram it returns the sample count.
func metricValue(t testing.TB, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	v, ok := metricstest.Value(fams, name, want...)
	if !ok {
		t.Fatalf("no sample %s%v", name, want)
	}
	return v
}

// sumFamily sums a family's samples (histogram: counts).
func sumFamily(fams map[string]*dto.MetricFamily, name string) float64 {
	var s float64
	if f := fams[name]; f != nil {
		for _, m := range f.Metric {
			switch {
			case m.Counter != nil:
				s += m.Counter.GetValue()
			case m.Gauge != nil:
				s += m.Gauge.GetValue()
			case m.Histogram != nil:
				s += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return s
}

// quiesce waits until everything sent is accounted for and two readings of
// Stats a little apart agree, and returns the last.
func quiesce(t testing.TB, g *Gateway, sent uint64) metrics.Stats {
	t.Helper()
	var prev metrics.Stats
	deadline := time.Now().Add(5 * time.Second)
	for {
		time.Sleep(50 * time.Millisecond)
		s, err := g.Stats()
		if err != nil {
			t.Fatal(err)
		}
		s.Uptime = 0
		if s.Accounted() >= sent && reflect.DeepEqual(s, prev) {
			return s
		}
		if time.Now().After(deadline) {
			t.Logf("counts did not settle: accounted %d of %d sent", s.Accounted(), sent)
			return s
		}
		prev = s
	}
}

func TestHTTPMetricsStatus(t *testing.T) {
	for _, mode := range []string{"afxdp", "socket"} {
		t.Run(mode, func(t *testing.T) { runHTTPMetrics(t, mode) })
	}
}

func runHTTPMetrics(t *testing.T, mode string) {
	// A named sink beside runIT's (its name is its label; the other's is
	// derived from what it writes to).
	pair, g, stop := runIT(t, 2, mode, func(c *config.Config) {
		c.Sinks = append(c.Sinks, sink.Spec{Name: "audit", Type: "file", Path: filepath.Join(t.TempDir(), "alerts.ndjson"),
			What: "alerts", Fsync: "never"})
	})
	if code, _ := httpGet(t, g, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d", code)
	}
	if code, _ := httpGet(t, g, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d while receiving", code)
	}

	tr := &itTraffic{payloads: itEvents(400)}
	sendMix(t, pair.A, pair.B, tr, func() {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			if s, _ := g.Stats(); s.Feedback.Applied > 0 {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("block verdict not applied within 3s")
	})
	s := quiesce(t, g, tr.sent)
	fams := scrape(t, g)
	promtoolCheckMetrics(t, g)
	after, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	after.Uptime = 0
	if !reflect.DeepEqual(s, after) {
		t.Fatalf("counts moved during the scrape:\n%+v\n%+v", s, after)
	}

	// Every documented family is present (those of the other path aside).
	absent := map[string]bool{}
	if mode == "afxdp" {
		absent["xgate_socket_drops_total"] = true
	} else {
		for _, n := range metrics.Names() { // every AF_XDP family
			if strings.HasPrefix(n, "xgate_afxdp_") {
				absent[n] = true
			}
		}
	}
	// The probes' counters have series only once something happened; the
	// latency histogram only where sockets receive.
	optional := map[string]bool{"xgate_kernel_drops_total": true, "xgate_xdp_redirect_errors_total": true,
		"xgate_xdp_exceptions_total": true}
	for _, n := range metrics.Names() { // series per enrichment list, per spool: none without
		if strings.HasPrefix(n, "xgate_list_") || strings.HasPrefix(n, "xgate_sink_spool_") {
			optional[n] = true
		}
	}
	if mode == "afxdp" {
		absent["xgate_kernel_queue_latency_seconds"] = true
	} else if !g.probeUp()[bpf.ProbeSockLatency] {
		optional["xgate_kernel_queue_latency_seconds"] = true
	}
	for _, n := range append(metrics.Names(), "go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total",
		"process_resident_memory_bytes", "promhttp_metric_handler_errors_total") {
		if _, ok := fams[n]; ok == absent[n] && !optional[n] {
			t.Errorf("metric family %s: present %v, want %v", n, ok, !absent[n])
		}
	}

	// Counters equal Stats.
	eq := func(what string, got float64, want uint64) {
		t.Helper()
		if got != float64(want) {
			t.Errorf("%s = %v, Stats says %d", what, got, want)
		}
	}
	for r := bpf.Reason(0); r < bpf.ReasonMax; r++ {
		if r.Terminal() {
			eq("xdp packets "+r.String(), metricValue(t, fams, "xgate_xdp_packets_total", "reason="+r.String()), s.XDP[r].Packets)
			eq("xdp bytes "+r.String(), metricValue(t, fams, "xgate_xdp_bytes_total", "reason="+r.String()), s.XDP[r].Bytes)
		} else {
			eq("xdp event "+r.String(), metricValue(t, fams, "xgate_xdp_events_total", "event="+r.String()), s.XDP[r].Packets)
		}
	}
	eq("xdp seen", metricValue(t, fams, "xgate_xdp_seen_packets_total"), s.XDPSeen)
	eq("build info", metricValue(t, fams, "xgate_build_info", "goversion="+runtime.Version(), "version="+g.version(),
		"revision="+revision()), 1)
	eq("datagrams", sumFamily(fams, "xgate_datagrams_total"), s.Datagrams)
	eq("socket drops", sumFamily(fams, "xgate_socket_drops_total"), s.SocketDrops)
	eq("ring drops", sumFamily(fams, "xgate_afxdp_ring_drops_total"), s.RingDrops)
	eq("frames", metricValue(t, fams, "xgate_engine_frames_total"), s.Engine.Frames)
	for a := engine.Action(0); a < engine.NumActions; a++ {
		eq("verdict "+a.String(), metricValue(t, fams, "xgate_events_total", "verdict="+a.String()), s.Engine.Verdicts[a])
	}
	for k := engine.DecodeError(1); k < engine.NumDecodeErrors; k++ {
		eq("decode "+k.String(), metricValue(t, fams, "xgate_decode_errors_total", "kind="+k.String()), s.Engine.DecodeErrors[k])
	}
	for _, r := range s.Engine.Rules {
		eq("rule "+r.Name, metricValue(t, fams, "xgate_rule_fired_total", "rule="+r.Name, "action="+r.Action.String()), r.Fired)
		if l := r.Limiter; l != nil {
			eq("ratelimit keys "+r.Name, metricValue(t, fams, "xgate_rule_ratelimit_keys", "rule="+r.Name), l.Keys)
			eq("ratelimit limited "+r.Name, metricValue(t, fams, "xgate_rule_ratelimit_decisions_total", "rule="+r.Name, "result=limited"), l.Limited)
			eq("ratelimit evictions "+r.Name, metricValue(t, fams, "xgate_rule_ratelimit_evictions_total", "rule="+r.Name), l.Evictions)
		}
		if w := r.Window; w != nil {
			eq("window keys "+r.Name, metricValue(t, fams, "xgate_rule_window_keys", "rule="+r.Name), w.Keys)
			eq("window evictions "+r.Name, metricValue(t, fams, "xgate_rule_window_evictions_total", "rule="+r.Name), w.Evictions)
		}
	}
	eq("block requests", metricValue(t, fams, "xgate_feedback_block_requests_total"), s.Feedback.Requested)
	eq("blocks applied", metricValue(t, fams, "xgate_feedback_blocks_total", "result=applied"), s.Feedback.Applied)
	if live := metricValue(t, fams, "xgate_xdp_blocklist_entries", "state=live"); live < 1 {
		t.Errorf("blocklist live entries %v, want the bot's source", live)
	}
	if len(s.Sinks) != 2 || s.Sinks[1].Name != "audit" || s.Sinks[0].Name != g.Config().Sinks[0].Label() || s.Sinks[0].Name == "" {
		t.Errorf("sink labels: %+v, want runIT's derived label and audit", s.Sinks)
	}
	if metricValue(t, fams, "xgate_sink_records_total", "sink=audit") == 0 {
		t.Error("the named sink wrote no alerts")
	}
	for _, sk := range s.Sinks {
		eq("sink records "+sk.Name, metricValue(t, fams, "xgate_sink_records_total", "sink="+sk.Name), sk.Records)
		eq("sink bytes "+sk.Name, metricValue(t, fams, "xgate_sink_bytes_total", "sink="+sk.Name), sk.Bytes)
	}
	for _, tm := range metrics.AccountingOf(&s).Terms() {
		eq("accounting "+tm.Name, metricValue(t, fams, "xgate_accounting_total", "term="+tm.Name), tm.V)
	}
	if got, want := sumFamily(fams, "xgate_accounting_total"), float64(tr.sent); got != want {
		t.Errorf("accounting terms sum to %v, %v sent", got, want)
	}
	// Receive → verdict on both paths (afxdp: every frame; socket: sampled),
	// with an exact sum: within the bounds its buckets allow.
	lat := fams["xgate_receive_to_verdict_seconds"]
	var n uint64
	for _, m := range lat.Metric {
		h := m.Histogram
		n += h.GetSampleCount()
		var prev uint64
		var lo, hi float64           // the least and the most the sum can be
		for _, b := range h.Bucket { // cumulative, bounds 2^i µs
			if b.GetCumulativeCount() < prev {
				t.Errorf("latency buckets not cumulative: %v", h.Bucket)
			}
			in := float64(b.GetCumulativeCount() - prev)
			hi += in * b.GetUpperBound()
			if b.GetUpperBound() > 1.5e-6 {
				lo += in * b.GetUpperBound() / 2
			}
			prev = b.GetCumulativeCount()
		}
		if prev != h.GetSampleCount() { // observations past the last bound
			hi = math.Inf(1)
		}
		if sum := h.GetSampleSum(); sum < lo || sum > hi {
			t.Errorf("latency sum %v s outside [%v, %v] its buckets allow", sum, lo, hi)
		}
	}
	var want uint64
	for _, c := range g.Latency() {
		want += c
	}
	if n != want || n > s.Datagrams || mode == "afxdp" && n == 0 {
		t.Errorf("latency histogram holds %d frames, Latency %d, %d datagrams", n, want, s.Datagrams)
	}
	if mode == "afxdp" {
		var received float64
		for q := range st0Workers(fams) {
			received += metricValue(t, fams, "xgate_afxdp_received_frames_total", "queue="+q)
		}
		if received != float64(s.Datagrams) {
			t.Errorf("afxdp sockets received %v frames, workers %d datagrams", received, s.Datagrams)
		}
	}
	if c := fams["xgate_xdp_program_cost_seconds"].Metric[0].Histogram.GetSampleCount(); c == 0 {
		t.Error("xdp program cost histogram is empty (cost_sample 64)")
	}

	// promlint finds nothing in our families.
	problems, err := testutil.CollectAndLint(g.Collector())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// /status matches Stats.
	code, body := httpGet(t, g, "/status")
	if code != http.StatusOK {
		t.Fatalf("/status %d: %s", code, body)
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	wantAcc := metrics.AccountingOf(&s)
	if st.Accounting.Identity.String() != mode || st.Accounting.Unaccounted != 0 {
		t.Errorf("/status accounting: identity %q, unaccounted %d: want %s, 0", st.Accounting.Identity, st.Accounting.Unaccounted, mode)
	}
	if st.Accounting != wantAcc {
		t.Errorf("/status accounting %+v, want %+v", st.Accounting, wantAcc)
	}
	if st.Accounting.Accounted != tr.sent {
		t.Errorf("/status accounted %d, sent %d", st.Accounting.Accounted, tr.sent)
	}
	if st.Path.String() != mode || st.Interface != pair.B.Link || st.XDPMode == "" || st.Why == "" || !st.Ready ||
		st.RxQueues != 2 || len(st.Workers) == 0 || st.Rules.Count != len(g.Config().Rules) || len(st.Sinks) != 2 ||
		st.UptimeSeconds <= 0 || st.Version == "" || st.Rules.Hash == "" {
		t.Errorf("/status: %s", body)
	}
	// Every probe is listed, running as xgate_probe_up says, or missing
	// with a reason (afxdp: the socket latency probe is skipped).
	up := g.probeUp()
	if len(st.Probes) != len(probeNames) {
		t.Errorf("/status probes %+v, want %d", st.Probes, len(probeNames))
	}
	for _, p := range st.Probes {
		if p.Running != up[p.Name] || (!p.Running && p.Reason == "") || (p.Running && p.Reason != "") {
			t.Errorf("/status probe %+v, probe_up %v", p, up[p.Name])
		}
		if mode == "afxdp" && p.Name == bpf.ProbeSockLatency && (p.Running || !strings.Contains(p.Reason, "skipped")) {
			t.Errorf("/status probe %+v: want skipped on the afxdp path", p)
		}
	}
	if mode == "afxdp" {
		for _, w := range st.Workers {
			if w.Bind != "copy" { // veth offers copy mode only
				t.Errorf("/status worker %+v: want bind copy on veth", w)
			}
		}
	}
	for a := engine.Action(0); a < engine.NumActions; a++ {
		if st.Verdicts[a.String()] != s.Engine.Verdicts[a] {
			t.Errorf("/status verdicts %v, Stats %v", st.Verdicts, s.Engine.Verdicts)
		}
	}
	// pprof shows the command line and memory: not without a token.
	if code, _ := httpGet(t, g, "/debug/pprof/cmdline"); code != http.StatusForbidden {
		t.Errorf("/debug/pprof/cmdline without http.token: %d, want 403", code)
	}

	// Stop shuts the server down.
	addr := g.HTTPAddr()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("HTTP still answers after Stop: %s", resp.Status)
	}
}

// An empty http.listen runs no server (plain path: no interface, no BPF).
func TestHTTPDisabled(t *testing.T) {
	cfg := config.Default()
	cfg.Listen.Ports = []uint16{freeUDPPort(t)}
	cfg.Listen.Address = "127.0.0.1"
	cfg.HTTP.Listen = ""
	cfg.Pin.Path = ""
	g, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)), RecvTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	time.Sleep(100 * time.Millisecond)
	if a := g.HTTPAddr(); a != "" {
		t.Errorf("HTTPAddr %q with http.listen empty", a)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func freeUDPPort(t testing.TB) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// BenchmarkScrape measures one /metrics call of an afxdp gateway with two
// queues, five rules and one sink after some traffic: every BPF map and
// socket statistic is read per call.
//
//	go test -run '^$' -bench Scrape -benchtime 2s ./gateway/
func BenchmarkScrape(b *testing.B) {
	pair := testenv.New(b, testenv.Options{RxQueues: 2})
	dir := b.TempDir()
	cfg := itConfig(b, pair.B.Link, "afxdp", filepath.Join(dir, "passed.ndjson"))
	cfg.HTTP.Listen = "127.0.0.1:0"
	g, _ := startGateway(b, pair.B, cfg)
	waitReady(b, g)
	for _, p := range itEvents(200) {
		if _, err := pair.A.SendUDP(netip.AddrPortFrom(pair.B.Addr, itPort), p, 1); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	url := "http://" + g.HTTPAddr() + "/metrics"
	client := &http.Client{}
	var size int
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
		size = int(n)
	}
	b.ReportMetric(float64(size), "bytes/scrape")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/scrape")
}

// st0Workers lists the queue labels of xgate_datagrams_total.
func st0Workers(fams map[string]*dto.MetricFamily) map[string]bool {
	out := map[string]bool{}
	for _, m := range fams["xgate_datagrams_total"].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == "queue" {
				out[l.GetValue()] = true
			}
		}
	}
	return out
}

// TestHTTPTokenReload: /tap and pprof are refused without a token; a
// reload that sets the token applies at once (requests without it get
// 401, with it pprof answers), one that turns pprof off applies at once
// too, and profile lengths are bounded.
func TestHTTPTokenReload(t *testing.T) {
	_, g, _ := runIT(t, 1, "socket", nil)
	if code, _ := httpGet(t, g, "/tap"); code != http.StatusForbidden {
		t.Errorf("/tap without a token: %d, want 403", code)
	}
	cfg := *g.Config()
	cfg.HTTP.Token = "reload-test-token-0123456789"
	if err := g.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + g.HTTPAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/status without the new token: %d, want 401", resp.StatusCode)
	}
	if code, _ := httpGet(t, g, "/debug/pprof/cmdline"); code != http.StatusOK {
		t.Errorf("pprof with the new token: %d, want 200", code)
	}
	if code, _ := httpGet(t, g, "/debug/pprof/profile?seconds=3600"); code != http.StatusBadRequest {
		t.Errorf("an hour-long profile: %d, want 400", code)
	}
	off := cfg
	off.HTTP.Pprof = false
	if err := g.Reload(&off); err != nil {
		t.Fatal(err)
	}
	if code, _ := httpGet(t, g, "/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Errorf("pprof after http.pprof: false: %d, want 404", code)
	}
	if code, _ := httpGet(t, g, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
}

// promtoolCheckMetrics runs `promtool check metrics` (Prometheus's linter:
// names, units, suffixes, help texts) on the gateway's /metrics.
func promtoolCheckMetrics(t *testing.T, g *Gateway) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("no promtool (make test installs the prometheus package): /metrics not linted")
		return
	}
	code, body := httpGet(t, g, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestHTTPUnixSocket: with http.listen unix:/path the socket is created
// 0660, /tap, pprof and blocklist changes answer without a token (the
// file permissions admit the client), and another user is refused by the
// kernel. A stale socket is replaced; a live one or a file is not.
func TestHTTPUnixSocket(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // others may reach the socket; its own mode decides
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "http.sock")
	_, _, stop := runIT(t, 1, "socket", func(c *config.Config) { c.HTTP.Listen = "unix:" + sock; c.HTTP.Token = "" })
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket %s: mode %v, want a socket 0660", sock, fi.Mode())
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}, Timeout: 5 * time.Second}
	do := func(method, path string) int {
		t.Helper()
		req, err := http.NewRequest(method, "http://xgate"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close() // /tap: the status is enough
		return resp.StatusCode
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/status", 200},
		{"GET", "/tap?rate=10", 200},
		{"GET", "/debug/pprof/cmdline", 200},
		{"POST", "/blocklist?addr=198.18.77.1&ttl=5s", 204},
		{"DELETE", "/blocklist?addr=198.18.77.1", 204},
	} {
		if got := do(c.method, c.path); got != c.want {
			t.Errorf("%s %s over the unix socket: %d, want %d", c.method, c.path, got, c.want)
		}
	}
	// Another user: connect(2) needs write permission on the socket.
	errc := make(chan error, 1)
	errc <- testenv.AsUser(65534, func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Connect(fd, &unix.SockaddrUnix{Name: sock})
	})
	if err := <-errc; !errors.Is(err, unix.EACCES) {
		t.Errorf("connect as uid 65534: %v, want EACCES", err)
	}

	// A live socket is not taken over; a file is not removed.
	if _, err := listenUnix(sock); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("listen on a served socket: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenUnix(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listen on a file: %v", err)
	}
	// A stale socket (no one listening) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = listenUnix(stale)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()
	// A clean stop removes the socket it made.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after the stop: %v", err)
	}
}

// The probes work on any gateway value; readiness follows the flag Run sets.
func TestHealthAndReadyHandlers(t *testing.T) {
	g := &Gateway{}
	h := &httpServer{}
	mux := g.httpHandler(h)
	get := func(path string) int {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code
	}
	if c := get("/healthz"); c != http.StatusOK {
		t.Errorf("/healthz %d", c)
	}
	if c := get("/readyz"); c != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready: %d, want 503", c)
	}
	h.ready.Store(true)
	if c := get("/readyz"); c != http.StatusOK {
		t.Errorf("/readyz when ready: %d, want 200", c)
	}
	// No config (so no http.token, no http.pprof): pprof is off.
	if c := get("/debug/pprof/"); c != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without a config: %d, want 404", c)
	}
	// net/http/pprof's init registers on http.DefaultServeMux too, which
	// xgate never serves: the server's handler is its own mux.
	if http.Handler(mux) == http.DefaultServeMux {
		t.Error("the HTTP handler is http.DefaultServeMux")
	}
}

func TestHTTPPprofSwitchAndToken(t *testing.T) {
	get := func(h http.Handler, path, auth string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	g := &Gateway{}
	cfg := config.Default()
	cfg.HTTP.Pprof = false
	g.cfg.Store(cfg)
	if c := get(g.httpHandler(&httpServer{}), "/debug/pprof/", ""); c != http.StatusNotFound {
		t.Errorf("http.pprof false: /debug/pprof/ %d, want 404", c)
	}
	if c := get(g.httpHandler(&httpServer{}), "/debug/trace", ""); c != http.StatusNotFound {
		t.Errorf("http.pprof false: /debug/trace %d, want 404", c)
	}

	cfg = config.Default()
	cfg.HTTP.Token = "0123456789abcdef-secret"
	g.cfg.Store(cfg)
	h := g.httpHandler(&httpServer{})
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/debug/pprof/", "", http.StatusUnauthorized},
		{"/debug/pprof/", "Bearer wrong", http.StatusUnauthorized},
		{"/debug/pprof/", "0123456789abcdef-secret", http.StatusUnauthorized},
		{"/debug/pprof/", "Bearer 0123456789abcdef-secret", http.StatusOK},
		{"/metrics", "", http.StatusUnauthorized},
		{"/status", "", http.StatusUnauthorized},
		{"/healthz", "", http.StatusOK},
		{"/readyz", "", http.StatusServiceUnavailable}, // not ready, but not refused for the token
	} {
		if c := get(h, tc.path, tc.auth); c != tc.want {
			t.Errorf("%s with %q: %d, want %d", tc.path, tc.auth, c, tc.want)
		}
	}
}
