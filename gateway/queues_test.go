package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/xdp"
)

// activeQueues runs ActiveRxQueues in h's namespace.
func activeQueues(t *testing.T, h *testenv.Host) host.RxQueueCount {
	t.Helper()
	var qc host.RxQueueCount
	if err := h.Do(func() error { qc = host.ActiveRxQueues(h.Link); return nil }); err != nil {
		t.Fatal(err)
	}
	return qc
}

func TestActiveRxQueues(t *testing.T) {
	t.Run("plain veth", func(t *testing.T) {
		// As `ip link add a type veth peer name b` makes it: numrxqueues is
		// the possible CPUs, one queue active.
		pair := testenv.New(t, testenv.Options{KernelQueues: true})
		qc := activeQueues(t, pair.B)
		if qc.Active != 1 || qc.Source != "ethtool" {
			t.Fatalf("plain veth: %+v, want 1 active queue from ethtool", qc)
		}
		if pair.B.Queues != 1 {
			t.Errorf("testenv Host.Queues %d, want 1", pair.B.Queues)
		}
		if qc.Max < 2 {
			t.Skipf("veth max %d RX queues (one possible CPU): cannot set 2 channels", qc.Max)
		}
		// ethtool -L rx 2 tx 2: now two are active.
		if err := pair.B.SetChannels(2, 2); err != nil {
			t.Fatal(err)
		}
		if qc := activeQueues(t, pair.B); qc.Active != 2 {
			t.Fatalf("after setting 2 channels: %+v, want 2 active", qc)
		}
	})
	t.Run("numrxqueues 2", func(t *testing.T) {
		pair := testenv.New(t, testenv.Options{RxQueues: 2})
		if qc := activeQueues(t, pair.B); qc.Active != 2 || qc.Source != "ethtool" {
			t.Fatalf("veth with numrxqueues 2: %+v, want 2 active from ethtool", qc)
		}
	})
	t.Run("fallbacks", func(t *testing.T) {
		// sysfs counts a link of this namespace (A is in the root one)...
		pair := testenv.New(t, testenv.Options{KernelQueues: true, RootA: true})
		if n, err := host.SysfsRxQueues(pair.A.Link); err != nil || n != 1 {
			t.Errorf("sysfs in the root namespace: %d, %v; want 1", n, err)
		}
		// ...but not one of another namespace, even if it were named alike.
		var serr error
		_ = pair.B.Do(func() error { _, serr = host.SysfsRxQueues(pair.B.Link); return nil })
		if serr == nil || !strings.Contains(serr.Error(), "another network namespace") {
			t.Errorf("sysfs inside B's namespace: %v, want another network namespace", serr)
		}
		// Nothing answers: 1 with the reasons.
		qc := host.ActiveRxQueues("xgate-nonesuch")
		if qc.Active != 1 || qc.Source != "fallback" || !strings.Contains(qc.Note, "ethtool") || !strings.Contains(qc.Note, "sysfs") {
			t.Errorf("unknown interface: %+v", qc)
		}
	})
}

// TestQueueHintInactiveQueue binds AF_XDP to the inactive queue 1 of a
// plain veth: the kernel refuses with EINVAL and the hint says what to do.
func TestQueueHintInactiveQueue(t *testing.T) {
	pair := testenv.New(t, testenv.Options{KernelQueues: true})
	qc := activeQueues(t, pair.B)
	var err error
	_ = pair.B.Do(func() error {
		s, e := xdp.Open(pair.B.Ifindex, 1, xdp.Config{FillSize: 64, RxSize: 64, Bind: xdp.BindCopy, BusyRetry: -1})
		if e == nil {
			s.Close()
		}
		err = e
		return nil
	})
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("bind to inactive queue 1: %v, want EINVAL", err)
	}
	hint := host.QueueHint(pair.B.Link, 1, qc, err)
	for _, want := range []string{"not active", "ethtool -l " + pair.B.Link + " shows 1 RX channel (rx 1, combined 0)", "set queues: 1",
		"ethtool -L " + pair.B.Link + " rx 2"} {
		if !strings.Contains(hint, want) {
			t.Errorf("hint %q lacks %q", hint, want)
		}
	}
}

