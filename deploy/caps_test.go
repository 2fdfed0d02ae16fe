package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/testenv"
)

const (
	capsPort = 9000 // UDP port of the test events
	httpPort = 9717 // the daemon's HTTP inside the test host's namespace (the packaged default)
)

// capsConfig is a config for the test host's link: the UMEM of one queue
// (4 MiB) fits the default RLIMIT_MEMLOCK (8 MiB), as LimitMEMLOCK= of the
// unit would allow more; rules are appended as given.
func capsConfig(link, mode, sink, pin, rules string) string {
	return fmt.Sprintf(`interface: %s
mode: %s
queues: 1
listen: {ports: [%d]}
afxdp: {frame_size: 2048, rx_ring: 1024, fill_ring: 1024, frames: 2048}
http: {listen: "127.0.0.1:%d"}
sinks:
  - {type: file, path: %q, what: passed, fsync: never}
pin: {path: %q}
rules:
  - {name: keep, when: event_type == "never", action: drop}
%s`, link, mode, capsPort, httpPort, sink, pin, rules)
}

// blockRule blocks the source of an "attack" event in XDP (the feedback
// path: a map update through the fd the daemon holds).
const blockRule = "  - {name: attackers, when: event_type == \"attack\", action: block 30s}\n"

func writeConfig(t *testing.T, path, yml string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(path, []byte(yml)); err != nil {
		t.Fatalf("the test's config: %v", err)
	}
}

// TestLeastPrivilege starts the static daemon as nobody with only the
// unit's capabilities (setpriv), on the afxdp and socket paths of a test
// host: it receives, serves /metrics, reloads on SIGHUP and blocks a source
// through the feedback path, all with no capability left after setup
// (CapEff, CapPrm and CapAmb 0 and no_new_privs on every thread), and a
// SIGTERM stops it cleanly, unpinning as nobody.
func TestLeastPrivilege(t *testing.T) {
	needRoot(t, "setpriv", "ip")
	bin := releaseBinary(t)
	for _, mode := range []string{"afxdp", "socket"} {
		t.Run(mode, func(t *testing.T) { runLeastPrivilege(t, bin, mode) })
	}
}

