package gateway

import (
	"encoding/json"
	"fmt"
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

	"github.com/xgate/xgate/testenv"
)

// TestPrometheusScrapes runs Debian's prometheus on loopback with a
// temporary config and data dir; it scrapes a gateway on a test host, and
// PromQL over its HTTP API returns the event count and a latency quantile.
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
	pair, g, _ := runIT(t, 2, "afxdp", nil)

	dir := t.TempDir()
	promCfg := fmt.Sprintf("global: {scrape_interval: 200ms, evaluation_interval: 1s}\n"+
		"scrape_configs:\n  - job_name: xgate\n    static_configs: [{targets: [%q]}]\n", g.HTTPAddr())
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
		if _, err := pair.A.SendUDP(netipAddrPortB(pair), p, 1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	s := quiesce(t, g, n)
	want := s.Engine.Events
	if want == 0 {
		t.Fatal("no events decided")
	}

	query := func(q string) (float64, bool) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		var r struct {
			Status string
			Data   struct {
				Result []struct {
					Value [2]any
				}
			}
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) != 1 {
			return 0, false
		}
		sv, _ := r.Data.Result[0].Value[1].(string)
		v, err := strconv.ParseFloat(sv, 64)
		return v, err == nil
	}
	deadline := time.Now().Add(20 * time.Second)
	var got float64
	for {
		var ok bool
		if got, ok = query("sum(xgate_events_total)"); ok && got == float64(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PromQL sum(xgate_events_total) = %v, want %d", got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	p99, ok := query("histogram_quantile(0.99, sum by (le) (xgate_receive_to_verdict_seconds_bucket))")
	if !ok || !(p99 > 0) || p99 > 10 {
		t.Errorf("PromQL p99 receive→verdict = %v (ok %v), want a positive number of seconds", p99, ok)
	}
	t.Logf("prometheus: sum(xgate_events_total) = %v, p99 receive→verdict = %.6fs", got, p99)
}

func netipAddrPortB(p *testenv.Pair) netip.AddrPort { return netip.AddrPortFrom(p.B.Addr, itPort) }
