//go:build linux

package xdp

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/packet"
	"github.com/xgate/xgate/testenv"
	"golang.org/x/sys/unix"
)

const testPort = 9000

// rig is a veth pair with the XDP program attached (AF_XDP mode) to B and
// one Socket per RX queue of B registered in its XSKMAP. Everything goes
// away with the test (t.Cleanup, last in first out: sockets, link,
// program, pair).
type rig struct {
	pair  *testenv.Pair
	x     *bpf.XDP
	socks []*Socket
}

func newRig(t testing.TB, queues int, cfg Config) *rig {
	t.Helper()
	return newRigStamp(t, queues, cfg, bpf.StampAuto)
}

// newRigStamp is newRig with the program's stamp chosen (the sockets are
// opened to match); it skips when this kernel refuses that stamp.
func newRigStamp(t testing.TB, queues int, cfg Config, stamp bpf.Stamp) *rig {
	t.Helper()
	pair := testenv.New(t, testenv.Options{RxQueues: queues}) // skips unless root
	x, err := bpf.LoadXDP(bpf.Options{
		Queues:      queues,
		ListenPorts: []uint16{testPort},
		Config:      bpf.Config{Deliver: bpf.DeliverXSK},
		Stamp:       stamp,
	})
	if errors.Is(err, bpf.ErrNotSupported) {
		t.Skipf("kernel lacks a feature: %v", err)
	}
	if err != nil {
		t.Fatalf("load xdp: %+v", err)
	}
	t.Cleanup(func() { x.Close() })
	b := pair.B
	var l link.Link
	if err := b.Do(func() error {
		l, err = x.Attach(b.Ifindex, 0)
		return err
	}); err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { l.Close() })

	r := &rig{pair: pair, x: x}
	got, _ := x.Stamp()
	cfg.PrefixStamp = got == bpf.StampPrefix
	for q := 0; q < queues; q++ {
		s := openOn(t, b, q, cfg)
		if err := x.RegisterXSK(uint32(q), s.FD()); err != nil {
			t.Fatalf("register queue %d: %v", q, err)
		}
		r.socks = append(r.socks, s)
	}
	return r
}

// openOn opens a Socket on queue q of h inside h's namespace and closes it
// when the test ends.
func openOn(t testing.TB, h *testenv.Host, q int, cfg Config) *Socket {
	t.Helper()
	var s *Socket
	err := h.Do(func() error {
		var err error
		s, err = Open(h.Ifindex, q, cfg)
		return err
	})
	if errors.Is(err, unix.EAFNOSUPPORT) {
		t.Skipf("no AF_XDP: %v", err)
	}
	if err != nil {
		t.Fatalf("open queue %d: %v", q, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close queue %d: %v", q, err)
		}
	})
	if s.Mode() != BindCopy && s.Mode() != BindZeroCopy {
		t.Fatalf("mode %v", s.Mode())
	}
	return s
}

func (r *rig) redirected(t *testing.T) uint64 {
	t.Helper()
	c, err := r.x.ReadCounters()
	if err != nil {
		t.Fatal(err)
	}
	return c[bpf.ReasonRedirect].Packets
}

func monotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// drain receives on s until want frames arrived or timeout passed, calls
// fn on each frame before releasing it, and returns the count.
func drain(t *testing.T, s *Socket, want int, timeout time.Duration, fn func(Frame)) int {
	t.Helper()
	batch := make([]Frame, 64)
	got := 0
	for deadline := time.Now().Add(timeout); got < want && time.Now().Before(deadline); {
		n, err := s.Receive(batch)
		if err != nil {
			t.Errorf("receive: %v", err)
			return got
		}
		for _, f := range batch[:n] {
			if fn != nil {
				fn(f)
			}
		}
		s.Release(batch[:n])
		got += n
	}
	return got
}

// TestReceiveQueues sends flows from the peer to a two-queue veth with a
// socket on each queue: every datagram arrives once, intact, stamped with
// a CLOCK_MONOTONIC time inside the test's window, and the program's
// redirect count equals what the sockets received.
// Both stamps: the metadata branch skips where the kernel refuses
// bpf_xdp_adjust_meta, the prefix branch runs everywhere.
func TestReceiveQueues(t *testing.T) {
	for _, stamp := range []bpf.Stamp{bpf.StampMeta, bpf.StampPrefix} {
		t.Run(stamp.String(), func(t *testing.T) { testReceiveQueues(t, stamp) })
	}
}

