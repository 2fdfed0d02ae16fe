//go:build linux

package loadgen

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/gen"
)

// TestAFXDPSendExact: the AF_XDP engine sends an exact count into a UDP
// socket on the peer (no XDP program there: frames arrive as skbs) and into
// an XDP-drop receiver; Sent, ByKind, per-frame counts and what arrived
// agree.
func TestAFXDPSendExact(t *testing.T) {
	needRoot(t)
	pair := testenv.New(t, testenv.Options{})
	fd, port, err := pair.B.ListenUDP(pair.B.Addr, 0, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	const n = 20000
	g, err := New(Options{Engine: EngineAFXDP, From: pair.A, To: pair.B, DstPort: port, Frames: 100, Sources: 4,
		Events: gen.Config{Seed: 5, BadShare: 0.2}, Rate: 200000})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Engine() != EngineAFXDP {
		t.Fatalf("engine %q", g.Engine())
	}
	snmp0, err := pair.B.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	res, err := g.Send(context.Background(), n)
	if err != nil {
		t.Fatalf("send: %v (%v)", err, res)
	}
	t.Logf("%v", res)
	if res.Engine != EngineAFXDP || res.Sent != n || res.Refused != 0 || !res.StatsOK {
		t.Fatalf("result %+v, want %d sent by afxdp", res, n)
	}
	// ByKind matches the kinds of the frames sent: n/100 rounds of all 100.
	_, kinds := g.Frames()
	var want [gen.NumKinds]uint64
	for _, k := range kinds {
		want[k] += n / 100
	}
	if res.ByKind != want {
		t.Fatalf("by kind %v, want %v", res.ByKind, want)
	}
	for i, c := range g.Counts() {
		if c != n/100 {
			t.Fatalf("frame %d sent %d times, want %d", i, c, n/100)
		}
	}
	// Everything sent arrives at the socket or is counted as dropped on
	// the way (veth tx_dropped, the socket's receive buffer).
	var got uint64
	buf := make([]byte, 2048)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 300000}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err := unix.Recvfrom(fd, buf, 0); err != nil {
			break
		}
		got++
	}
	snmp1, err := pair.B.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	drops := snmp1["Udp.RcvbufErrors"] - snmp0["Udp.RcvbufErrors"]
	if got+drops+res.Undelivered() != n {
		t.Fatalf("received %d + receive-buffer drops %d + undelivered %d != sent %d", got, drops, res.Undelivered(), n)
	}

	// Into an XDP-drop receiver, twice: the frame position carries over
	// between Sends.
	rcv, err := AttachDrop(pair.B)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	for range 2 {
		s0, _ := rcv.Seen()
		res, err = g.Send(context.Background(), 12345)
		if err != nil {
			t.Fatal(err)
		}
		s1, _ := rcv.Seen()
		t.Logf("into XDP drop: %v; receiver saw %d", res, s1-s0)
		if res.Sent != 12345 || s1-s0+res.Undelivered() != res.Sent {
			t.Fatalf("sent %d, receiver saw %d, undelivered %d", res.Sent, s1-s0, res.Undelivered())
		}
	}
	var sum uint64
	for _, c := range g.Counts() {
		sum += c
	}
	if sum != n+2*12345 {
		t.Fatalf("per-frame counts sum to %d", sum)
	}
}

