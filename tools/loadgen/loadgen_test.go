//go:build linux

package loadgen

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/xgate/xgate/packet"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/gen"
)

func TestAppendFrame(t *testing.T) {
	g, err := gen.New(gen.Config{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := g.Append(nil)
	spec := packet.Frame{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
		SrcPort: 40000, DstPort: 9000, ID: 7, Payload: payload,
	}
	f, err := AppendFrame(nil, spec)
	if err != nil {
		t.Fatal(err)
	}
	// Parsed with the one parser (package packet), as the XDP program
	// and the workers do; the generator's additions checked by hand.
	p, o := packet.ParseUDP(f)
	if o != packet.UDP || !bytes.Equal(f[6:12], spec.SrcMAC) || !bytes.Equal(f[0:6], spec.DstMAC) ||
		p.Src != spec.Src || p.Dst != spec.Dst || p.SrcPort != 40000 || p.DstPort != 9000 || !bytes.Equal(p.Payload, payload) {
		t.Fatalf("parsed %v %+v from %+v", o, p, spec)
	}
	if c := packet.Checksum(f[packet.EthLen : packet.EthLen+packet.IPv4Len]); c != 0 {
		t.Errorf("IPv4 header checksum does not verify (%#x)", c)
	}
	if fl := binary.BigEndian.Uint16(f[packet.EthLen+6:]); fl != packet.IPv4DF {
		t.Errorf("flags %#x, want DF only", fl)
	}
	var ev map[string]any
	if err := json.Unmarshal(p.Payload, &ev); err != nil {
		t.Fatalf("payload is not JSON: %v: %s", err, p.Payload)
	}
	// A known header: RFC 1071's example bytes sum to 0xddf2 → ^ = 0x220d.
	if c := packet.Checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); c != 0x220d {
		t.Fatalf("checksum %#x, want 0x220d", c)
	}
	if _, err := AppendFrame(nil, packet.Frame{SrcMAC: spec.SrcMAC, DstMAC: spec.DstMAC,
		Src: netip.MustParseAddr("2001:2::1"), Dst: spec.Dst}); err == nil {
		t.Fatal("IPv6 source accepted")
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (BPF, network namespaces)")
	}
}

// needLiveFrames skips a test of the live-frames engine where this kernel
// refuses BPF_F_TEST_XDP_LIVE_FRAMES (the AF_XDP engine's tests run then).
func needLiveFrames(t *testing.T) {
	t.Helper()
	needRoot(t)
	if err := bpf.Probe(bpf.FeatLiveFrames); err != nil {
		t.Skipf("kernel refuses %s: %v", bpf.FeatLiveFrames, err)
	}
}

// TestFramesOfGen checks every frame a generator builds: addresses from
// the hosts, sources spread as asked, payloads the events of tools/gen.
func TestFramesOfGen(t *testing.T) {
	needRoot(t)
	pair := testenv.New(t, testenv.Options{})
	g, err := New(Options{From: pair.A, To: pair.B, DstPort: 9000, Frames: 64, Sources: 8,
		Events: gen.Config{Seed: 3, BadShare: 0.25}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	frames, kinds := g.Frames()
	if len(frames) != 64 || len(kinds) != 64 || len(g.Sources()) != 8 {
		t.Fatalf("%d frames, %d kinds, %d sources", len(frames), len(kinds), len(g.Sources()))
	}
	srcs := map[netip.Addr]int{}
	bad := 0
	for i, f := range frames {
		p, o := packet.ParseUDP(f)
		if o != packet.UDP || !bytes.Equal(f[6:12], pair.A.MAC) || !bytes.Equal(f[0:6], pair.B.MAC) || p.Dst != pair.B.Addr || p.DstPort != 9000 {
			t.Fatalf("frame %d: %v %+v", i, o, p)
		}
		srcs[p.Src]++
		if pair.B.Prefix.Contains(p.Src) && p.Src != pair.A.Addr {
			t.Fatalf("frame %d: source %v inside the hosts' prefix", i, p.Src)
		}
		valid := json.Valid(p.Payload)
		if kinds[i] != gen.Valid {
			bad++
		}
		if (kinds[i] == gen.Valid || kinds[i] == gen.MissingKey || kinds[i] == gen.WrongType) != valid {
			t.Fatalf("frame %d: kind %v but json.Valid %v: %s", i, kinds[i], valid, p.Payload)
		}
	}
	if len(srcs) != 8 || srcs[pair.A.Addr] != 8 {
		t.Fatalf("sources %v", srcs)
	}
	if bad == 0 {
		t.Fatal("BadShare 0.25 gave no malformed frame in 64")
	}
}

// TestSendToSocket sends a bounded run to a UDP socket in the peer's
// namespace, through the pass-through program, and accounts for every
// datagram: the program's count, veth's, the receiver program's, and
// the socket's (received + receive-buffer drops).
func TestSendToSocket(t *testing.T) {
	needLiveFrames(t)
	pair := testenv.New(t, testenv.Options{})
	rcv, err := AttachPass(pair.B)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	fd, port, err := pair.B.ListenUDP(pair.B.Addr, 0, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
		t.Fatal(err)
	}

	const n = 50000
	g, err := New(Options{Engine: EngineLiveFrames, From: pair.A, To: pair.B, DstPort: port, Frames: 256, Sources: 16,
		Events: gen.Config{Seed: 9}, Rate: 500000})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	frames, _ := g.Frames()
	payloads := map[string]bool{}
	for _, f := range frames {
		payloads[string(f[packet.HeaderLen:])] = true
	}

	type recvd struct {
		n, foreign uint64
		srcs       map[netip.Addr]bool
	}
	got := make(chan recvd, 1)
	stop := make(chan struct{})
	go func() {
		r := recvd{srcs: map[netip.Addr]bool{}}
		buf := make([]byte, 2048)
		for {
			m, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				select {
				case <-stop:
					got <- r
					return
				default:
					continue
				}
			}
			r.n++
			if !payloads[string(buf[:m])] {
				r.foreign++
			}
			if sa, ok := from.(*unix.SockaddrInet4); ok {
				r.srcs[netip.AddrFrom4(sa.Addr)] = true
			}
		}
	}()
	snmp0, err := pair.B.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	res, err := g.Send(context.Background(), n)
	if err != nil {
		t.Fatalf("send: %v (%v)", err, res)
	}
	t.Logf("%v", res)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	r := <-got
	snmp1, err := pair.B.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	drops := snmp1["Udp.RcvbufErrors"] - snmp0["Udp.RcvbufErrors"]
	seen, err := rcv.Seen()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("received %d, receive-buffer drops %d, receiver XDP saw %d, %d sources", r.n, drops, seen, len(r.srcs))

	var byKind uint64
	for _, c := range res.ByKind {
		byKind += c
	}
	if res.Sent != n || byKind != n {
		t.Fatalf("sent %d (by kind %d), want %d", res.Sent, byKind, n)
	}
	if !res.StatsOK || res.XmitOK != n || res.XmitErrors != 0 {
		t.Fatalf("veth counters: %v", res)
	}
	if seen != n {
		t.Fatalf("the receiving XDP program saw %d, want %d", seen, n)
	}
	if r.n+drops != n {
		t.Fatalf("received %d + dropped %d != sent %d", r.n, drops, n)
	}
	if r.foreign != 0 {
		t.Fatalf("%d datagrams that are not our payloads", r.foreign)
	}
	if r.n > 0 && len(r.srcs) != 16 {
		t.Fatalf("datagrams from %d sources, want 16", len(r.srcs))
	}
	// Each CPU the run touched sends the frames in turn from where it
	// left off: every frame within ±1 per CPU of an even share.
	var perFrame uint64
	tol := uint64(possibleCPUs())
	for i, c := range g.Counts() {
		if c+tol < n/256 || c > n/256+tol {
			t.Fatalf("frame %d sent %d times, want %d ± %d", i, c, n/256, tol)
		}
		perFrame += c
	}
	if perFrame != n {
		t.Fatalf("per-frame counts sum to %d", perFrame)
	}
	if res.Elapsed < 80*time.Millisecond {
		t.Fatalf("%d frames at 500k/s took %v: not paced", n, res.Elapsed)
	}
}

// TestSendBounds: a Send must be bounded, a Duration stops it, and a
// peer without XDP program shows up as veth transmit errors, not as
// silence.
func TestSendBounds(t *testing.T) {
	needLiveFrames(t)
	pair := testenv.New(t, testenv.Options{})
	g, err := New(Options{Engine: EngineLiveFrames, From: pair.A, To: pair.B, DstPort: 9000, Frames: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.Send(context.Background(), 0); err == nil {
		t.Fatal("unbounded Send accepted")
	}
	// No XDP program on B: veth refuses every frame.
	res, err := g.Send(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("no receiver program: %v", res)
	if res.Sent != 1000 || !res.StatsOK || res.XmitOK != 0 || res.Undelivered() != 1000 {
		t.Fatalf("without a receiving program: %v, want 1000 sent and refused", res)
	}

	rcv, err := AttachDrop(pair.B)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	g2, err := New(Options{Engine: EngineLiveFrames, From: pair.A, To: pair.B, DstPort: 9000, Frames: 4, Duration: 100 * time.Millisecond, Rate: 100000})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	res, err = g2.Send(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	seen, _ := rcv.Seen()
	t.Logf("100ms at 100k/s: %v; receiver saw %d", res, seen)
	if res.Elapsed > time.Second || res.Sent == 0 || res.Sent > 20000 || seen != res.Sent {
		t.Fatalf("duration-bounded send: %v, receiver saw %d", res, seen)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res, err := g.Send(ctx, 1000); err != nil || res.Sent != 0 {
		t.Fatalf("cancelled send: %v %v", res, err)
	}
}

// TestGeneratorCeiling measures the generator alone into a receiver that
// drops in XDP (XGATE_THROUGHPUT=1; figures only, no assertion but the
// counts). It also times short test runs, i.e. the setup cost per run.
func TestGeneratorCeiling(t *testing.T) {
	needRoot(t)
	if os.Getenv("XGATE_THROUGHPUT") != "1" {
		t.Skip("set XGATE_THROUGHPUT=1 to measure")
	}
	pair := testenv.New(t, testenv.Options{})
	rcv, err := AttachDrop(pair.B)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	for _, c := range []struct {
		engine       string
		chunk, batch uint32
		rate         float64
		n            uint64
	}{{EngineLiveFrames, 0, 64, 0, 5000000}, {EngineLiveFrames, 65536, 64, 0, 2000000}, {EngineLiveFrames, 0, 256, 0, 5000000},
		{EngineLiveFrames, 0, 64, 1e6, 2000000}, {EngineLiveFrames, 0, 64, 3e6, 3000000},
		{EngineAFXDP, 0, 16, 0, 2000000}, {EngineAFXDP, 0, 64, 0, 2000000}, {EngineAFXDP, 0, 256, 0, 2000000}, {EngineAFXDP, 0, 64, 5e5, 1000000}} {
		if c.engine == EngineLiveFrames && bpf.Probe(bpf.FeatLiveFrames) != nil {
			t.Logf("%s refused by this kernel: live-frames figures skipped", bpf.FeatLiveFrames)
			continue
		}
		g, err := New(Options{Engine: c.engine, From: pair.A, To: pair.B, DstPort: 9000, Chunk: c.chunk, BatchSize: c.batch, Rate: c.rate, CPU: 1, Pin: true})
		if err != nil {
			t.Fatal(err)
		}
		s0, _ := rcv.Seen()
		res, err := g.Send(context.Background(), c.n)
		g.Close()
		if err != nil {
			t.Fatal(err)
		}
		s1, _ := rcv.Seen()
		t.Logf("%s chunk %5d batch %3d rate %.0f: %v; spins %d; receiver saw %d; sender CPU %v", c.engine, c.chunk, c.batch, c.rate, res, res.Spins, s1-s0, res.SenderCPU)
		if (c.engine == EngineLiveFrames && s1-s0 != res.XmitOK) || s1-s0+res.Undelivered() != res.Sent {
			t.Errorf("receiver saw %d, sent %d: %v", s1-s0, res.Sent, res)
		}
	}
}

// TestSendResumesAfterSignals: signals to the process interrupt test runs
// (EINTR after an unknown number of repetitions); the count stays exact
// and the Send still sends exactly n.
func TestSendResumesAfterSignals(t *testing.T) {
	needLiveFrames(t)
	pair := testenv.New(t, testenv.Options{})
	rcv, err := AttachDrop(pair.B)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	g, err := New(Options{Engine: EngineLiveFrames, From: pair.A, To: pair.B, DstPort: 9000, Frames: 100, Chunk: 1 << 22})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A handful of signals, spaced: each interrupted run is resumed
		// with a new one, which costs its setup (≈ 25 ms) again.
		for i := 0; i < 10; i++ {
			select {
			case <-stop:
				return
			case <-time.After(40 * time.Millisecond):
				// SIGURG is the runtime's preemption signal: harmless to
				// the Go side; sent to the sending thread, it interrupts
				// its test run.
				if tid := g.tid.Load(); tid != 0 {
					_ = unix.Tgkill(os.Getpid(), int(tid), unix.SIGURG)
				}
			}
		}
	}()
	const n = 3_000_000
	res, err := g.Send(context.Background(), n)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	seen, _ := rcv.Seen()
	t.Logf("%v; receiver saw %d", res, seen)
	if res.Sent != n || seen != n || res.XmitOK != n {
		t.Fatalf("sent %d, receiver saw %d, want %d", res.Sent, seen, n)
	}
	var sum uint64
	for _, c := range g.Counts() {
		sum += c
	}
	if sum != n {
		t.Fatalf("per-frame counts sum to %d", sum)
	}
	if res.Resumed == 0 {
		t.Fatal("no test run was interrupted: the test did not test resuming")
	}
}
