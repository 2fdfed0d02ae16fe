package main

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/packet"

	"github.com/xgate/xgate/gateway/config"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/loadgen"
)

// pinnedXDP loads the XDP program (listening on port 9000) with its maps
// pinned in a private bpffs; the pins are removed and the bpffs unmounted
// at the end. It skips the test when bpffs cannot be mounted. The caller
// closes the program.
func pinnedXDP(t *testing.T) (*bpf.XDP, string) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Skipf("mount bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	dir := filepath.Join(mnt, "xgate")
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove pins: %v", err)
		}
	})
	x, err := bpf.LoadXDP(bpf.Options{PinPath: dir, Queues: 1, ListenPorts: []uint16{9000}})
	if err != nil {
		t.Fatal(err)
	}
	return x, dir
}

// TestStatsPins: `xgate stats --pins` reads maps pinned by a program that
// is no longer loaded (a private bpffs, unmounted at the end).
func TestStatsPins(t *testing.T) {
	needRoot(t)
	if out, err := run(t, "stats", "--pins", filepath.Join(t.TempDir(), "none"), "--once"); err == nil ||
		!strings.Contains(err.Error(), "pinned") {
		t.Errorf("stats --pins of a missing directory: %v\n%s", err, out)
	}
	x, dir := pinnedXDP(t)
	if err := x.Block(netip.MustParseAddr("198.18.0.9"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil { // the pins stay
		t.Fatal(err)
	}

	out, err := run(t, "stats", "--pins", dir, "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var s PinSnapshot
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if s.Pins != dir || s.Seen != 0 || s.Blocklist.Live != 1 {
		t.Errorf("snapshot %+v: want pins %s, nothing seen, 1 live block", s, dir)
	}
	out, err = run(t, "stats", "--pins", dir, "--once")
	if err != nil || !strings.Contains(out, "blocklist: 1 live, 0 expired") || !strings.Contains(out, "seen 0 =") {
		t.Errorf("stats --pins --once: %v\n%s", err, out)
	}
}

// TestStatsPinsLive: without --once or --json, `xgate stats --pins` is a
// live view that reads the pins anew every interval and shows rates from
// the difference of two readings. The XDP program is run meanwhile by
// BPF_PROG_TEST_RUN (no interface needed), so its counters move.
func TestStatsPinsLive(t *testing.T) {
	needRoot(t)
	x, dir := pinnedXDP(t)
	defer func() {
		if err := x.Close(); err != nil {
			t.Error(err)
		}
	}()
	frame, err := loadgen.AppendFrame(nil, packet.Frame{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
		SrcPort: 40000, DstPort: 9000, Payload: []byte(`{"user_id":"u1"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	// 50 runs every 10ms until the view ends: about 5000 packets/s.
	done := make(chan struct{})
	driven := make(chan error, 1)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				driven <- nil
				return
			case <-tick.C:
			}
			if _, err := x.Program().Run(&ebpf.RunOptions{Data: frame, Repeat: 50}); err != nil {
				driven <- err
				return
			}
		}
	}()
	out, err := run(t, "stats", "--pins", dir, "--duration", "1s", "--interval", "200ms")
	close(done)
	if derr := <-driven; derr != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", derr)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	frames := strings.Split(out, "----\n")
	if len(frames) < 3 || strings.Contains(out, "\x1b[") {
		t.Fatalf("want at least 3 frames without ANSI escapes:\n%s", out)
	}
	seenRe := regexp.MustCompile(`(?m)^packets: seen (\d+) = `)
	rateRe := regexp.MustCompile(`(?m)^  seen +(\d+\.\d)/s$`)
	var last uint64
	moving := 0
	for i, f := range frames {
		m := seenRe.FindStringSubmatch(f)
		if m == nil {
			t.Fatalf("frame %d has no seen count:\n%s", i, f)
		}
		seen, _ := strconv.ParseUint(m[1], 10, 64)
		if i > 0 && seen < last {
			t.Errorf("frame %d: seen %d, before %d", i, seen, last)
		}
		r := rateRe.FindStringSubmatch(f)
		if (r != nil) != (i > 0) {
			t.Errorf("frame %d: rate line %v (only frames after the first have rates):\n%s", i, r, f)
		}
		if r != nil {
			if v, _ := strconv.ParseFloat(r[1], 64); v > 0 && seen > last {
				moving++
			}
		}
		last = seen
	}
	if last == 0 || moving == 0 {
		t.Errorf("the counts never moved (last seen %d):\n%s", last, out)
	}
	t.Logf("%d frames, seen %d at the end; last frame:\n%s", len(frames), last, frames[len(frames)-1])
}

// TestReadPinsAfterGateway: with pin.keep, the pins outlive the gateway,
// and reading them (what `xgate stats --pins` does) gives the gateway's
// final XDP counts and its blocklist entry.
func TestReadPinsAfterGateway(t *testing.T) {
	needRoot(t)
	mnt := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Skipf("mount bpffs: %v", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	pinPath := filepath.Join(mnt, "xgate")
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	cfg, err := config.Parse("pins.yaml", []byte(`
interface: `+pair.B.Link+`
mode: socket
listen: {ports: [9000]}
rules:
  - name: bots
    when: event_type == "bot"
    action: block 1h
http: {listen: ""}
pin: {path: `+pinPath+`, keep: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	var g *gateway.Gateway
	if err := pair.B.Do(func() error {
		var err error
		g, err = gateway.New(cfg, gateway.Options{RecvTimeout: 20 * time.Millisecond})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer os.RemoveAll(pinPath)
	dst := netip.AddrPortFrom(pair.B.Addr, 9000)
	time.Sleep(50 * time.Millisecond)
	if _, err := pair.A.SendUDP(dst, []byte(`{"user_id":"u","event_type":"click"}`), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := pair.A.SendUDP(dst, []byte(`{"user_id":"b","event_type":"bot"}`), 1); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s, _ := g.Stats(); s.Feedback.Applied > 0 && s.Accounted() >= 101 {
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	final, _ := g.Stats()
	ps, err := ReadPins(pinPath)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Seen != final.XDPSeen || ps.Dropped != final.XDPDrops || ps.Survivors != final.Survivors || ps.Seen != 101 {
		t.Errorf("pins: seen %d dropped %d survivors %d; gateway: %d %d %d; sent 101",
			ps.Seen, ps.Dropped, ps.Survivors, final.XDPSeen, final.XDPDrops, final.Survivors)
	}
	if ps.Blocklist.Live != 1 {
		t.Errorf("blocklist %+v, want 1 live entry", ps.Blocklist)
	}
}
