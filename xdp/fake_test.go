//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeXSK is a Socket over rings and a UMEM in Go memory, with the test
// playing the kernel: no AF_XDP, no root. The socket has no descriptor
// (fd -1: no kicks, no XDP_STATISTICS) but a real eventfd, so poll and
// Close behave as on a real socket.
type fakeXSK struct {
	s             *Socket
	fill, rx, tx  *fakeShared
	comp          *fakeShared
	fillEnts      []uint64
	compEnts      []uint64
	rxEnts, txEnt []desc
	unmapped      atomic.Bool
	ringFull      int // deliveries dropped for a full RX ring
	fillEmpty     int // deliveries dropped for an empty fill ring
}

func newFake(t testing.TB, cfg Config) *fakeXSK {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg = cfg.WithDefaults()
	k := &fakeXSK{}
	umem := make([]byte, (cfg.Frames+cfg.TxFrames)*cfg.FrameSize)
	fill, fsh, fe := newFakeAddrRing(cfg.FillSize, 0)
	comp, csh, ce := newFakeAddrRing(cfg.CompletionSize, 0)
	rx, rsh, re := newFakeDescRing(cfg.RxSize, 0)
	var tx ring
	if cfg.TxSize > 0 {
		tx, k.tx, k.txEnt = newFakeDescRing(cfg.TxSize, 0)
	}
	k.fill, k.comp, k.rx = fsh, csh, rsh
	k.fillEnts, k.compEnts, k.rxEnts = fe, ce, re
	k.s = newSocket(cfg, umem, fill, comp, rx, tx)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	k.s.efd = efd
	k.s.pollFds = [2]unix.PollFd{{Fd: -1}, {Fd: int32(efd), Events: unix.POLLIN}}
	k.s.unmapUmem = func() {
		if k.unmapped.Swap(true) {
			t.Error("UMEM unmapped twice")
		}
	}
	t.Cleanup(func() { k.s.Close() })
	return k
}

// deliver is the kernel receiving p: a frame from the fill ring, the
// packet behind the headrooms, metadata in front if stamp, a descriptor on
// the RX ring. False when the packet is dropped (and counted).
func (k *fakeXSK) deliver(p []byte, rxNs uint64, stamp bool) bool {
	cfg := k.s.cfg
	fcons := atomic.LoadUint32(&k.fill.cons)
	if atomic.LoadUint32(&k.fill.prod) == fcons {
		k.fillEmpty++
		return false
	}
	rprod := atomic.LoadUint32(&k.rx.prod)
	if rprod-atomic.LoadUint32(&k.rx.cons) == cfg.RxSize {
		k.ringFull++
		return false
	}
	base := k.fillEnts[fcons&(cfg.FillSize-1)]
	atomic.StoreUint32(&k.fill.cons, fcons+1)
	addr := base + PacketHeadroom + uint64(cfg.Headroom)
	n := len(p)
	if cfg.PrefixStamp {
		// The program's prefix header is part of the frame (bpf/xgate.h).
		addr -= MetaSize
		n += MetaSize
		copy(k.s.umem[addr+MetaSize:], p)
		clear(k.s.umem[addr : addr+MetaSize])
		if stamp {
			binary.NativeEndian.PutUint64(k.s.umem[addr:], rxNs)
			binary.NativeEndian.PutUint32(k.s.umem[addr+8:], MetaMagic)
		}
	} else {
		copy(k.s.umem[addr:], p)
		if stamp {
			binary.NativeEndian.PutUint64(k.s.umem[addr-16:], rxNs)
			binary.NativeEndian.PutUint32(k.s.umem[addr-8:], MetaMagic)
		}
	}
	k.rxEnts[rprod&(cfg.RxSize-1)] = desc{Addr: addr, Len: uint32(n)}
	atomic.StoreUint32(&k.rx.prod, rprod+1)
	return true
}

