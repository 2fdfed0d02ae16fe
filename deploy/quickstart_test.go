package deploy

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/testenv"
	"golang.org/x/sys/unix"
)

// TestQuickstart: examples/quickstart.yaml runs with its one edit (the
// interface) and nothing else: the daemon starts on a test host, decides
// events and alerts, serves /metrics at the default address, and stops
// cleanly.
func TestQuickstart(t *testing.T) {
	root := repoRoot(t)
	src, err := os.ReadFile(filepath.Join(root, "examples", "quickstart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse("examples/quickstart.yaml", src); err != nil {
		t.Fatalf("the quickstart as shipped: %v", err)
	}
	if n := bytes.Count(src, []byte("← the one edit")); n != 1 {
		t.Fatalf("%d lines marked as the edit, want 1", n)
	}
	needRoot(t, "ip")
	bin := releaseBinary(t)
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	edited := bytes.Replace(src, []byte("interface: eth0"), []byte("interface: "+pair.B.Link), 1)
	cfgPath := filepath.Join(sharedDir(t), "quickstart.yaml")
	writeConfig(t, cfgPath, string(edited))

	// ip netns exec gives the daemon its own mount namespace: the default
	// pin path and HTTP port are the test host's, not this machine's.
	d := startDaemon(t, nil, "ip", "netns", "exec", pair.B.NS, bin, "run", "-c", cfgPath, "--pid-file", "")
	d.WaitReceiving(20 * time.Second)
	for i := 0; i < 5; i++ { // five payments of 20,000: five alerts
		sendEvent(t, pair, 9000, `{"user_id":"u1","event_type":"payment","amount":20000}`)
	}
	waitMetric(t, pair.B, `xgate_events_total{verdict="alert"}`, 5)
	body, err := nsGet(pair.B, 9717, "/status")
	if err != nil || !strings.Contains(body, `"path": "afxdp"`) {
		t.Errorf("GET /status on the default port: %v\n%s", err, body)
	}
	if err := syscall.Kill(d.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// sendEvent sends one datagram from pair.A to port on pair.B.
func sendEvent(t *testing.T, pair *testenv.Pair, port uint16, payload string) {
	t.Helper()
	fd, err := pair.A.DialUDP(netip.AddrPortFrom(pair.B.Addr, port))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(payload)); err != nil {
		t.Fatalf("send: %v", err)
	}
}