// TestAFXDPPacedAndBounded: Rate is roughly honoured (loosely: a paced send
// of 0.2 s worth takes at least half of that and is not a burst), Duration
// and ctx stop a Send, and an unbounded Send is refused.
func TestAFXDPPacedAndBounded(t *testing.T) {
	needRoot(t)
	pair := testenv.New(t, testenv.Options{})
	rcv, err := AttachDrop(pair.B)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	g, err := New(Options{Engine: EngineAFXDP, From: pair.A, To: pair.B, DstPort: 9000, Frames: 8, Rate: 50000})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.Send(context.Background(), 0); err == nil {
		t.Fatal("unbounded Send accepted")
	}
	res, err := g.Send(context.Background(), 10000)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("10000 at 50k/s: %v", res)
	if res.Sent != 10000 || res.Elapsed < 100*time.Millisecond {
		t.Fatalf("paced send: %v: want 10000 frames over ≥ 100 ms", res)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res, err := g.Send(ctx, 1000); err != nil || res.Sent != 0 {
		t.Fatalf("cancelled send: %v %v", res, err)
	}
	// One AF_XDP generator per queue of the link: the next one waits for
	// this one's socket to go.
	g.Close()

	g2, err := New(Options{Engine: EngineAFXDP, From: pair.A, To: pair.B, DstPort: 9000, Frames: 8, Rate: 100000, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	s0, _ := rcv.Seen()
	res, err = g2.Send(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	s1, _ := rcv.Seen()
	t.Logf("100ms at 100k/s: %v; receiver saw %d", res, s1-s0)
	if res.Elapsed > time.Second || res.Sent == 0 || res.Sent > 20000 || s1-s0+res.Undelivered() != res.Sent {
		t.Fatalf("duration-bounded send: %v, receiver saw %d", res, s1-s0)
	}
}

// TestEngineSelection: with live frames switched off, auto picks AF_XDP
// and sends (never skips); naming the live-frames engine then fails with
// the feature named. With live frames on, auto picks them where this
// kernel allows them (else the test says so and skips that half).
func TestEngineSelection(t *testing.T) {
	needRoot(t)
	if _, err := ResolveEngine("bogus"); err == nil {
		t.Fatal("unknown engine accepted")
	}
	pair := testenv.New(t, testenv.Options{})
	rcv, err := AttachDrop(pair.B)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	t.Run("live frames off", func(t *testing.T) {
		restore := bpf.ForceOff(bpf.FeatLiveFrames)
		defer restore()
		if e, err := ResolveEngine(""); err != nil || e != EngineAFXDP {
			t.Fatalf("auto resolved to %q, %v; want %s", e, err, EngineAFXDP)
		}
		g, err := New(Options{From: pair.A, To: pair.B, DstPort: 9000, Frames: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		if g.Engine() != EngineAFXDP {
			t.Fatalf("auto picked %q with live frames off", g.Engine())
		}
		s0, _ := rcv.Seen()
		res, err := g.Send(context.Background(), 5000)
		s1, _ := rcv.Seen()
		if err != nil || res.Sent != 5000 || s1-s0+res.Undelivered() != 5000 {
			t.Fatalf("send: %v %v, receiver saw %d", res, err, s1-s0)
		}
		_, err = New(Options{Engine: EngineLiveFrames, From: pair.A, To: pair.B, DstPort: 9000})
		if !errors.Is(err, bpf.ErrForcedOff) || !strings.Contains(err.Error(), EngineAFXDP) {
			t.Fatalf("live frames forced off: New = %v, want ErrForcedOff and a hint to afxdp", err)
		}
	})
	t.Run("live frames", func(t *testing.T) {
		if err := bpf.Probe(bpf.FeatLiveFrames); err != nil {
			t.Skipf("kernel refuses %s: %v", bpf.FeatLiveFrames, err)
		}
		g, err := New(Options{From: pair.A, To: pair.B, DstPort: 9000, Frames: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		if g.Engine() != EngineLiveFrames {
			t.Fatalf("auto picked %q with live frames available", g.Engine())
		}
		res, err := g.Send(context.Background(), 5000)
		if err != nil || res.Sent != 5000 {
			t.Fatalf("send: %v %v", res, err)
		}
	})
}

// TestSendLeavesThreadsAsTheyWere: a pinned Send runs on a thread of its
// own making — in the sending host's namespace, on one CPU — and puts it
// back before it returns: afterwards every thread of the process, the main
// thread among them (whose affinity the gateway reads as the process's),
// has the affinity and network namespace it had.
func TestSendLeavesThreadsAsTheyWere(t *testing.T) {
	needRoot(t)
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &before); err != nil {
		t.Fatal(err)
	}
	if before.Count() < 2 {
		t.Skip("one CPU: pinning changes nothing to see")
	}
	cpu := 0
	for c := 0; c < 1024; c++ {
		if before.IsSet(c) {
			cpu = c // the last allowed CPU
		}
	}
	pair := testenv.New(t, testenv.Options{})
	g, err := New(Options{Engine: EngineAFXDP, From: pair.A, To: pair.B, DstPort: 9000, Frames: 4, CPU: cpu, Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	mainNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if res, err := g.Send(context.Background(), 100); err != nil || res.Sent != 100 {
			t.Fatalf("send: %v %v", res, err)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			continue // the thread ended meanwhile
		}
		if set != before {
			t.Errorf("thread %d left with affinity %v, the process had %v", tid, set, before)
		}
		if ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net"); err == nil && ns != mainNS {
			t.Errorf("thread %d left in namespace %s, not %s", tid, ns, mainNS)
		}
	}
}

// TestAFXDPStall: with the sending link down the kernel completes nothing;
// the Send ends with an error after xskStall instead of hanging, and the
// frames left on the ring are reported as refused, not as sent.
func TestAFXDPStall(t *testing.T) {
	needRoot(t)
	pair := testenv.New(t, testenv.Options{})
	g, err := New(Options{Engine: EngineAFXDP, From: pair.A, To: pair.B, DstPort: 9000, Frames: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	nh, err := netlink.NewHandleAt(pair.A.NetNS())
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	l, err := nh.LinkByIndex(pair.A.Ifindex)
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := g.Send(context.Background(), 100000)
	t.Logf("link down: %v, %v after %v", res, err, time.Since(start))
	if err == nil || !strings.Contains(err.Error(), "no frame completed") {
		t.Fatalf("send on a downed link: %v, want a stall error", err)
	}
	if res.Sent != 0 || res.Refused == 0 || time.Since(start) > xskStall+xskFlush+5*time.Second {
		t.Fatalf("send on a downed link: %v", res)
	}
}