// inFill lists the addresses in the fill ring not yet consumed.
func (k *fakeXSK) inFill() []uint64 {
	var out []uint64
	for i := atomic.LoadUint32(&k.fill.cons); i != atomic.LoadUint32(&k.fill.prod); i++ {
		out = append(out, k.fillEnts[i&(k.s.cfg.FillSize-1)])
	}
	return out
}

// check verifies the ownership invariant: every RX frame is in exactly one
// place (fill ring, RX ring, caller, free stack) and the states agree.
func (k *fakeXSK) check(t *testing.T, held []Frame) {
	t.Helper()
	s := k.s
	where := map[uint64]string{}
	put := func(a uint64, place string, state uint8) {
		t.Helper()
		a &^= s.frameMask
		if prev, ok := where[a]; ok {
			t.Fatalf("frame %#x in %s and %s", a, prev, place)
		}
		where[a] = place
		if got := s.state[a>>s.frameShift]; got != state {
			t.Fatalf("frame %#x in %s has state %d, want %d", a, place, got, state)
		}
	}
	for _, a := range k.inFill() {
		put(a, "fill", frameKernel)
	}
	for i := atomic.LoadUint32(&k.rx.cons); i != atomic.LoadUint32(&k.rx.prod); i++ {
		put(k.rxEnts[i&(s.cfg.RxSize-1)].Addr, "rx", frameKernel)
	}
	for _, f := range held {
		put(f.Addr, "caller", frameUser)
	}
	for _, a := range s.free {
		put(a, "free", frameFree)
	}
	if len(where) != int(s.cfg.Frames) {
		t.Fatalf("%d frames accounted for, %d exist", len(where), s.cfg.Frames)
	}
	if got, want := s.umemRefs.Load(), int64(1+len(held)); got != want {
		t.Fatalf("umem refs %d, want %d", got, want)
	}
}

