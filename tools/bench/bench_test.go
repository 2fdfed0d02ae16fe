//go:build linux

package bench

import (
	"context"
	"math"
	"net"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
)

// The bench runs the rules of examples/xgate.yaml (their decisions: not
// their routes or added fields).
func TestDefaultRulesAreTheExample(t *testing.T) {
	b, err := os.ReadFile("../../examples/xgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ex, ours map[string]any
	if err := yaml.Unmarshal(b, &ex); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(DefaultRules), &ours); err != nil {
		t.Fatal(err)
	}
	// Output-side keys need the example's sinks and lists, which the bench
	// has not (it has no sinks): the decisions are what it compares.
	for _, r := range ex["rules"].([]any) {
		delete(r.(map[string]any), "to")
		delete(r.(map[string]any), "enrich")
	}
	if !reflect.DeepEqual(ex["rules"], ours["rules"]) {
		t.Fatalf("DefaultRules differ from examples/xgate.yaml:\n%v\n%v", ours["rules"], ex["rules"])
	}
	for _, m := range Modes {
		cfg, err := GatewayConfig("veth0", m)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if cfg.Pin.Path != "" || len(cfg.Sinks) != 0 || cfg.HTTP.Listen != "" {
			t.Errorf("%s: pin %q sinks %v", m, cfg.Pin.Path, cfg.Sinks)
		}
		cpus, err := host.ParseCPUList(cfg.Workers.CPUs)
		if err != nil || len(cpus) == 0 {
			t.Errorf("%s: workers.cpus %q: %v", m, cfg.Workers.CPUs, err)
		}
		if runtime.NumCPU() > senderCPU && slices.Contains(cpus, senderCPU) {
			t.Errorf("%s: workers.cpus %q holds the sender's CPU %d", m, cfg.Workers.CPUs, senderCPU)
		}
	}
	if _, err := GatewayConfig("veth0", "baseline"); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestQuantile(t *testing.T) {
	if q := Quantile(make([]uint64, 24), 0.5); q != 0 {
		t.Errorf("empty: %v", q)
	}
	h := make([]uint64, 24)
	h[4] = 100 // all in (8, 16] µs
	if q := Quantile(h, 0.5); q != 12 {
		t.Errorf("p50 %v, want 12", q)
	}
	h[10] = 1 // one slow frame in (512, 1024]
	if q := Quantile(h, 0.999); q <= 512 || q > 1024 {
		t.Errorf("p99.9 %v, want in (512, 1024]", q)
	}
	if q := Quantile(h, 0.99); q > 16 {
		t.Errorf("p99 %v, want <= 16", q)
	}
	if q := Quantile(h, 1); math.IsNaN(q) || q > 1024 {
		t.Errorf("p100 %v", q)
	}
}

// The socket sender sends exactly Count datagrams, over loopback here
// (no root needed).
func TestSendSocketCount(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if f, err := pc.File(); err == nil {
		_ = unix.SetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		f.Close()
	}
	dst := netip.MustParseAddrPort(pc.LocalAddr().String())
	const n = 2000
	got := make(chan int, 1)
	go func() {
		buf := make([]byte, 2048)
		c := 0
		for c < n {
			_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := pc.ReadFromUDP(buf); err != nil {
				break
			}
			c++
		}
		got <- c
	}()
	res, err := SendSocket(context.Background(), SocketOptions{Dst: dst, Sockets: 3, Batch: 16, Count: n, Rate: 200000})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != n {
		t.Fatalf("sent %d, want %d", res.Sent, n)
	}
	if c := <-got; c != n {
		t.Errorf("received %d of %d", c, n)
	}
	if _, err := SendSocket(context.Background(), SocketOptions{Dst: dst}); err == nil {
		t.Error("unbounded send accepted")
	}
}

// The allocation count of a gateway run is taken on the stacks of
// workerFuncPrefix: that must be where the running gateway's workers are.
// An afxdp run at a modest rate then allocates nothing per event there.
func TestWorkerAllocs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (test hosts, XDP)")
	}
	b, err := start(Options{Mode: "afxdp", Duration: 500 * time.Millisecond, InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.close(); err != nil {
			t.Error(err)
		}
	}()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(2 * time.Second)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		if strings.Contains(stacks, workerFuncPrefix+"XSK(") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine runs %sXSK:\n%s", workerFuncPrefix, stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r, err := b.phase(context.Background(), "measure", b.o.Duration, 200000)
	if err != nil {
		t.Fatal(err)
	}
	if r.Decided == 0 || r.Unaccounted != 0 {
		t.Fatalf("decided %d, unaccounted %d", r.Decided, r.Unaccounted)
	}
	if r.AllocsPerEvent != 0 {
		t.Errorf("allocs_per_event %g on the workers, want 0 (process: %g)", r.AllocsPerEvent, r.ProcessAllocsPerEvent)
	}
	if r.ProcessAllocsPerEvent == 0 {
		t.Errorf("the process made no allocation in the window: is it counted at all?")
	}
}

