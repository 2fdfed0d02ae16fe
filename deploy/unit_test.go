package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/xgate/xgate/testenv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"

	"github.com/xgate/xgate/gateway/preflight"
)

// unitKeys reads a unit file's [Service] and [Unit] settings (a key set
// twice keeps both values, in order).
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: line %q", path, l)
		}
		keys[k] = append(keys[k], v)
	}
	return keys
}

// TestUnitVerify runs systemd-analyze verify on the unit, with ExecStart
// pointing at the built binary (verify checks that commands exist).
func TestUnitVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd; make deps-test installs it)")
	}
	bin := releaseBinary(t)
	unit, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "xgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "xgate.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/bin/xgate", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitSettings: the unit grants exactly the capabilities of the afxdp
// path's setup steps (preflight.CapSteps), prevents restarts for the exit
// codes a restart cannot fix, and has the hardening the README promises;
// the packaged config writes only where the unit lets it.
func TestUnitSettings(t *testing.T) {
	root := repoRoot(t)
	u := unitKeys(t, filepath.Join(root, "deploy", "xgate.service"))
	one := func(k string) string {
		if len(u[k]) != 1 {
			t.Errorf("%s: %q, want one value", k, u[k])
			return ""
		}
		return u[k][0]
	}
	var want []string
	for _, c := range unitCaps {
		want = append(want, "CAP_"+strings.ToUpper(c))
	}
	cfg, err := config.Load(filepath.Join(root, "examples", "xgate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var steps host.CapSet
	for _, s := range preflight.CapSteps(cfg, config.ModeAFXDP) {
		for _, c := range s.Caps {
			steps |= 1 << c
		}
	}
	if got := strings.Join(steps.Names(), " "); !sameWords(got, strings.Join(want, " ")) {
		t.Errorf("the afxdp setup steps need %s, the tests grant %s", got, want)
	}
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if got := one(k); !sameWords(got, strings.Join(want, " ")) {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
	if got := one("RestartPreventExitStatus"); !sameWords(got, "2 4 6") {
		t.Errorf("RestartPreventExitStatus=%s, want the usage, privilege and config exit codes 2 4 6", got)
	}
	for k, v := range map[string]string{
		"Type": "notify", "User": "xgate", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateTmp": "yes", "LimitMEMLOCK": "infinity", "Restart": "on-failure", "ExecReload": "/bin/kill -HUP $MAINPID",
		"ExecStart": "/usr/bin/xgate run -c /etc/xgate/xgate.yaml --pid-file /run/xgate/xgate.pid",
	} {
		if got := one(k); got != v {
			t.Errorf("%s=%s, want %s", k, got, v)
		}
	}
	rw := strings.Fields(one("ReadWritePaths"))
	for _, p := range []string{"/var/lib/xgate", "/sys/fs/bpf/xgate"} {
		if !slices.Contains(rw, p) {
			t.Errorf("ReadWritePaths=%v lacks %s", rw, p)
		}
	}
	// The packaged config's pins and file sinks lie where the unit lets the daemon write.
	pkg, err := os.ReadFile(filepath.Join(root, "deploy", "xgate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := config.Parse("xgate.yaml", []byte(strings.Replace(string(pkg), `interface: ""`, "interface: eth0", 1)))
	if err != nil {
		t.Fatalf("packaged config with an interface: %v", err)
	}
	if pc.Pin.Path != "/sys/fs/bpf/xgate" {
		t.Errorf("packaged pin.path %s, the unit makes /sys/fs/bpf/xgate", pc.Pin.Path)
	}
	for _, s := range pc.Sinks {
		if s.Type == "file" && filepath.Dir(s.Path) != "/var/lib/xgate" {
			t.Errorf("packaged file sink %s outside /var/lib/xgate", s.Path)
		}
	}
	if !strings.HasPrefix(pc.HTTP.Listen, "127.0.0.1:") {
		t.Errorf("packaged http.listen %s, want loopback", pc.HTTP.Listen)
	}
}

func sameWords(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// TestSdNotify runs the daemon (plain path) with $NOTIFY_SOCKET as systemd
// would for Type=notify and reads what it says: READY=1 once it receives,
// RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a SIGHUP, and
// STOPPING=1 on SIGTERM.
func TestSdNotify(t *testing.T) {
	bin := releaseBinary(t)
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	udp.Close()
	cfgPath := filepath.Join(dir, "xgate.yaml")
	writeConfig(t, cfgPath, "listen: {ports: ["+strconv.Itoa(port)+"], address: 127.0.0.1}\nhttp: {listen: \"\"}\nprobes: {enabled: false}\n"+
		"sinks: [{type: file, path: "+filepath.Join(dir, "passed.ndjson")+", what: passed}]\n")
	d := startDaemon(t, []string{"NOTIFY_SOCKET=" + sockPath}, bin, "run", "-c", cfgPath, "--pid-file", "")
	expect := func(what string, want ...string) {
		t.Helper()
		select {
		case m := <-msgs:
			for _, w := range want {
				if !strings.Contains(m, w+"\n") && !strings.Contains(m, w) {
					t.Errorf("%s: notification %q lacks %q", what, m, w)
				}
			}
		case <-time.After(10 * time.Second):
			d.DumpLog()
			t.Fatalf("%s: no notification within 10s", what)
		}
	}
	expect("start", "READY=1\n")
	if err := syscall.Kill(d.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	expect("reload", "RELOADING=1\n", "MONOTONIC_USEC=")
	expect("reloaded", "READY=1\n", "STATUS=receiving; reloaded")
	if err := syscall.Kill(d.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect("stop", "STOPPING=1\n")
	if code := d.WaitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// TestRunConventions runs the daemon (plain path) with its configuration
// on stdin (-c -), a value from the environment (--expand-env) and JSON
// logs: it receives with the expanded value, every log line is a JSON
// object, and a SIGHUP says that stdin cannot be read again and keeps
// the rules.
func TestRunConventions(t *testing.T) {
	bin := releaseBinary(t)
	dir := t.TempDir()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	udp.Close()
	yml := "listen:\n  ports:\n    - ${XGATE_TEST_PORT}\n  address: 127.0.0.1\nhttp: {listen: \"\"}\nprobes: {enabled: false}\n" +
		"sinks: [{type: file, path: " + filepath.Join(dir, "passed.ndjson") + ", what: passed}]\n"
	d := testenv.StartDaemon(t, []string{"XGATE_TEST_PORT=" + strconv.Itoa(port)}, strings.NewReader(yml),
		bin, "run", "-c", "-", "--expand-env", "--log-format", "json", "--pid-file", "")
	d.WaitReceiving(10 * time.Second)
	if !d.Logged(fmt.Sprintf(`"ports":[%d]`, port)) {
		t.Errorf("the daemon does not listen on the port from the environment (%d)", port)
	}
	if err := syscall.Kill(d.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.WaitLogged("cannot be read again", 5*time.Second)
	if err := syscall.Kill(d.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.WaitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	for _, l := range d.Log() {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil || v["msg"] == nil {
			t.Errorf("log line is not a JSON object with msg: %q", l)
		}
	}
}
