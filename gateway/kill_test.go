package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
)

// TestGatewaySIGKILL runs the real daemon (xgate run) in the test host's
// namespace, SIGKILLs it, and checks that the kernel is left as the design
// promises: the bpf_link dies with the process, so the XDP program leaves
// the interface; the pins a killed daemon could not remove do not stop a
// restart; a clean stop (SIGTERM) exits 0 within 5s and unpins.
//
// Pins: "bpffs" pins under a bpffs the test mounts in a temporary
// directory (visible to the test, so it can look at what a SIGKILL
// leaves); "sysfs" pins under /sys/fs/bpf, which `ip netns exec` hides
// (it remounts /sys), so the daemon mounts bpffs there itself, inside the
// mount namespace of ip netns exec, which dies with the daemon.
func TestGatewaySIGKILL(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) for ip netns exec")
	}
	bin := buildXgate(t)
	for _, mode := range []string{"socket", "afxdp"} {
		for _, pins := range []string{"bpffs", "sysfs"} {
			t.Run(mode+"/"+pins, func(t *testing.T) { runSIGKILL(t, bin, mode, pins) })
		}
	}
}

// buildXgate builds cmd/xgate into a temporary directory (removed when the
// test ends).
func buildXgate(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the daemon: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD: not in a module (%q)", gomod)
	}
	bin := filepath.Join(t.TempDir(), "xgate")
	build := exec.CommandContext(ctx, goBin, "build", "-o", bin, "./cmd/xgate")
	build.Dir = filepath.Dir(gomod)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/xgate: %v\n%s", err, out)
	}
	return bin
}

// startDaemon starts `ip netns exec NS xgate run -c cfg --pid-file pid`
// (ip execs the daemon, so the PID is the daemon's); testenv.StartDaemon
// kills it by PID when the test ends if it still runs.
func startDaemon(t *testing.T, bin, ns, cfgPath, pidPath string) *testenv.Daemon {
	t.Helper()
	return testenv.StartDaemon(t, nil, nil, "ip", "netns", "exec", ns, bin, "run", "-c", cfgPath, "--pid-file", pidPath)
}