func testReceiveQueues(t *testing.T, stamp bpf.Stamp) {
	const queues, flows, perFlow = 2, 16, 64
	cfg := Config{FrameSize: 2048, PollTimeout: 20 * time.Millisecond}
	r := newRigStamp(t, queues, cfg, stamp)
	a, b := r.pair.A, r.pair.B
	t.Logf("bound in %v mode", r.socks[0].Mode())
	before := r.redirected(t)
	t0 := monotonic()

	dst := netip.AddrPortFrom(b.Addr, testPort)
	sent := 0
	want := map[string]bool{}
	for f := 0; f < flows; f++ {
		// One socket per flow: a new flow hash, so flows spread over the
		// TX queues of A and with them the RX queues of B.
		fd, err := a.DialUDP(dst)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < perFlow; i++ {
			p := fmt.Appendf(nil, `{"flow":%d,"seq":%d,"pad":"%s"}`, f, i, bytes.Repeat([]byte("x"), i))
			if _, err := unix.Write(fd, p); err != nil {
				t.Fatalf("send: %v", err)
			}
			want[string(p)] = true
			sent++
		}
		unix.Close(fd)
	}

	var mu sync.Mutex
	got := map[string]int{}
	perQueue := make([]int, queues)
	var wg sync.WaitGroup
	var bad []string
	for q, s := range r.socks {
		wg.Go(func() {
			perQueue[q] = drainAll(s, 3*time.Second, func(f Frame) {
				p := udpPayload(f.Data, testPort)
				mu.Lock()
				defer mu.Unlock()
				if p == nil {
					bad = append(bad, fmt.Sprintf("queue %d: not our datagram: % x", q, f.Data))
					return
				}
				got[string(p)]++
				if !f.Meta.OK {
					bad = append(bad, fmt.Sprintf("queue %d: no metadata", q))
				} else if f.Meta.RxNs < t0 || f.Meta.RxNs > monotonic() {
					bad = append(bad, fmt.Sprintf("queue %d: rx_ns %d outside [%d, now]", q, f.Meta.RxNs, t0))
				}
			}, sent, &mu, got)
		})
	}
	wg.Wait()
	for _, e := range bad[:min(len(bad), 10)] {
		t.Error(e)
	}
	total := 0
	for _, n := range perQueue {
		total += n
	}
	t.Logf("sent %d, received per queue %v", sent, perQueue)
	if total != sent || len(got) != len(want) {
		t.Errorf("received %d frames (%d distinct), sent %d", total, len(got), sent)
	}
	for p, n := range got {
		if !want[p] || n != 1 {
			t.Errorf("payload %q received %d times (sent: %v)", p, n, want[p])
			break
		}
	}
	for q, n := range perQueue {
		if n == 0 {
			t.Errorf("queue %d received nothing from %d flows", q, flows)
		}
	}
	if red := r.redirected(t) - before; red != uint64(total) {
		t.Errorf("program redirected %d, sockets received %d", red, total)
	}
	for q, s := range r.socks {
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.RxDropped+st.RxRingFull+st.RxInvalidDescs+st.BadDescs+st.BadReleases != 0 || st.Received != st.Released {
			t.Errorf("queue %d stats: %+v", q, st)
		}
		t.Logf("queue %d stats: %+v", q, st)
	}
}

// drainAll receives until the frames of all queues together (counted in
// got under mu) reach total, or timeout; it returns this socket's count.
func drainAll(s *Socket, timeout time.Duration, fn func(Frame), total int, mu *sync.Mutex, got map[string]int) int {
	batch := make([]Frame, 64)
	n := 0
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		mu.Lock()
		seen := 0
		for _, c := range got {
			seen += c
		}
		mu.Unlock()
		if seen >= total {
			break
		}
		k, err := s.Receive(batch)
		if err != nil {
			return n
		}
		for _, f := range batch[:k] {
			fn(f)
		}
		s.Release(batch[:k])
		n += k
	}
	return n
}

