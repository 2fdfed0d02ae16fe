package deploy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xgate/xgate/testenv"
)

// dashboard is the part of deploy/grafana/xgate.json the tests read.
type dashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "grafana", "xgate.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("deploy/grafana/xgate.json: %v", err)
	}
	return d
}

// TestDashboardQueries runs every query of the Grafana dashboard against a
// real Prometheus that scraped a running gateway under load (socket path:
// the one where every panel has data, the kernel queueing probe included),
// and wants data from each.
func TestDashboardQueries(t *testing.T) {
	d := readDashboard(t)
	for _, want := range []string{"Accounting identity", "Unaccounted", "Verdicts", "XDP outcomes", "Drops at our sockets",
		"Receive → verdict", "Kernel queueing", "XDP program cost", "Worker busy", "Sinks", "State tables"} {
		found := false
		for _, p := range d.Panels {
			found = found || strings.Contains(p.Title, want)
		}
		if !found {
			t.Errorf("no panel titled %q", want)
		}
	}
	needRoot(t, "ip", "prometheus")
	bin := releaseBinary(t)
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	dir := sharedDir(t)
	pin := filepath.Join(mountBPFFS(t, dir), "xgate")
	cfgPath := filepath.Join(dir, "xgate.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf(`interface: %s
mode: socket
queues: 1
listen: {ports: [%d]}
http: {listen: "127.0.0.1:%d"}
pin: {path: %q}
sinks:
  - {name: passed, type: file, path: %q, what: passed, fsync: never}
rules:
  - {name: big-payment, when: event_type == "payment", action: alert}
  - name: per-user-rate
    rate_limit: {key: user_id, rate: 100/s, max_keys: 1024}
    action: drop
  - name: velocity
    window: {key: user_id, size: 60s, slide: 5s, agg: count, max_keys: 1024}
    when: value > 1000
    action: alert
`, pair.B.Link, capsPort, httpPort, pin, filepath.Join(dir, "passed.ndjson")))
	dmn := startDaemon(t, nil, "ip", "netns", "exec", pair.B.NS, bin, "run", "-c", cfgPath, "--pid-file", "")
	dmn.WaitReceiving(20 * time.Second)

	// Prometheus in the same namespace, scraping every second.
	promCfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(promCfg, fmt.Appendf(nil, `global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: xgate
    static_configs: [{targets: ["127.0.0.1:%d"]}]
`, httpPort), 0o644); err != nil {
		t.Fatal(err)
	}
	const promPort = 9090
	prom := exec.Command("ip", "netns", "exec", pair.B.NS, "prometheus", "--config.file="+promCfg,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort),
		"--log.level=warn")
	var promLog strings.Builder
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = prom.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = prom.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = prom.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("prometheus:\n%s", promLog.String())
		}
	})

	query := func(q string) ([]json.RawMessage, error) {
		resp, err := nsGet(pair.B, promPort, "/api/v1/query?query="+url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		_, body, ok := strings.Cut(resp, "\r\n\r\n")
		if !ok {
			return nil, fmt.Errorf("no HTTP body: %.200s", resp)
		}
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			return nil, fmt.Errorf("%v: %.300s", err, body)
		}
		if r.Status != "success" {
			return nil, fmt.Errorf("%s: %s", r.Status, r.Error)
		}
		return r.Data.Result, nil
	}

	// Load: 5 s of events from 200 users, some payments, while Prometheus scrapes.
	for i := 0; i < 50; i++ {
		typ := "click"
		if i%5 == 0 {
			typ = "payment"
		}
		sendEvents(t, pair, capsPort, i, typ, 40)
		time.Sleep(100 * time.Millisecond)
	}
	// At least five scrapes of the gateway in the last 10 s.
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := query(`count_over_time(up{job="xgate"}[10s]) >= 5 and up{job="xgate"} == 1`)
		if err == nil && len(res) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not scrape the gateway: %v %s", err, res)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Grafana's variables as a dashboard user would have them.
	expand := strings.NewReplacer("$__rate_interval", "10s", "$instance", ".*")
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			q := expand.Replace(tg.Expr)
			res, err := query(q)
			switch {
			case err != nil:
				t.Errorf("panel %q: %s: %v", p.Title, q, err)
			case len(res) == 0:
				t.Errorf("panel %q: %s: no data", p.Title, q)
			}
		}
	}
	if err := syscall.Kill(dmn.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := dmn.WaitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}
