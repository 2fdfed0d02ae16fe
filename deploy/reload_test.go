package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freePort returns a port of network ("udp" or "tcp") on 127.0.0.1 that
// was free a moment ago.
func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// xgateCmd runs the binary with args and returns its exit code and
// combined output.
func xgateCmd(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("%s %v: %v", bin, args, err)
	return 0, ""
}

// TestReloadTellsTheTruth drives a running daemon (plain path, loopback)
// through `xgate reload` and raw SIGHUPs, as an operator would: each
// outcome — every change in force, some keys needing a restart, a file
// rejected (a state table over the memory budget, a syntax error) — has
// its exit status, log line and /status entry; a new http.token applies at
// once; a rejected file leaves the daemon and its pid file in place.
func TestReloadTellsTheTruth(t *testing.T) {
	bin := releaseBinary(t)
	dir := t.TempDir()
	udpPort, httpPort := freePort(t, "udp"), freePort(t, "tcp")
	cfgPath, pidFile := filepath.Join(dir, "xgate.yaml"), filepath.Join(dir, "xgate.pid")
	const tokenA, tokenB = "token-a-0123456789abcdef", "token-b-0123456789abcdef"
	cfg := func(token, extra string) string {
		return fmt.Sprintf("listen: {ports: [%d], address: 127.0.0.1}\nhttp: {listen: \"127.0.0.1:%d\", token: %s}\n"+
			"probes: {enabled: false}\nsinks: [{type: file, path: %s, what: passed}]\n"+
			"rules:\n  - name: per-user\n    rate_limit: {key: user_id, rate: 100/s}\n    action: drop\n%s",
			udpPort, httpPort, token, filepath.Join(dir, "passed.ndjson"), extra)
	}
	writeConfig(t, cfgPath, cfg(tokenA, ""))
	d := startDaemon(t, nil, bin, "run", "-c", cfgPath, "--pid-file", pidFile)
	d.WaitReceiving(10 * time.Second)

	get := func(token string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/status", httpPort), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b []byte
		if resp.StatusCode == http.StatusOK {
			var st struct{ Reload json.RawMessage }
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatal(err)
			}
			b = st.Reload
		}
		return resp.StatusCode, b
	}
	type result struct {
		Seq           uint64
		Applied       bool
		Error         string
		RestartNeeded []string `json:"restart_needed"`
	}
	reload := func(what string, wantCode int, wantOut string, token string, want result) {
		t.Helper()
		code, out := xgateCmd(t, bin, "reload", "--pid-file", pidFile)
		if code != wantCode || !strings.Contains(out, wantOut) {
			d.DumpLog()
			t.Fatalf("%s: xgate reload exited %d with %q; want %d and %q", what, code, out, wantCode, wantOut)
		}
		status, raw := get(token)
		if status != http.StatusOK {
			t.Fatalf("%s: /status with the token in force: %d", what, status)
		}
		var got result
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatalf("%s: /status reload %s: %v", what, raw, err)
		}
		if got.Seq != want.Seq || got.Applied != want.Applied || !slices.Equal(got.RestartNeeded, want.RestartNeeded) ||
			!strings.Contains(got.Error, want.Error) {
			t.Errorf("%s: /status reload %+v, want %+v", what, got, want)
		}
	}

	reload("unchanged", 0, "every change is in force", tokenA, result{Seq: 1, Applied: true})

	// The token applies at once: the old one is refused, the new one taken.
	writeConfig(t, cfgPath, cfg(tokenB, ""))
	reload("new token", 0, "every change is in force", tokenB, result{Seq: 2, Applied: true})
	if code, _ := get(tokenA); code != http.StatusUnauthorized {
		t.Errorf("the old token after the reload: %d, want 401", code)
	}

	// A key the running sockets cannot take: reloaded, and named.
	writeConfig(t, cfgPath, strings.Replace(cfg(tokenB, ""), "probes: {enabled: false}", "probes: {enabled: false}\nsocket: {rcvbuf: 8MiB}", 1))
	reload("socket buffer", 3, "need a restart: socket", tokenB, result{Seq: 3, Applied: true, RestartNeeded: []string{"socket"}})
	// Back as started: nothing needs a restart any more.
	writeConfig(t, cfgPath, cfg(tokenB, ""))
	reload("back", 0, "every change is in force", tokenB, result{Seq: 4, Applied: true})

	// State over the memory budget: rejected before anything is allocated
	// (it used to kill the running daemon), through xgate reload and SIGHUP.
	huge := cfg(tokenB, "  - name: velocity\n    window: {key: user_id, size: 1024s, slide: 1s, agg: sum(amount), max_keys: 1073741824}\n"+
		"    when: value > 5\n    action: alert\n")
	if err := os.WriteFile(cfgPath, []byte(huge), 0o644); err != nil {
		t.Fatal(err)
	}
	reload("over the budget", 6, "reload rejected", tokenB, result{Seq: 5, Error: "state_memory"})
	if err := syscall.Kill(d.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.WaitLogged("reload rejected", 5*time.Second)
	if err := os.WriteFile(cfgPath, []byte("listen: {ports: [oops"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Seq 6 was the raw SIGHUP's.
	reload("syntax error", 6, "reload rejected", tokenB, result{Seq: 7, Error: "xgate.yaml"})
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(d.Pid) {
		t.Errorf("pid file after rejected reloads: %q %v", b, err)
	}
	if code, _ := get(tokenB); code != http.StatusOK {
		t.Errorf("the daemon does not answer after rejected reloads: %d", code)
	}

	// A second daemon with the same file: refused by the pid file's lock,
	// and without a pid file or HTTP by the port's lock (it would take
	// half the port's traffic through SO_REUSEPORT).
	writeConfig(t, cfgPath, cfg(tokenB, ""))
	code, out := xgateCmd(t, bin, "run", "-c", cfgPath, "--pid-file", pidFile)
	if code == 0 || !strings.Contains(out, "holds the pid file") {
		t.Errorf("second daemon, same pid file: exit %d, %q", code, out)
	}
	second := filepath.Join(dir, "second.yaml")
	writeConfig(t, second, strings.Replace(cfg(tokenB, ""), fmt.Sprintf("\"127.0.0.1:%d\"", httpPort), `""`, 1))
	code, out = xgateCmd(t, bin, "run", "-c", second, "--pid-file", "")
	if code == 0 || !strings.Contains(out, fmt.Sprintf("(pid %d) already receives udp port %d", d.Pid, udpPort)) {
		t.Errorf("second daemon, same port: exit %d, %q", code, out)
	}

	if err := syscall.Kill(d.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.WaitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	for _, f := range []string{pidFile, strings.TrimSuffix(pidFile, ".pid") + ".reload.json"} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after a clean stop: %v", f, err)
		}
	}
}

// TestPlainMountsNothing: plain mode as root leaves /sys/fs/bpf as it is.
// The daemon runs in a mount namespace of its own without any bpffs (the
// copy of the test's namespace may hold those of other packages' tests
// running meanwhile: all are unmounted there); it used to mount one
// anyway.
func TestPlainMountsNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (unshare)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare")
	}
	bin := releaseBinary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "xgate.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf("mode: plain\nlisten: {ports: [%d], address: 127.0.0.1}\nhttp: {listen: \"\"}\n"+
		"sinks: [{type: file, path: %s, what: passed}]\n", freePort(t, "udp"), filepath.Join(dir, "passed.ndjson")))
	d := startDaemon(t, nil, "unshare", "--mount", "--propagation", "private", "sh", "-c",
		`for m in $(awk '/ - bpf /{print $5}' /proc/self/mountinfo); do umount -l "$m" 2>/dev/null; done; exec "$0" "$@"`,
		bin, "run", "-c", cfgPath, "--pid-file", "")
	d.WaitReceiving(10 * time.Second)
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", d.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, " - bpf ") {
			t.Errorf("plain mode mounted a bpffs: %s", l)
		}
	}
	if err := syscall.Kill(d.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.WaitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