func TestOptionsTuneGateway(t *testing.T) {
	for _, tc := range []struct {
		spin, want time.Duration
		rt         int
	}{
		{0, config.DefaultRxSpin, 0},
		{200 * time.Microsecond, 200 * time.Microsecond, 50},
		{-1, 0, 0},
	} {
		cfg, err := Options{Mode: string(config.ModeAFXDP), Spin: tc.spin, RTPriority: tc.rt}.gatewayConfig("veth0")
		if err != nil {
			t.Fatal(err)
		}
		if cfg.AFXDP.Spin != tc.want || cfg.Workers.RealtimePriority != tc.rt || !cfg.Probes.Enabled {
			t.Errorf("spin %v rt %d: config spin %v rt %d probes %v", tc.spin, tc.rt, cfg.AFXDP.Spin, cfg.Workers.RealtimePriority, cfg.Probes.Enabled)
		}
	}
	cfg, err := Options{Mode: string(config.ModeSocket), NoProbes: true}.gatewayConfig("veth0")
	if err != nil || cfg.Probes.Enabled {
		t.Errorf("NoProbes: probes enabled %v, %v", cfg.Probes.Enabled, err)
	}
}

// TestGeneratorBound: a run is generator-bound when its decided rate comes
// within 10 % of the generator's ceiling, or the offered rate does while
// the target dropped next to nothing; never without a ceiling.
func TestGeneratorBound(t *testing.T) {
	for _, c := range []struct {
		r    Report
		want bool
	}{
		{Report{GeneratorCeilingPPS: 1e6, EventsPerSec: 0.95e6}, true},
		{Report{GeneratorCeilingPPS: 1e6, EventsPerSec: 0.5e6, OfferedPPS: 0.95e6, Sent: 1e6}, true},
		{Report{GeneratorCeilingPPS: 1e6, EventsPerSec: 0.5e6, OfferedPPS: 0.95e6, Sent: 1e6, RingDropped: 4e5}, false},
		{Report{GeneratorCeilingPPS: 1e6, EventsPerSec: 0.5e6, OfferedPPS: 0.6e6, Sent: 1e6}, false},
		{Report{EventsPerSec: 0.95e6, OfferedPPS: 1e6}, false},
	} {
		if got := c.r.generatorBound(); got != c.want {
			t.Errorf("%+v: generator-bound %v, want %v", c.r, got, c.want)
		}
	}
}

// A receiver runs in a child process of its own: its tally and costs come
// from there, and it exits cleanly when the bench closes. The yardstick
// (allocating per event) and the gateway (not on its workers) each report
// their own process's allocations.
func TestReceiverProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (test hosts, XDP)")
	}
	for _, mode := range []string{ModeGJSON, "socket"} {
		t.Run(mode, func(t *testing.T) {
			b, err := start(Options{Mode: mode, Duration: 500 * time.Millisecond, CeilingDuration: -1})
			if err != nil {
				t.Fatal(err)
			}
			if b.child == nil {
				b.close()
				t.Fatal("the receiver runs in the bench's process")
			}
			pid := b.child.cmd.Process.Pid
			r, err := b.phase(context.Background(), "measure", b.o.Duration, 50000)
			if cerr := b.close(); cerr != nil {
				t.Error(cerr)
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Decided == 0 || r.Unaccounted != 0 {
				t.Fatalf("decided %d, unaccounted %d", r.Decided, r.Unaccounted)
			}
			if r.ReceiverCPUS <= 0 || r.EventsPerCPUS <= 0 {
				t.Errorf("receiver CPU %g s, %g events per CPU-s: the child's CPU time is not read", r.ReceiverCPUS, r.EventsPerCPUS)
			}
			if r.RSSBytes == 0 {
				t.Error("no RSS read from the receiver process")
			}
			switch mode {
			case ModeGJSON:
				if r.ProcessAllocsPerEvent < 1 {
					t.Errorf("gjson server: %g allocations per event in its process, want ≥ 1", r.ProcessAllocsPerEvent)
				}
			default:
				if r.AllocsPerEvent != 0 {
					t.Errorf("gateway: %g allocations per event on its workers, want 0", r.AllocsPerEvent)
				}
			}
			if st := b.child.cmd.ProcessState; st == nil || !st.Exited() || st.ExitCode() != 0 {
				t.Errorf("receiver process %d: %v, want a clean exit", pid, st)
			}
		})
	}
}

// A receiver that cannot start: its process says why, exits, and the
// bench removes what it built.
func TestReceiverProcessFails(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (test hosts, XDP)")
	}
	b, err := start(Options{Mode: "no-such-mode", CeilingDuration: -1})
	if err == nil {
		b.close()
		t.Fatal("a receiver of an unknown mode started")
	}
	if !strings.Contains(err.Error(), "no-such-mode") {
		t.Errorf("error %q does not name the mode", err)
	}
	t.Log(err)
}
