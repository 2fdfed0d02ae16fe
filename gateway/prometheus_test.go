package gateway

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
)

// TestPrometheusScrapes runs Debian's prometheus on loopback with a
// temporary config and data dir; it scrapes two gateways on test hosts, one
// on the afxdp path and one on the socket path (both timing every XDP run),
// and PromQL over its HTTP API returns the event count and, as sane finite
// numbers, quantiles of the receive → verdict histogram (afxdp), of the
// XDP program's cost (both) and of the kernel queueing latency from the
// socket probe (socket path).
func TestPrometheusScrapes(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if out, ierr := exec.Command("../tools/install-deps.sh", "prometheus").CombinedOutput(); ierr != nil {
			t.Skipf("no prometheus binary and the Debian package cannot be installed: %v: %s", ierr, out)
		}
		if bin, err = exec.LookPath("prometheus"); err != nil {
			t.Skipf("prometheus package installed but no binary: %v", err)
		}
	}
	// Time every XDP run and every datagram at the socket (host receive
	// timestamps on, off by default): a few hundred datagrams fill the
	// histograms.
	everyOne := func(cfg *config.Config) {
		cfg.XDP.CostSample, cfg.Probes.Sample, cfg.Probes.RxTimestamps = 1, 1, true
	}
	pairX, gx, _ := runIT(t, 2, "afxdp", everyOne)
	pairS, gs, _ := runIT(t, 2, "socket", everyOne)

	dir := t.TempDir()
	promCfg := fmt.Sprintf("global: {scrape_interval: 200ms, evaluation_interval: 1s}\n"+
		"scrape_configs:\n  - job_name: xgate\n    static_configs:\n"+
		"      - {targets: [%q], labels: {gw: afxdp}}\n      - {targets: [%q], labels: {gw: socket}}\n",
		gx.HTTPAddr(), gs.HTTPAddr())
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(promCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	promAddr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	log, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start prometheus: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	})

	const n = 300
	for _, p := range itEvents(n) {
		for _, pair := range []*testenv.Pair{pairX, pairS} {
			if _, err := pair.A.SendUDP(netipAddrPortB(pair), p, 1); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(100 * time.Microsecond)
	}
	sx, ss := quiesce(t, gx, n), quiesce(t, gs, n)
	want := sx.Engine.Events + ss.Engine.Events
	if sx.Engine.Events == 0 || ss.Engine.Events == 0 {
		t.Fatalf("events decided: afxdp %d, socket %d", sx.Engine.Events, ss.Engine.Events)
	}

	// query returns the value of q's single result.
	query := func(q string) (float64, error) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var r struct {
			Status string
			Error  string
			Data   struct {
				Result []struct {
					Value [2]any
				}
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return 0, fmt.Errorf("%s: %w", resp.Status, err)
		}
		if r.Status != "success" || len(r.Data.Result) != 1 {
			return 0, fmt.Errorf("status %q (%s), %d results", r.Status, r.Error, len(r.Data.Result))
		}
		sv, _ := r.Data.Result[0].Value[1].(string)
		return strconv.ParseFloat(sv, 64)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := query("sum(xgate_events_total)")
		if err == nil && got == float64(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PromQL sum(xgate_events_total) = %v (%v), want %d", got, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Everything sent is in the last scrape of both gateways now.

	// sane: a quantile of a histogram with samples is a positive, finite
	// number of seconds below limit.
	sane := func(name, q string, limit float64) float64 {
		t.Helper()
		v, err := query(q)
		if err != nil || !(v > 0) || math.IsInf(v, 0) || v > limit {
			t.Errorf("PromQL %s: %s = %v (%v), want a finite value in (0, %gs]", name, q, v, err, limit)
		}
		return v
	}
	p99 := sane("p99 receive→verdict",
		`histogram_quantile(0.99, sum by (le) (xgate_receive_to_verdict_seconds_bucket{gw="afxdp"}))`, 10)
	costs := map[string]float64{}
	for _, gw := range []string{"afxdp", "socket"} {
		// Every run is timed: at least one per datagram sent.
		q := `sum(xgate_xdp_program_cost_seconds_count{gw="` + gw + `"})`
		if c, err := query(q); err != nil || c < n {
			t.Errorf("PromQL %s = %v (%v), want at least %d XDP runs timed", q, c, err, n)
		}
		costs[gw] = sane("p99 XDP program cost ("+gw+")",
			`histogram_quantile(0.99, sum by (le) (xgate_xdp_program_cost_seconds_bucket{gw="`+gw+`"}))`, 0.01)
	}
	t.Logf("prometheus: sum(xgate_events_total) = %d, p99 receive→verdict = %.6fs, p99 XDP cost afxdp %.0fns socket %.0fns",
		want, p99, costs["afxdp"]*1e9, costs["socket"]*1e9)

	if !gs.probeUp()[bpf.ProbeSockLatency] {
		t.Logf("socket latency probe not running, kernel queueing latency not checked: %v", gs.probesMissing)
		return
	}
	h, ok, err := gs.KernelLatency()
	if err != nil || !ok || h.Count == 0 {
		t.Fatalf("kernel latency histogram: %d samples (ok %v, %v), socket gateway received %d (no timestamp %d)",
			h.Count, ok, err, ss.Datagrams, h.NoTimestamp)
	}
	q := `sum(xgate_kernel_queue_latency_seconds_count{gw="socket"})`
	if c, err := query(q); err != nil || c != float64(h.Count) {
		t.Errorf("PromQL %s = %v (%v), want %d", q, c, err, h.Count)
	}
	kp99 := sane("p99 kernel queueing latency",
		`histogram_quantile(0.99, sum by (le) (xgate_kernel_queue_latency_seconds_bucket{gw="socket"}))`, 1)
	t.Logf("prometheus: p99 kernel queueing latency (socket) = %.6fs over %d datagrams", kp99, h.Count)
}

func netipAddrPortB(p *testenv.Pair) netip.AddrPort { return netip.AddrPortFrom(p.B.Addr, itPort) }
