package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway"
)

// TestStatsPins: `xgate stats --pins` reads maps pinned by a program that
// is no longer loaded (a private bpffs, unmounted at the end).
func TestStatsPins(t *testing.T) {
	needRoot(t)
	if out, err := run(t, "stats", "--pins", filepath.Join(t.TempDir(), "none"), "--once"); err == nil ||
		!strings.Contains(err.Error(), "pinned") {
		t.Errorf("stats --pins of a missing directory: %v\n%s", err, out)
	}
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
	x, err := bpf.LoadXDP(bpf.Options{PinPath: dir, Queues: 1, ListenPorts: []uint16{9000}})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Block(netip.MustParseAddr("198.18.0.9"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil { // the pins stay
		t.Fatal(err)
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove pins: %v", err)
		}
	}()

	out, err := run(t, "stats", "--pins", dir, "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var s gateway.PinSnapshot
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