func runLeastPrivilege(t *testing.T, bin, mode string) {
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	dir := sharedDir(t)
	pin := filepath.Join(mountBPFFS(t, dir), "xgate")
	sink := filepath.Join(dir, "passed.ndjson")
	cfgPath := filepath.Join(dir, "xgate.yaml")
	writeConfig(t, cfgPath, capsConfig(pair.B.Link, mode, sink, pin, ""))

	d := startDaemon(t, nil, append([]string{"ip", "netns", "exec", pair.B.NS},
		setprivArgs(unitCaps, bin, "run", "-c", cfgPath, "--pid-file", "")...)...)
	d.WaitReceiving(20 * time.Second)
	if !d.Logged("path=" + mode) {
		t.Fatalf("the daemon did not take the %s path", mode)
	}
	checkDropped := func(when string) {
		t.Helper()
		st := procStatus(t, fmt.Sprintf("/proc/%d/status", d.Pid))
		t.Logf("%s: Uid %s, CapInh %s CapPrm %s CapEff %s CapBnd %s CapAmb %s, NoNewPrivs %s", when,
			st["Uid"], st["CapInh"], st["CapPrm"], st["CapEff"], st["CapBnd"], st["CapAmb"], st["NoNewPrivs"])
		if !strings.HasPrefix(st["Uid"], fmt.Sprint(nobody)) {
			t.Errorf("%s: Uid %q, want %d", when, st["Uid"], nobody)
		}
		for _, k := range []string{"CapEff", "CapPrm", "CapInh", "CapAmb"} {
			if st[k] != "0000000000000000" {
				t.Errorf("%s: %s %s, want none", when, k, st[k])
			}
		}
		if st["NoNewPrivs"] != "1" {
			t.Errorf("%s: NoNewPrivs %q, want 1", when, st["NoNewPrivs"])
		}
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", d.Pid))
		if len(tasks) < 2 {
			t.Errorf("%s: %d threads, want the Go runtime's several", when, len(tasks))
		}
		for _, task := range tasks {
			ts := procStatus(t, task)
			if ts["CapEff"] != "0000000000000000" || ts["CapPrm"] != "0000000000000000" || ts["NoNewPrivs"] != "1" {
				t.Errorf("%s: thread %s: CapEff %s CapPrm %s NoNewPrivs %s", when, ts["Pid"], ts["CapEff"], ts["CapPrm"], ts["NoNewPrivs"])
			}
		}
	}
	checkDropped("after setup")

	// Traffic, and /metrics.
	sendEvents(t, pair, capsPort, 1, "click", 50)
	waitCount(t, sink, 1, 50)
	waitMetric(t, pair.B, `xgate_events_total{verdict="pass"}`, 50)

	// Reload with a block rule, then block a source through XDP.
	writeConfig(t, cfgPath, capsConfig(pair.B.Link, mode, sink, pin, blockRule))
	if err := syscall.Kill(d.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.WaitLogged("reloaded rules", 5*time.Second)
	sendEvents(t, pair, capsPort, 2, "attack", 1)
	waitMetric(t, pair.B, `xgate_events_total{verdict="block"}`, 1)
	time.Sleep(100 * time.Millisecond) // the feedback goroutine writes the blocklist
	sendEvents(t, pair, capsPort, 3, "click", 20)
	waitMetric(t, pair.B, `xgate_xdp_packets_total{reason="blocked"}`, 20)
	if n := countInFile(sink, 3); n != 0 {
		t.Errorf("%d events of the blocked source reached the sink", n)
	}
	checkDropped("after reload and feedback")

	if err := syscall.Kill(d.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if ents, err := os.ReadDir(pin); err == nil && len(ents) > 0 {
		t.Errorf("pins left after a clean stop: %d in %s", len(ents), pin)
	}
}

// waitMetric polls the daemon's /metrics until series reaches at least
// want (the workers publish their counts between batches).
func waitMetric(t *testing.T, h *testenv.Host, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := nsGet(h, httpPort, "/metrics")
		if err != nil || !strings.HasPrefix(m, "HTTP/1.0 200") {
			t.Fatalf("GET /metrics: %v\n%.300s", err, m)
		}
		if v, _ := metricValue(m, series); v >= want {
			return
		}
		if time.Now().After(deadline) {
			name, _, _ := strings.Cut(series, "{")
			t.Fatalf("%s below %v after 5s:\n%s", series, want, grepLines(m, name))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestCapabilityRemoved starts the daemon (afxdp) with each of the unit's
// capabilities removed in turn: it exits with the privilege exit code (4)
// before attaching anything, and the error names the capability and the
// step that needs it.
func TestCapabilityRemoved(t *testing.T) {
	needRoot(t, "setpriv", "ip")
	bin := releaseBinary(t)
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	dir := sharedDir(t)
	pin := filepath.Join(mountBPFFS(t, dir), "xgate")
	cfgPath := filepath.Join(dir, "xgate.yaml")
	writeConfig(t, cfgPath, capsConfig(pair.B.Link, "afxdp", filepath.Join(dir, "passed.ndjson"), pin, ""))
	for _, missing := range unitCaps {
		t.Run(missing, func(t *testing.T) {
			var caps []string
			for _, c := range unitCaps {
				if c != missing {
					caps = append(caps, c)
				}
			}
			d := startDaemon(t, nil, append([]string{"ip", "netns", "exec", pair.B.NS},
				setprivArgs(caps, bin, "run", "-c", cfgPath, "--pid-file", "")...)...)
			code := d.WaitExit(20 * time.Second)
			name := "CAP_" + strings.ToUpper(missing) + " (to "
			if code != 4 || !d.Logged(name) {
				d.DumpLog()
				t.Errorf("without %s: exit code %d (want 4), error naming %q: %v", missing, code, name, d.Logged(name))
			}
			if d.Logged("XDP program attached") {
				t.Errorf("without %s: the program was attached before the check", missing)
			}
		})
	}
}
