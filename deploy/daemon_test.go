package deploy

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/testenv"
)

// unitCaps are the capabilities deploy/xgate.service grants
// (AmbientCapabilities=, CapabilityBoundingSet=), in setpriv's spelling.
var unitCaps = []string{"bpf", "perfmon", "net_admin", "net_raw"}

// nobody is the unprivileged user the tests run the daemon as.
const nobody = 65534

func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (to start the daemon as another user with capabilities)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// sharedDir is a temporary directory the unprivileged daemon may enter and
// write (t.TempDir's parents are private to root).
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "xgate-deploy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return dir
}

// mountBPFFS mounts a bpffs at dir/bpffs owned by the daemon's user (as the
// unit's ExecStartPre makes the pin directory), unmounted when the test ends.
func mountBPFFS(t *testing.T, dir string) string {
	t.Helper()
	mnt := filepath.Join(dir, "bpffs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0755"); err != nil {
		t.Skipf("cannot mount bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := os.Chown(mnt, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return mnt
}

// setprivArgs runs argv as nobody with exactly caps (inheritable, ambient
// and bounding), as systemd runs the unit's ExecStart.
func setprivArgs(caps []string, argv ...string) []string {
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	return append([]string{"setpriv", "--reuid=" + strconv.Itoa(nobody), "--regid=" + strconv.Itoa(nobody), "--clear-groups",
		"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set, "--"}, argv...)
}

// startDaemon starts argv (ip netns exec … setpriv … xgate run …: each
// execs the next, so the PID is the daemon's); see testenv.StartDaemon.
func startDaemon(t *testing.T, env []string, argv ...string) *testenv.Daemon {
	t.Helper()
	return testenv.StartDaemon(t, env, nil, argv...)
}

// procStatus reads the fields of /proc/PID/status (or of a task's).
func procStatus(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// nsGet makes an HTTP/1.0 GET to 127.0.0.1:port inside h's namespace and
// returns the response (status line, headers and body).
func nsGet(h *testenv.Host, port int, path string) (string, error) {
	fd, err := h.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	f := os.NewFile(uintptr(fd), "http")
	defer f.Close()
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return "", fmt.Errorf("connect 127.0.0.1:%d: %w", port, err)
	}
	if _, err := fmt.Fprintf(f, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	_, err = io.Copy(&buf, f)
	return buf.String(), err
}

// sendEvents sends n events tagged with run from pair.A to port on pair.B.
func sendEvents(t *testing.T, pair *testenv.Pair, port uint16, run int, typ string, n int) {
	t.Helper()
	fd, err := pair.A.DialUDP(netip.AddrPortFrom(pair.B.Addr, port))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for i := 0; i < n; i++ {
		ev := fmt.Appendf(nil, `{"run":%d,"seq":%d,"user_id":"u%d","event_type":%q}`, run, i, i, typ)
		if _, err := unix.Write(fd, ev); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

// countInFile counts the events of run in a sink file.
func countInFile(path string, run int) int {
	data, _ := os.ReadFile(path)
	return bytes.Count(data, fmt.Appendf(nil, `{"run":%d,`, run))
}

// waitCount waits until the sink holds want events of run.
func waitCount(t *testing.T, path string, run, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for countInFile(path, run) < want {
		if time.Now().After(deadline) {
			t.Fatalf("run %d: the sink %s holds %d of %d events after 5s", run, path, countInFile(path, run), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := countInFile(path, run); got != want {
		t.Errorf("run %d: the sink holds %d events, want %d", run, got, want)
	}
}

// metricValue reads one sample of a Prometheus text exposition.
func metricValue(body, series string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}