func TestFakeReceiveRelease(t *testing.T) {
	k := newFake(t, Config{FrameSize: 2048, FillSize: 8, RxSize: 8, Frames: 16, PollTimeout: time.Millisecond})
	s := k.s
	k.check(t, nil)
	if n := len(k.inFill()); n != 8 {
		t.Fatalf("initial fill: %d frames, want 8", n)
	}
	for i := 0; i < 6; i++ {
		if !k.deliver(fmt.Appendf(nil, "packet-%d", i), uint64(1000+i), true) {
			t.Fatal("delivery dropped")
		}
	}
	batch := make([]Frame, 4)
	n, err := s.Receive(batch)
	if err != nil || n != 4 {
		t.Fatalf("receive = %d, %v", n, err)
	}
	k.check(t, batch[:n])
	for i, f := range batch[:n] {
		if string(f.Data) != fmt.Sprintf("packet-%d", i) || cap(f.Data) != len(f.Data) {
			t.Errorf("frame %d: %q (cap %d)", i, f.Data, cap(f.Data))
		}
		if !f.Meta.OK || f.Meta.RxNs != uint64(1000+i) {
			t.Errorf("frame %d meta %+v", i, f.Meta)
		}
	}
	held := append([]Frame(nil), batch[:n]...)
	s.Release(batch[:2])
	if batch[0].Data != nil {
		t.Error("Release left the view in the batch")
	}
	k.check(t, held[2:])
	n2, err := s.Receive(batch)
	if err != nil || n2 != 2 {
		t.Fatalf("second receive = %d, %v", n2, err)
	}
	held = append(held[2:], batch[:n2]...)
	k.check(t, held)
	// Empty ring: Receive waits PollTimeout and returns nothing.
	start := time.Now()
	if n, err := s.Receive(batch); n != 0 || err != nil {
		t.Fatalf("receive on empty ring = %d, %v", n, err)
	}
	if d := time.Since(start); d < time.Millisecond || d > time.Second {
		t.Errorf("empty receive took %v for a 1ms timeout", d)
	}
	s.Release(held)
	k.check(t, nil)
	st, _ := s.Stats()
	if st.Received != 6 || st.Released != 6 || st.BadReleases != 0 || st.Polls == 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestFakeDoubleRelease: releasing frames twice or releasing addresses
// that are not held is counted and ignored, so the fill ring never holds
// a frame twice.
func TestFakeDoubleRelease(t *testing.T) {
	k := newFake(t, Config{FrameSize: 2048, FillSize: 4, RxSize: 4, Frames: 8, PollTimeout: time.Millisecond})
	s := k.s
	for i := 0; i < 3; i++ {
		k.deliver([]byte("x"), 0, false)
	}
	batch := make([]Frame, 4)
	n, _ := s.Receive(batch)
	if n != 3 {
		t.Fatalf("received %d", n)
	}
	held := append([]Frame(nil), batch[:n]...)
	s.Release(batch[:n])
	s.Release(held)                                       // again
	s.Release([]Frame{{Addr: 1 << 40}, {Addr: 5 * 2048}}) // foreign, and a frame in the kernel's hands
	k.check(t, nil)
	st, _ := s.Stats()
	if st.BadReleases != 5 || st.Released != 3 {
		t.Errorf("stats %+v", st)
	}
	if m := st.Received - st.Released; m != 0 {
		t.Errorf("%d frames still held", m)
	}
}

// TestFakePrefixStamp: with PrefixStamp the frame starts with the stamp
// header; Receive hands out the packet behind it with the stamp as Meta,
// and the frame goes back whole. A frame without our magic (another
// program's redirect) is handed out whole, unstamped.
func TestFakePrefixStamp(t *testing.T) {
	k := newFake(t, Config{FrameSize: 2048, FillSize: 8, RxSize: 8, Frames: 16, PollTimeout: time.Millisecond,
		PrefixStamp: true})
	s := k.s
	if !k.deliver([]byte("packet-0"), 77, true) || !k.deliver([]byte("packet-1"), 0, false) {
		t.Fatal("delivery dropped")
	}
	batch := make([]Frame, 4)
	n, err := s.Receive(batch)
	if err != nil || n != 2 {
		t.Fatalf("receive = %d, %v", n, err)
	}
	k.check(t, batch[:n])
	if f := batch[0]; string(f.Data) != "packet-0" || !f.Meta.OK || f.Meta.RxNs != 77 || cap(f.Data) != len(f.Data) {
		t.Errorf("stamped frame: %q meta %+v", f.Data, f.Meta)
	}
	if f := batch[1]; len(f.Data) != MetaSize+len("packet-1") || f.Meta.OK {
		t.Errorf("unstamped frame: %d bytes meta %+v, want the whole frame without stamp", len(f.Data), f.Meta)
	}
	s.Release(batch[:n])
	k.check(t, nil)
	if st, _ := s.Stats(); st.BadReleases != 0 || st.Released != 2 {
		t.Errorf("stats %+v", st)
	}
	if got, want := (Config{FrameSize: 2048, PrefixStamp: true}).MaxPacket(), 2048-PacketHeadroom-MetaSize; got != want {
		t.Errorf("MaxPacket with prefix = %d, want %d", got, want)
	}
}

// TestFakeStaleMeta: a frame reused for a packet the program could not
// stamp does not show the previous packet's stamp.
func TestFakeStaleMeta(t *testing.T) {
	k := newFake(t, Config{FrameSize: 2048, FillSize: 1, RxSize: 1, Frames: 1, PollTimeout: time.Millisecond})
	s := k.s
	batch := make([]Frame, 1)
	k.deliver([]byte("stamped"), 42, true)
	if n, _ := s.Receive(batch); n != 1 || !batch[0].Meta.OK || batch[0].Meta.RxNs != 42 {
		t.Fatalf("first: %d %+v", n, batch[0].Meta)
	}
	a := batch[0].Addr
	s.Release(batch)
	k.deliver([]byte("bare"), 0, false)
	if n, _ := s.Receive(batch); n != 1 || batch[0].Addr != a || batch[0].Meta.OK {
		t.Fatalf("second: %d, addr %#x (first %#x), meta %+v", n, batch[0].Addr, a, batch[0].Meta)
	}
	s.Release(batch)
}

// TestFakeSoak drives random deliveries, receive batch sizes and release
// orders (the caller holding frames for a while) and checks the ownership
// invariant, payload integrity and the drop accounting throughout.
func TestFakeSoak(t *testing.T) {
	k := newFake(t, Config{FrameSize: 2048, FillSize: 16, RxSize: 8, Frames: 32, PollTimeout: time.Microsecond})
	s := k.s
	rng := rand.New(rand.NewPCG(1, 2))
	var held []Frame
	batch := make([]Frame, 16)
	sent, delivered, received := 0, 0, 0
	next := 0 // sequence number expected next, in delivery order
	for round := 0; round < 3000; round++ {
		for i := rng.IntN(12); i > 0; i-- {
			sent++
			p := binary.BigEndian.AppendUint64(nil, uint64(delivered))
			if k.deliver(p, uint64(delivered), true) {
				delivered++
			}
		}
		n, err := s.Receive(batch[:1+rng.IntN(len(batch))])
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range batch[:n] {
			if seq := binary.BigEndian.Uint64(f.Data); seq != uint64(next) || !f.Meta.OK || f.Meta.RxNs != seq {
				t.Fatalf("round %d: seq %d meta %+v, want %d", round, seq, f.Meta, next)
			}
			next++
		}
		received += n
		held = append(held, batch[:n]...)
		// Release a random subset, in random order.
		rng.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
		r := rng.IntN(len(held) + 1)
		s.Release(held[:r])
		held = append(held[:0], held[r:]...)
		k.check(t, held)
	}
	s.Release(held)
	for {
		n, _ := s.Receive(batch)
		if n == 0 {
			break
		}
		received += n
		s.Release(batch[:n])
	}
	k.check(t, nil)
	if sent != received+k.ringFull+k.fillEmpty {
		t.Errorf("sent %d != received %d + ring full %d + fill empty %d", sent, received, k.ringFull, k.fillEmpty)
	}
	t.Logf("sent %d, received %d, ring full %d, fill empty %d", sent, received, k.ringFull, k.fillEmpty)
}

// TestFakeClose: Close wakes a Receive blocked in poll (ErrClosed), and
// the UMEM stays mapped until the caller releases its last frame.
func TestFakeClose(t *testing.T) {
	k := newFake(t, Config{FrameSize: 2048, FillSize: 4, RxSize: 4, Frames: 8})
	s := k.s
	k.deliver([]byte("held across close"), 1, true)
	held := make([]Frame, 1)
	if n, _ := s.Receive(held); n != 1 {
		t.Fatal("no frame")
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Receive(make([]Frame, 4)) // blocks: no timeout
		errc <- err
	}()
	for deadline := time.Now().Add(2 * time.Second); s.polls.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked receive returned %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("receive still blocked after close")
	}
	if k.unmapped.Load() {
		t.Fatal("UMEM unmapped while the caller holds a frame")
	}
	if string(held[0].Data) != "held across close" {
		t.Fatalf("held view changed: %q", held[0].Data)
	}
	if _, err := s.Receive(held[:0:1][:1]); !errors.Is(err, ErrClosed) {
		t.Errorf("receive after close: %v", err)
	}
	if _, err := s.Transmit([][]byte{{1}}); !errors.Is(err, ErrNoTx) {
		t.Errorf("transmit without tx ring: %v", err)
	}
	s.Release(held)
	if !k.unmapped.Load() {
		t.Fatal("UMEM not unmapped after the last release")
	}
	st, err := s.Stats()
	if err != nil || st.Received != 1 || st.Released != 1 {
		t.Errorf("stats after close: %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// TestFakeFillOverflow: with more frames than the fill ring holds, released
// frames that do not fit wait on the free stack and go in with the next
// refill.
func TestFakeFillOverflow(t *testing.T) {
	k := newFake(t, Config{FrameSize: 2048, FillSize: 4, RxSize: 8, Frames: 12, PollTimeout: time.Microsecond})
	s := k.s
	if len(s.free) != 8 {
		t.Fatalf("free stack %d, want 8", len(s.free))
	}
	for i := 0; i < 4; i++ {
		k.deliver([]byte{byte(i)}, 0, false)
	}
	batch := make([]Frame, 8)
	n, _ := s.Receive(batch) // takes 4, refills 4 from the stack
	if n != 4 || len(k.inFill()) != 4 || len(s.free) != 4 {
		t.Fatalf("n %d fill %d free %d", n, len(k.inFill()), len(s.free))
	}
	s.Release(batch[:n]) // the fill ring is full: all 4 onto the stack
	if len(s.free) != 8 {
		t.Fatalf("free %d after release into a full fill ring", len(s.free))
	}
	k.check(t, nil)
}

// TestFakeCloseRace closes the socket at random moments while a worker
// receives and releases and a fake kernel delivers; under -race this
// checks that Close never overlaps a call touching the rings.
func TestFakeCloseRace(t *testing.T) {
	for i := 0; i < 100; i++ {
		cfg := Config{FrameSize: 2048, FillSize: 16, RxSize: 16, Frames: 32, BusyPoll: i%3 == 1}
		if i%3 == 2 {
			cfg.Spin = 100 * time.Microsecond
		}
		k := newFake(t, cfg)
		s := k.s
		done := make(chan struct{})
		stop := make(chan struct{})
		go func() { // the kernel
			for {
				select {
				case <-stop:
					return
				default:
					k.deliver([]byte("x"), 1, true)
				}
			}
		}()
		go func() { // the worker
			defer close(done)
			batch := make([]Frame, 8)
			for {
				n, err := s.Receive(batch)
				s.Release(batch[:n])
				if err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("receive: %v", err)
					}
					return
				}
			}
		}()
		time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("worker still running 2s after close")
		}
		close(stop)
		if !k.unmapped.Load() {
			t.Fatal("UMEM still mapped with every frame released")
		}
	}
}