// startPlain starts the gateway of mode on a veth made without numrxqueues.
func startPlain(t *testing.T, mode string, adjust func(*config.Config)) (*testenv.Pair, *Gateway) {
	t.Helper()
	pair := testenv.New(t, testenv.Options{KernelQueues: true})
	cfg := itConfig(t, pair.B.Link, mode, filepath.Join(t.TempDir(), "passed.ndjson"))
	if adjust != nil {
		adjust(cfg)
	}
	g, _ := startGateway(t, pair.B, cfg)
	waitReady(t, g)
	return pair, g
}

// decides sends n events from A and waits until the engine decided them.
func decides(t *testing.T, pair *testenv.Pair, g *Gateway, n int) {
	t.Helper()
	sendEventsAndOther(t, pair, n, 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := g.Stats()
		if err != nil {
			t.Fatal(err)
		}
		got := s.Engine.Events + s.Engine.DecodeErrorTotal()
		if got == uint64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("engine decided %d of %d events (path %s)", got, n, g.path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStartsOnPlainVeth: on a veth made without numrxqueues (two queues,
// one active) every mode starts and decides traffic; AF_XDP binds the one
// active queue.
func TestStartsOnPlainVeth(t *testing.T) {
	for _, mode := range []string{"afxdp", "socket", "auto"} {
		t.Run(mode, func(t *testing.T) {
			pair, g := startPlain(t, mode, nil)
			if g.queues != 1 {
				t.Errorf("queues %d, want 1 active", g.queues)
			}
			if mode != "auto" && g.path.String() != mode {
				t.Errorf("path %s, want %s", g.path, mode)
			}
			if mode == "auto" && g.path != config.ModeAFXDP {
				t.Logf("auto ended on %s: %s", g.path, g.why)
			}
			if g.path == config.ModeAFXDP && len(g.xsks) != 1 {
				t.Errorf("%d AF_XDP sockets, want 1", len(g.xsks))
			}
			decides(t, pair, g, 40)
		})
	}
}

// xdpAttachedSKB is XDP_ATTACHED_SKB (uapi if_link.h): generic mode.
const xdpAttachedSKB = 2

// stepOf finds the refused step of path (and xdpMode, if not "").
func stepOf(steps []Step, path config.Mode, xdpMode bpf.AttachMode) (Step, bool) {
	for _, s := range steps {
		if !s.OK && s.Path == path && (xdpMode == "" || s.XDPMode == xdpMode) {
			return s, true
		}
	}
	return Step{}, false
}

func wantFeature(t *testing.T, g *Gateway, name, available string) host.Feature {
	t.Helper()
	f, ok := g.Features().Get(name)
	if !ok || f.Available != available {
		t.Errorf("feature %s: %+v, want available %s", name, f, available)
	}
	return f
}

// TestAutoStepsDown forces each refusal with bpf.ForceOff and checks that
// mode auto steps down to the next rung, says why, and still decides.
func TestAutoStepsDown(t *testing.T) {
	t.Run("afxdp off: socket behind XDP", func(t *testing.T) {
		defer bpf.ForceOff(bpf.FeatAFXDP)()
		pair, g := startPlain(t, "auto", nil)
		if g.path != config.ModeSocket || g.xdp == nil {
			t.Fatalf("path %s (xdp %v), want socket behind XDP: %s", g.path, g.xdp != nil, g.why)
		}
		s, ok := stepOf(g.Steps(), config.ModeAFXDP, "")
		if !ok || !strings.Contains(s.Reason, bpf.FeatAFXDP) || !strings.Contains(s.Reason, "switched off") {
			t.Errorf("steps %+v: want afxdp refused as switched off", g.Steps())
		}
		if last := g.Steps()[len(g.Steps())-1]; !last.OK || last.Path != config.ModeSocket {
			t.Errorf("last step %+v, want socket taken", last)
		}
		if !strings.Contains(g.why, "stepped down") || !strings.Contains(g.why, "switched off") {
			t.Errorf("why %q does not tell the step down", g.why)
		}
		raw, err := g.xdp.ReadConfig()
		if err != nil {
			t.Fatal(err)
		}
		if bpf.Delivery(raw.Mode) != bpf.DeliverStack {
			t.Errorf("XDP program left in mode %v, want socket", bpf.Delivery(raw.Mode))
		}
		if len(g.xsks) != 0 {
			t.Errorf("%d AF_XDP sockets left open", len(g.xsks))
		}
		wantFeature(t, g, bpf.FeatAFXDP, host.FeatureForcedOff)
		decides(t, pair, g, 40)
	})
	t.Run("xdp_native off: generic", func(t *testing.T) {
		defer bpf.ForceOff(bpf.FeatXDPNative)()
		pair, g := startPlain(t, "auto", nil)
		if g.xdpMode != "generic" || g.path != config.ModeAFXDP {
			t.Fatalf("path %s xdp mode %s, want afxdp generic: %s", g.path, g.xdpMode, g.why)
		}
		if s, ok := stepOf(g.Steps(), config.ModeAFXDP, "native"); !ok || !strings.Contains(s.Reason, bpf.FeatXDPNative) {
			t.Errorf("steps %+v: want afxdp native refused", g.Steps())
		}
		wantFeature(t, g, bpf.FeatXDPNative, host.FeatureForcedOff)
		var flags uint32
		_ = pair.B.Do(func() error {
			l, err := netlink.LinkByName(pair.B.Link)
			if err == nil && l.Attrs().Xdp != nil {
				flags = l.Attrs().Xdp.AttachMode
			}
			return err
		})
		if flags != xdpAttachedSKB {
			t.Errorf("XDP attach mode %d, want generic (skb, %d)", flags, xdpAttachedSKB)
		}
		decides(t, pair, g, 40)
	})
	t.Run("xdp_link off: plain", func(t *testing.T) {
		defer bpf.ForceOff(bpf.FeatXDPLink)()
		pair, g := startPlain(t, "auto", nil)
		if g.path != config.ModePlain || g.xdp != nil {
			t.Fatalf("path %s, want plain without XDP: %s", g.path, g.why)
		}
		if s, ok := stepOf(g.Steps(), config.ModeAFXDP, ""); !ok || !strings.Contains(s.Reason, bpf.FeatXDPLink) {
			t.Errorf("steps %+v: want afxdp refused for xdp_link", g.Steps())
		}
		_ = pair.B.Do(func() error {
			l, err := netlink.LinkByName(pair.B.Link)
			if err == nil && l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
				t.Errorf("an XDP program is attached on the plain path")
			}
			return err
		})
		decides(t, pair, g, 40)
	})
	t.Run("zero-copy and need_wakeup off: copy bind without the flag", func(t *testing.T) {
		defer bpf.ForceOff(bpf.FeatAFXDPZeroCopy, bpf.FeatAFXDPNeedWakeup)()
		pair, g := startPlain(t, "auto", nil)
		if g.path != config.ModeAFXDP {
			t.Fatalf("path %s, want afxdp: %s", g.path, g.why)
		}
		if m := g.xsks[0].sock.Mode(); m != xdp.BindCopy {
			t.Errorf("bind %v, want copy", m)
		}
		if !g.xsks[0].sock.Config().NoNeedWakeup {
			t.Errorf("socket bound with need_wakeup")
		}
		wantFeature(t, g, bpf.FeatAFXDPZeroCopy, host.FeatureForcedOff)
		wantFeature(t, g, bpf.FeatAFXDPNeedWakeup, host.FeatureForcedOff)
		wantFeature(t, g, bpf.FeatAFXDP, host.FeatureYes)
		decides(t, pair, g, 40)
	})
}

// TestStrictModesFail: a strict mode never steps down; it fails naming the
// feature, with nothing attached.
func TestStrictModesFail(t *testing.T) {
	for _, c := range []struct{ mode, off string }{
		{"afxdp", bpf.FeatAFXDP},
		{"afxdp", bpf.FeatXDPLink},
		{"socket", bpf.FeatXDPLink},
	} {
		t.Run(c.mode+" "+c.off, func(t *testing.T) {
			defer bpf.ForceOff(c.off)()
			pair := testenv.New(t, testenv.Options{KernelQueues: true})
			cfg := itConfig(t, pair.B.Link, c.mode, filepath.Join(t.TempDir(), "passed.ndjson"))
			var err error
			_ = pair.B.Do(func() error {
				var g *Gateway
				g, err = New(cfg, Options{})
				if g != nil {
					g.teardown()
				}
				return nil
			})
			if err == nil || !strings.Contains(err.Error(), c.off) || !strings.Contains(err.Error(), "switched off") {
				t.Fatalf("mode %s with %s off: %v, want an error naming it", c.mode, c.off, err)
			}
			_ = pair.B.Do(func() error {
				l, err := netlink.LinkByName(pair.B.Link)
				if err == nil && l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
					t.Errorf("XDP left attached after a failed start")
				}
				return err
			})
		})
	}
}

// TestStatusFeatures: /status carries every feature and the path steps.
func TestStatusFeatures(t *testing.T) {
	defer bpf.ForceOff(bpf.FeatXDPNative)()
	_, g := startPlain(t, "auto", nil)
	code, body := httpGet(t, g, "/status")
	if code != http.StatusOK {
		t.Fatalf("/status %d: %s", code, body)
	}
	var st struct {
		Features  map[string]host.Feature `json:"features"`
		PathSteps []Step                  `json:"path_steps"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	for _, n := range bpf.AllFeatures() {
		f, ok := st.Features[n]
		if !ok || f.Available == "" || f.Effect == "" {
			t.Errorf("/status feature %s: %+v (present %v)", n, f, ok)
		}
	}
	if f := st.Features[bpf.FeatXDPNative]; f.Available != host.FeatureForcedOff {
		t.Errorf("/status xdp_native %+v, want forced-off", f)
	}
	if f := st.Features[bpf.FeatAFXDP]; f.Available != host.FeatureYes {
		t.Errorf("/status afxdp %+v, want yes", f)
	}
	if len(st.PathSteps) != 2 || st.PathSteps[0].OK || st.PathSteps[0].XDPMode != "native" ||
		!st.PathSteps[1].OK || st.PathSteps[1].Path != config.ModeAFXDP || st.PathSteps[1].XDPMode != "generic" {
		t.Errorf("/status path_steps %+v, want afxdp native refused, afxdp generic taken", st.PathSteps)
	}
	// The typed decoder reads the same object back in report order.
	var typed Status
	if err := json.Unmarshal(body, &typed); err != nil {
		t.Fatal(err)
	}
	if len(typed.Features) != len(bpf.AllFeatures()) || typed.Features[0].Name != bpf.AllFeatures()[0] {
		t.Errorf("typed features %+v", typed.Features)
	}
}

// TestProbeInterface tries a free interface, and leaves one in use alone.
func TestProbeInterface(t *testing.T) {
	pair := testenv.New(t, testenv.Options{KernelQueues: true})
	probe := func() *host.InterfaceReport {
		var r *host.InterfaceReport
		if err := pair.B.Do(func() error {
			var err error
			r, err = host.ProbeInterface(pair.B.Link)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := probe()
	if len(r.Features) != len(bpf.AllFeatures()) || r.RxQueues == nil || r.RxQueues.Active != 1 {
		t.Fatalf("report %+v", r)
	}
	// veth: AF_XDP in copy mode only.
	for name, want := range map[string]string{bpf.FeatAFXDP: host.FeatureYes, bpf.FeatAFXDPZeroCopy: host.FeatureNo, bpf.FeatAFXDPNeedWakeup: host.FeatureYes} {
		if f, _ := r.Features.Get(name); f.Available != want {
			t.Errorf("%s: %+v, want %s", name, f, want)
		}
	}
	if f, _ := r.Features.Get(bpf.FeatXDPNative); f.Available != host.FeatureYes && f.Available != host.FeatureNo {
		t.Errorf("xdp_native: %+v", f)
	}
	// The probe left nothing attached.
	_ = pair.B.Do(func() error {
		l, err := netlink.LinkByName(pair.B.Link)
		if err == nil && l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			t.Errorf("probe left an XDP program attached")
		}
		return err
	})
	// With a gateway running on it, the interface is in use.
	cfg := itConfig(t, pair.B.Link, "afxdp", filepath.Join(t.TempDir(), "passed.ndjson"))
	g, _ := startGateway(t, pair.B, cfg)
	waitReady(t, g)
	for _, f := range probe().Features {
		if f.Scope == "interface" && (f.Available != host.FeatureUnknown || !strings.HasPrefix(f.Reason, "in use")) {
			t.Errorf("%s on a busy interface: %+v, want unknown: in use", f.Name, f)
		}
	}
	decides(t, pair, g, 20) // the probe did not disturb it
}