// TestRxRingFull overflows a socket that nobody reads, once through a
// small RX ring (rx_ring_full) and once through a small UMEM (the fill
// ring runs dry: rx_dropped): the overflow is counted, nothing hangs,
// every redirected packet is either in the ring or counted, and after
// draining the socket works again.
func TestRxRingFull(t *testing.T) {
	const burst = 1000
	for _, tc := range []struct {
		name  string
		cfg   Config
		holds int // frames the socket can hold before dropping
		full  bool
	}{
		{"rx ring", Config{RxSize: 64, FillSize: 256, Frames: 256}, 64, true},
		{"fill ring", Config{RxSize: 256, FillSize: 64, Frames: 64}, 64, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.FrameSize, cfg.PollTimeout = 2048, 20*time.Millisecond
			r := newRig(t, 1, cfg)
			s := r.socks[0]
			dst := netip.AddrPortFrom(r.pair.B.Addr, testPort)
			before := r.redirected(t)
			if _, err := r.pair.A.SendUDP(dst, []byte(`{"fill":"the ring"}`), burst); err != nil {
				t.Fatal(err)
			}
			redirected := waitCounter(t, r, before, burst)
			st, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("after %d redirects: %+v", redirected, st)
			if tc.full && st.RxRingFull == 0 {
				t.Errorf("full RX ring not counted: %+v", st)
			}
			if !tc.full && (st.RxDropped == 0 || st.RxFillRingEmptyDescs == 0) {
				t.Errorf("empty fill ring not counted: %+v", st)
			}
			// Drain what the socket holds.
			inRing := drain(t, s, burst, 200*time.Millisecond, nil)
			if inRing != tc.holds {
				t.Errorf("drained %d frames, socket holds %d", inRing, tc.holds)
			}
			// Accounting: each redirected packet is in the ring or counted.
			st, _ = s.Stats()
			if acc := uint64(inRing) + st.RxRingFull + st.RxDropped; acc != redirected {
				t.Errorf("redirected %d != received %d + rx_ring_full %d + rx_dropped %d", redirected, inRing, st.RxRingFull, st.RxDropped)
			}

			// The socket still works. The sender's softirq fills the ring
			// faster than a poll()-woken reader empties it, so send less
			// than it holds.
			after := tc.holds / 2
			before = r.redirected(t)
			if _, err := r.pair.A.SendUDP(dst, []byte(`{"after":"drain"}`), after); err != nil {
				t.Fatal(err)
			}
			if n := drain(t, s, after, 3*time.Second, nil); n != after {
				st, _ := s.Stats()
				t.Errorf("after drain: received %d of %d (redirected %d): %+v", n, after, r.redirected(t)-before, st)
			}
		})
	}
}

// waitCounter waits until the program redirected want packets since
// before (it runs in the sender's softirq, so briefly after the send).
func waitCounter(t *testing.T, r *rig, before, want uint64) uint64 {
	t.Helper()
	var got uint64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if got = r.redirected(t) - before; got >= want {
			break
		}
	}
	if got != want {
		t.Errorf("program redirected %d, want %d", got, want)
	}
	return got
}

// TestCloseDuringReceive closes the socket while a worker sleeps in poll
// (and, second, while it spins): Receive returns ErrClosed promptly.
func TestCloseDuringReceive(t *testing.T) {
	for _, busy := range []bool{false, true} {
		t.Run(fmt.Sprintf("busy=%v", busy), func(t *testing.T) {
			r := newRig(t, 1, Config{FrameSize: 2048, FillSize: 64, RxSize: 64, BusyPoll: busy})
			s := r.socks[0]
			errc := make(chan error, 1)
			go func() {
				batch := make([]Frame, 8)
				n, err := s.Receive(batch)
				if n != 0 {
					err = fmt.Errorf("got %d frames: %w", n, err)
				}
				errc <- err
			}()
			// Let it block (poll) or spin.
			time.Sleep(100 * time.Millisecond)
			if !busy {
				if st, _ := s.Stats(); st.Polls == 0 {
					t.Errorf("receiver did not reach poll: %+v", st)
				}
			}
			start := time.Now()
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, ErrClosed) {
					t.Errorf("receive returned %v, want ErrClosed", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("receive still blocked 2s after close")
			}
			t.Logf("close and receive returned in %v", time.Since(start))
			if _, err := s.Receive(make([]Frame, 1)); !errors.Is(err, ErrClosed) {
				t.Errorf("receive after close: %v", err)
			}
			if _, err := s.Stats(); err != nil {
				t.Errorf("stats after close: %v", err)
			}
		})
	}
}