// TestFakeSpin: with Config.Spin, Receive on an empty ring first spins —
// a frame that arrives meanwhile is taken without a sleep — and sleeps in
// poll once the spin is over.
func TestFakeSpin(t *testing.T) {
	// A long spin: the fake kernel's delivery wakes no poll (the fake
	// socket has no descriptor), so only a spinning Receive sees it
	// before PollTimeout.
	k := newFake(t, Config{FrameSize: 2048, FillSize: 8, RxSize: 8, Frames: 16, Spin: time.Minute, PollTimeout: time.Minute})
	s := k.s
	got := make(chan int, 1)
	go func() {
		batch := make([]Frame, 4)
		n, err := s.Receive(batch)
		if err != nil {
			t.Error(err)
		}
		s.Release(batch[:n])
		got <- n
	}()
	time.Sleep(10 * time.Millisecond)
	if !k.deliver([]byte("late"), 1, true) {
		t.Fatal("delivery dropped")
	}
	select {
	case n := <-got:
		if n != 1 {
			t.Fatalf("received %d frames, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a spinning Receive did not see the frame")
	}
	if st, _ := s.Stats(); st.Polls != 0 {
		t.Errorf("slept in poll %d times while spinning", st.Polls)
	}

	// A short spin on an empty ring: then a sleep until PollTimeout.
	k = newFake(t, Config{FrameSize: 2048, FillSize: 8, RxSize: 8, Frames: 16, Spin: time.Millisecond, PollTimeout: 30 * time.Millisecond})
	start := time.Now()
	if n, err := k.s.Receive(make([]Frame, 4)); n != 0 || err != nil {
		t.Fatalf("receive on an empty ring = %d, %v", n, err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("returned after %v, before the 30ms timeout", d)
	}
	if st, _ := k.s.Stats(); st.Polls == 0 {
		t.Error("did not sleep in poll after the spin")
	}
}

// TestFakeSpinBounded: a spinning Receive (Config.Spin, or BusyPoll) reads
// the clock only every spinClockTurns turns, and still returns on
// PollTimeout — in the middle of a spin longer than the timeout — and on
// Close.
func TestFakeSpinBounded(t *testing.T) {
	for _, cfg := range []Config{
		{Spin: time.Minute, PollTimeout: 20 * time.Millisecond},
		{BusyPoll: true, PollTimeout: 20 * time.Millisecond},
	} {
		cfg.FrameSize, cfg.FillSize, cfg.RxSize, cfg.Frames = 2048, 8, 8, 16
		k := newFake(t, cfg)
		start := time.Now()
		n, err := k.s.Receive(make([]Frame, 4))
		d := time.Since(start)
		if n != 0 || err != nil {
			t.Fatalf("%+v: receive on an empty ring = %d, %v", cfg, n, err)
		}
		if d < 20*time.Millisecond || d > 10*time.Second {
			t.Fatalf("%+v: returned after %v, want the 20ms PollTimeout", cfg, d)
		}
		if st, _ := k.s.Stats(); st.Polls != 0 {
			t.Fatalf("%+v: slept in poll %d times during the spin", cfg, st.Polls)
		}
	}
	for _, cfg := range []Config{{Spin: time.Minute}, {BusyPoll: true}} {
		cfg.FrameSize, cfg.FillSize, cfg.RxSize, cfg.Frames = 2048, 8, 8, 16
		k := newFake(t, cfg)
		errc := make(chan error, 1)
		go func() {
			_, err := k.s.Receive(make([]Frame, 4)) // spins: no timeout
			errc <- err
		}()
		time.Sleep(5 * time.Millisecond)
		if err := k.s.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("%+v: spinning receive returned %v on close", cfg, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%+v: spinning receive still running after close", cfg)
		}
	}
}

// TestFakeWake: with no poll timeout an idle Receive sleeps until Wake
// (then 0, nil, and the socket works on), a Wake before the sleep is not
// lost, Close still ends a sleep with ErrClosed, and SetPollTimeout brings
// the timeout back.
func TestFakeWake(t *testing.T) {
	k := newFake(t, Config{FrameSize: 2048, FillSize: 8, RxSize: 8, Frames: 16, Spin: 50 * time.Microsecond})
	s := k.s
	type res struct {
		n   int
		err error
	}
	receive := func() chan res {
		c := make(chan res, 1)
		go func() {
			n, err := s.Receive(make([]Frame, 4))
			c <- res{n, err}
		}()
		return c
	}
	c := receive()
	select {
	case r := <-c:
		t.Fatalf("receive without a timeout returned %d, %v on an empty ring", r.n, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := s.Wake(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-c:
		if r.n != 0 || r.err != nil {
			t.Fatalf("woken receive = %d, %v, want 0, nil", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wake did not end the sleep")
	}
	// Woken before the sleep (twice: one wake): the next Receive returns
	// without sleeping, the one after sleeps again.
	_ = s.Wake()
	_ = s.Wake()
	if n, err := s.Receive(make([]Frame, 4)); n != 0 || err != nil {
		t.Fatalf("receive after Wake = %d, %v", n, err)
	}
	s.SetPollTimeout(20 * time.Millisecond)
	start := time.Now()
	if n, err := s.Receive(make([]Frame, 4)); n != 0 || err != nil || time.Since(start) < 20*time.Millisecond {
		t.Fatalf("receive with a 20ms timeout = %d, %v after %v", n, err, time.Since(start))
	}
	s.SetPollTimeout(0)
	if !k.deliver([]byte("frame"), 1, true) {
		t.Fatal("delivery dropped")
	}
	batch := make([]Frame, 4)
	if n, err := s.Receive(batch); n != 1 || err != nil {
		t.Fatalf("receive with a frame = %d, %v", n, err)
	}
	s.Release(batch[:1])
	c = receive()
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-c:
		if !errors.Is(r.err, ErrClosed) {
			t.Fatalf("sleeping receive returned %d, %v on close", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the sleep")
	}
	if err := s.Wake(); !errors.Is(err, ErrClosed) {
		t.Errorf("Wake after Close: %v", err)
	}
}
