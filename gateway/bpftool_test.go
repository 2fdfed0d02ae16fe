package gateway

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
)

// needBpftool finds bpftool, installing it with tools/install-deps.sh when
// missing; the test skips when that is not possible.
func needBpftool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("bpftool"); err == nil {
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "../tools/install-deps.sh", "bpftool").CombinedOutput()
	if err != nil {
		t.Skipf("bpftool is not installed and tools/install-deps.sh bpftool failed: %v\n%s", err, out)
	}
	for _, p := range []string{"bpftool", "/usr/sbin/bpftool"} {
		if p, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	t.Skip("bpftool installed but not found on PATH or in /usr/sbin")
	return ""
}

// mountBPFFS mounts a private bpffs in a temporary directory, unmounted
// (with whatever pins are left) when the test ends.
func mountBPFFS(t *testing.T) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Skipf("mount bpffs at %s: %v", mnt, err)
	}
	// Registered after TempDir's cleanup, so it runs before it.
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// bpftoolEntry is one key of `bpftool -j map dump` of a per-CPU map with
// BTF: the value of each CPU by field name. bpftool's JSON output gives
// the raw bytes in key and values and the BTF-formatted entry in
// "formatted" (its plain output prints only the formatted one).
type bpftoolEntry struct {
	Key    uint32 `json:"key"`
	Values []struct {
		CPU   int `json:"cpu"`
		Value struct {
			Packets uint64 `json:"packets"`
			Bytes   uint64 `json:"bytes"`
		} `json:"value"`
	} `json:"values"`
}

// TestBpftoolCounters: the pinned counters, read by bpftool through their
// BTF (named fields packets and bytes), summed over CPUs, equal what the
// gateway reports in Stats and on /metrics.
func TestBpftoolCounters(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	tool := needBpftool(t)
	mnt := mountBPFFS(t)
	pinPath := filepath.Join(mnt, "xgate")
	pair, g, stop := runIT(t, 2, "socket", func(cfg *config.Config) { cfg.Pin.Path = pinPath })

	sent := sendEventsAndOther(t, pair, 200, 30)
	s := quiesce(t, g, sent)
	fams := scrape(t, g)

	pinned := filepath.Join(pinPath, "xgate_counters")
	out, err := exec.Command(tool, "-j", "map", "dump", "pinned", pinned).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("bpftool map dump pinned %s: %v\n%s", pinned, err, stderr)
	}
	var raw []struct {
		Formatted *bpftoolEntry `json:"formatted"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatalf("parse bpftool output: %v\n%.2000s", err, out)
	}
	var entries []bpftoolEntry
	for i, r := range raw {
		if r.Formatted == nil {
			t.Fatalf("entry %d without BTF-formatted fields (map without BTF?):\n%.2000s", i, out)
		}
		entries = append(entries, *r.Formatted)
	}
	if len(entries) != int(bpf.ReasonMax) {
		t.Fatalf("bpftool dumped %d keys, want %d:\n%s", len(entries), bpf.ReasonMax, out)
	}
	var seen uint64
	for _, e := range entries {
		if e.Key >= uint32(bpf.ReasonMax) {
			t.Fatalf("key %d out of range", e.Key)
		}
		r := bpf.Reason(e.Key)
		var pk, by uint64
		for _, v := range e.Values {
			pk += v.Value.Packets
			by += v.Value.Bytes
		}
		if pk != s.XDP[r].Packets || by != s.XDP[r].Bytes {
			t.Errorf("%s: bpftool %d packets %d bytes, Stats %d %d", r, pk, by, s.XDP[r].Packets, s.XDP[r].Bytes)
		}
		if r.Terminal() {
			seen += pk
			if m := metricValue(t, fams, "xgate_xdp_packets_total", "reason="+r.String()); m != float64(pk) {
				t.Errorf("%s: bpftool %d packets, /metrics %v", r, pk, m)
			}
			if m := metricValue(t, fams, "xgate_xdp_bytes_total", "reason="+r.String()); m != float64(by) {
				t.Errorf("%s: bpftool %d bytes, /metrics %v", r, by, m)
			}
		}
	}
	if seen != sent || s.XDPSeen != sent {
		t.Errorf("bpftool counts %d packets, Stats %d, sent %d", seen, s.XDPSeen, sent)
	}

	// The plain output (what the README shows) names the fields too.
	plain, err := exec.Command(tool, "map", "dump", "pinned", pinned).Output()
	if err != nil {
		t.Fatalf("bpftool map dump pinned %s: %v", pinned, err)
	}
	if !strings.Contains(string(plain), `"packets": `) || !strings.Contains(string(plain), `"bytes": `) {
		t.Errorf("bpftool map dump without named fields:\n%.2000s", plain)
	}
	t.Logf("bpftool map dump pinned %s:\n%.1200s", pinned, plain)

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// A clean stop unpins.
	if _, err := os.Stat(pinned); !os.IsNotExist(err) {
		t.Errorf("%s after stop: %v, want it gone", pinned, err)
	}
}