// xdpProg returns the ID of the XDP program attached to h's link, 0 if none.
func xdpProg(t *testing.T, h *testenv.Host) uint32 {
	t.Helper()
	var id uint32
	err := h.Do(func() error {
		l, err := netlink.LinkByName(h.Link)
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			id = x.ProgId
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// waitXDP waits until an XDP program is attached (want) or none is.
func waitXDP(t *testing.T, h *testenv.Host, want bool, timeout time.Duration) uint32 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		id := xdpProg(t, h)
		if (id != 0) == want {
			return id
		}
		if time.Now().After(deadline) {
			t.Fatalf("XDP program attached to %s: %v (id %d), want %v within %v", h.Link, id != 0, id, want, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sendAndSee sends n events tagged with run from a to b and waits until
// the passed sink holds all of them.
func sendAndSee(t *testing.T, pair *testenv.Pair, sinkPath string, run, n int) {
	t.Helper()
	fd, err := pair.A.DialUDP(netip.AddrPortFrom(pair.B.Addr, itPort))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for i := 0; i < n; i++ {
		ev := fmt.Appendf(nil, `{"run":%d,"seq":%d,"user_id":"u%d","event_type":"click"}`, run, i, i)
		if _, err := unix.Write(fd, ev); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	tag := fmt.Appendf(nil, `{"run":%d,`, run)
	deadline := time.Now().Add(5 * time.Second)
	got := 0
	for {
		data, _ := os.ReadFile(sinkPath)
		got = bytes.Count(data, tag)
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %d: the passed sink holds %d of %d events after 5s", run, got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got != n {
		t.Errorf("run %d: the passed sink holds %d events, %d sent", run, got, n)
	}
}

// pinnedMaps returns the map ID of every pin under dir (nil if dir does
// not exist).
func pinnedMaps(t *testing.T, dir string) map[string]ebpf.MapID {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ebpf.MapID{}
	for _, e := range ents {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, e.Name()), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			t.Errorf("pin %s: %v", e.Name(), err)
			continue
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		out[e.Name()] = id
	}
	return out
}

// checkPinsLive asserts that every XDP map pinned under dir is a map of
// the XDP program progID (the pins are the running daemon's, not orphans).
func checkPinsLive(t *testing.T, dir string, progID uint32) {
	t.Helper()
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(progID))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := info.MapIDs()
	for name, id := range pinnedMaps(t, dir) {
		if strings.HasPrefix(name, "xgate_rp_") || strings.HasPrefix(name, "probe_") {
			continue // the sk_reuseport program's and the kernel probes' maps
		}
		if !slices.Contains(ids, id) {
			t.Errorf("pin %s: map %d is not used by the attached XDP program (maps %v)", name, id, ids)
		}
	}
}

// pinnedXDPPackets sums the packets of every reason in the pinned XDP
// counters under dir.
func pinnedXDPPackets(t *testing.T, dir string) uint64 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "xgate_counters"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var total uint64
	var perCPU []bpf.XdpXgateCounter
	for r := bpf.Reason(0); r < bpf.ReasonTerminal; r++ {
		if err := m.Lookup(uint32(r), &perCPU); err != nil {
			t.Fatalf("counter %v: %v", r, err)
		}
		for _, c := range perCPU {
			total += c.Packets
		}
	}
	return total
}

func runSIGKILL(t *testing.T, bin, mode, pins string) {
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	dir := t.TempDir()

	// Where the daemon pins, and where the test can see those pins.
	var pinPath, pinView string
	var rootBPFFS bool // is /sys/fs/bpf a bpffs in the test's mount namespace
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		rootBPFFS = true
	}
	switch pins {
	case "bpffs":
		mnt := mountBPFFS(t)
		pinPath = filepath.Join(mnt, "xgate")
		pinView = pinPath
	case "sysfs":
		pinPath = "/sys/fs/bpf/" + pair.Tag
		// Only visible through the daemon's mount namespace: pinView is
		// set per process below.
	}

	sinkPath := filepath.Join(dir, "passed.ndjson")
	cfgPath := filepath.Join(dir, "xgate.yaml")
	pidPath := filepath.Join(dir, "xgate.pid")
	yml := fmt.Sprintf(`interface: %s
mode: %s
listen: {ports: [%d]}
rules:
  - name: refunds
    when: event_type == "refund"
    action: drop
socket: {rcvbuf: 4MiB, batch: 64}
afxdp: {frame_size: 2048, rx_ring: 4096, fill_ring: 4096, frames: 8192}
sinks:
  - {type: file, path: %q, what: passed, fsync: never}
pin: {path: %q, keep: false}
`, pair.B.Link, mode, itPort, sinkPath, pinPath)
	if err := os.WriteFile(cfgPath, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(cfgPath); err != nil {
		t.Fatalf("the test's config: %v", err)
	}
	if id := xdpProg(t, pair.B); id != 0 {
		t.Fatalf("XDP program %d attached before the daemon started", id)
	}

	// 1. Start, see it attach and receive.
	d1 := startDaemon(t, bin, pair.B.NS, cfgPath, pidPath)
	d1.WaitReceiving(20 * time.Second)
	prog1 := waitXDP(t, pair.B, true, 2*time.Second)
	if pins == "sysfs" {
		pinView = fmt.Sprintf("/proc/%d/root%s", d1.Pid, pinPath)
		if !d1.Logged("mounted bpffs") {
			t.Errorf("the daemon did not say it mounted bpffs for pin path %s", pinPath)
		}
	}
	if b, err := os.ReadFile(pidPath); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(d1.Pid) {
		t.Errorf("pid file %s: %q, %v; want %d", pidPath, b, err, d1.Pid)
	}
	sendAndSee(t, pair, sinkPath, 1, 50)
	pins1 := pinnedMaps(t, pinView)
	if len(pins1) == 0 {
		t.Fatalf("nothing pinned under %s", pinView)
	}
	checkPinsLive(t, pinView, prog1)
	t.Logf("run 1: pid %d, XDP program %d, pins %v", d1.Pid, prog1, pins1)

	// 2. SIGKILL: the bpf_link closes with the process.
	start := time.Now()
	if _, err := d1.Signal(syscall.SIGKILL, 5*time.Second); err == nil {
		t.Error("xgate exited cleanly on SIGKILL?")
	}
	waitXDP(t, pair.B, false, 5*time.Second)
	t.Logf("XDP program gone %v after SIGKILL", time.Since(start).Round(time.Millisecond))
	var stale map[string]ebpf.MapID
	switch pins {
	case "bpffs":
		// A killed daemon cannot unpin: its pins stay.
		stale = pinnedMaps(t, pinView)
		if len(stale) == 0 {
			t.Errorf("no pins left under %s after SIGKILL (expected the killed daemon's)", pinView)
		}
		t.Logf("stale pins after SIGKILL: %v", stale)
	case "sysfs":
		// The daemon's bpffs lived in the mount namespace of ip netns
		// exec, gone with it; the test's /sys/fs/bpf is as it was.
		var st2 unix.Statfs_t
		if err := unix.Statfs("/sys/fs/bpf", &st2); err == nil && (st2.Type == unix.BPF_FS_MAGIC) != rootBPFFS {
			t.Errorf("/sys/fs/bpf of the test's mount namespace changed: bpffs %v, was %v", st2.Type == unix.BPF_FS_MAGIC, rootBPFFS)
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/bpf", pair.Tag)); err == nil {
			t.Errorf("/sys/fs/bpf/%s exists in the test's mount namespace", pair.Tag)
		}
	}
	if b, err := os.ReadFile(pidPath); err == nil {
		t.Logf("stale pid file after SIGKILL: %q (expected: a killed daemon cannot remove it)", strings.TrimSpace(string(b)))
	}

	// 3. Restart with the same config (stale pins and pid file in place).
	d2 := startDaemon(t, bin, pair.B.NS, cfgPath, pidPath)
	d2.WaitReceiving(20 * time.Second)
	prog2 := waitXDP(t, pair.B, true, 2*time.Second)
	if prog2 == prog1 {
		t.Errorf("the restart attached the same program %d: it should load its own", prog2)
	}
	if pins == "sysfs" {
		pinView = fmt.Sprintf("/proc/%d/root%s", d2.Pid, pinPath)
	}
	sendAndSee(t, pair, sinkPath, 2, 50)
	pins2 := pinnedMaps(t, pinView)
	checkPinsLive(t, pinView, prog2)
	reused := 0
	for name, id := range pins2 {
		if stale[name] == id {
			reused++
		}
	}
	t.Logf("restart: XDP program %d, pins %v; %d of %d stale pinned maps reused; XDP counters in the pins: %d packets (100 sent over both runs)",
		prog2, pins2, reused, len(stale), pinnedXDPPackets(t, pinView))

	// 4. SIGTERM: a clean stop within 5s, exit 0, detached and unpinned.
	took, err := d2.Signal(syscall.SIGTERM, 5*time.Second)
	if err != nil {
		t.Errorf("xgate exit after SIGTERM: %v", err)
	}
	t.Logf("clean stop took %v", took.Round(time.Millisecond))
	if !d2.Logged("msg=stopped") {
		t.Error("xgate did not log \"stopped\"")
	}
	// The restarted daemon accounts for its own 50 packets, not for the
	// ones the stale pinned counters still hold from the killed run.
	if !d2.Logged("xdp_seen=50 ") || !d2.Logged("events=50 ") {
		d2.DumpLog()
		t.Error("final accounting of the restart is not its own 50 packets")
	}
	if id := xdpProg(t, pair.B); id != 0 {
		t.Errorf("XDP program %d still attached after a clean stop", id)
	}
	if pins == "bpffs" {
		if left := pinnedMaps(t, pinView); left != nil {
			t.Errorf("pins left under %s after a clean stop (pin.keep false): %v", pinView, left)
		}
	}
	if _, err := os.Stat(pidPath); err == nil {
		t.Errorf("pid file %s left after a clean stop", pidPath)
	}
}