// TestReopenBusy closes and reopens a socket on the same queue at once,
// several times: the EBUSY window after a close is retried, not reported.
func TestReopenBusy(t *testing.T) {
	r := newRig(t, 1, Config{FrameSize: 2048, FillSize: 64, RxSize: 64})
	b := r.pair.B
	s := r.socks[0]
	for i := 0; i < 5; i++ {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		s = openOn(t, b, 0, r.socks[0].Config())
		t.Logf("reopen %d took %v", i, time.Since(start))
	}
	if err := r.x.RegisterXSK(0, s.FD()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.pair.A.SendUDP(netip.AddrPortFrom(b.Addr, testPort), []byte(`{"re":"open"}`), 10); err != nil {
		t.Fatal(err)
	}
	if n := drain(t, s, 10, 3*time.Second, nil); n != 10 {
		t.Errorf("reopened socket received %d of 10", n)
	}
}

// TestTransmit sends Ethernet frames from B's socket to A's UDP stack.
func TestTransmit(t *testing.T) {
	const n = 300
	r := newRig(t, 1, Config{FrameSize: 2048, FillSize: 64, RxSize: 64, TxSize: 64})
	a, b := r.pair.A, r.pair.B
	s := r.socks[0]
	// A receive buffer for every datagram: the default one holds ~256.
	fd, port, err := a.ListenUDP(a.Addr, 0, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2}); err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for i := 0; i < n; i++ {
		frames = append(frames, ipv4UDPFrame(b, a, port, fmt.Appendf(nil, `{"tx":%d}`, i)))
	}
	queued := 0
	for deadline := time.Now().Add(3 * time.Second); queued < n && time.Now().Before(deadline); {
		k, err := s.Transmit(frames[queued:min(queued+32, n)])
		if err != nil {
			t.Fatalf("transmit: %v", err)
		}
		queued += k
		if k == 0 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	if err := s.FlushTx(2 * time.Second); err != nil {
		t.Fatalf("flush: %v", err)
	}
	buf := make([]byte, 2048)
	got := 0
	for got < n {
		m, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			break
		}
		if want := fmt.Sprintf(`{"tx":%d}`, got); string(buf[:m]) != want {
			t.Errorf("datagram %d: %q, want %q", got, buf[:m], want)
		}
		got++
	}
	st, _ := s.Stats()
	t.Logf("queued %d, received %d: %+v", queued, got, st)
	if got != n || st.TxQueued != n || st.TxCompleted != n {
		t.Errorf("transmitted %d of %d", got, n)
	}
	if _, err := s.Transmit([][]byte{make([]byte, 4097)}); !errors.Is(err, ErrPayloadSize) {
		t.Errorf("oversized payload: %v", err)
	}
}

// udpPayload returns the UDP payload of a frame to dstPort, or nil (the
// repository's one parser, package packet).
func udpPayload(frame []byte, dstPort uint16) []byte {
	d, o := packet.ParseUDP(frame)
	if o != packet.UDP || d.DstPort != dstPort {
		return nil
	}
	return d.Payload
}

// ipv4UDPFrame builds an Ethernet/IPv4/UDP frame from src to dst:port
// (UDP checksum 0: none, legal over IPv4).
func ipv4UDPFrame(src, dst *testenv.Host, port uint16, payload []byte) []byte {
	return packet.Frame{SrcMAC: src.MAC, DstMAC: dst.MAC, Src: src.Addr, Dst: dst.Addr, DstPort: port,
		Payload: payload, Checksum: true}.Bytes()
}
