//go:build linux

package xdp

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var sinkN int

// BenchmarkRingProduceConsume: one 64-entry batch through a fill-like ring
// (reserve, write, one submit store) and back out of it as the kernel
// would consume it; ns/op is per entry.
func BenchmarkRingProduceConsume(b *testing.B) {
	const batch = 64
	r, sh, ents := newFakeAddrRing(4096, 0)
	r.initProducer()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		idx, n := r.reserve(batch)
		for j := uint32(0); j < n; j++ {
			*r.addr(idx + j) = uint64(j)
		}
		r.submit()
		// The kernel's side: take them all.
		cons := atomic.LoadUint32(&sh.cons)
		prod := atomic.LoadUint32(&sh.prod)
		for c := cons; c != prod; c++ {
			sinkN += int(ents[c&4095])
		}
		atomic.StoreUint32(&sh.cons, prod)
	}
}

// BenchmarkReceiveRelease: Receive and Release of 64-frame batches on a
// socket over Go memory, a fake kernel delivering 192-byte stamped frames;
// ns/op and allocs/op are per frame (the fake kernel's copy included).
func BenchmarkReceiveRelease(b *testing.B) {
	const batch = 64
	k := newFake(b, Config{FrameSize: 2048, FillSize: 4096, RxSize: 4096})
	s := k.s
	frames := make([]Frame, batch)
	pkt := make([]byte, 192)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		for j := 0; j < batch; j++ {
			k.deliver(pkt, uint64(j), true)
		}
		n, err := s.Receive(frames)
		if err != nil || n != batch {
			b.Fatalf("receive %d, %v", n, err)
		}
		for _, f := range frames[:n] {
			sinkN += len(f.Data) + int(f.Meta.RxNs)
		}
		s.Release(frames[:n])
	}
}

// BenchmarkReceiveVeth: a peer sends b.N datagrams (192-byte frames) over
// a veth into the XDP program, which redirects them to one socket; the
// loop receives and releases them. Reports received pps and drops; the
// sender's UDP stack (≈0.3–0.4 M pps per core on veth) is the bound, not
// the receive loop. allocs/op is per frame.
func BenchmarkReceiveVeth(b *testing.B) {
	r := newRig(b, 1, Config{FrameSize: 2048, PollTimeout: 100 * time.Millisecond})
	s := r.socks[0]
	fd, err := r.pair.A.DialUDP(netip.AddrPortFrom(r.pair.B.Addr, testPort))
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	payload := make([]byte, 192-42)
	payload[0] = '{'
	frames := make([]Frame, 64)
	var sent atomic.Int64
	stop := make(chan struct{})
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		// Bounded in count and time.
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; i < b.N && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := unix.Write(fd, payload); err == nil {
				sent.Add(1)
			}
		}
	}()
	got := 0
	idle := time.Now()
	for got < b.N && time.Since(idle) < time.Second {
		n, err := s.Receive(frames)
		if err != nil {
			b.Fatal(err)
		}
		if n > 0 {
			idle = time.Now()
		}
		for _, f := range frames[:n] {
			sinkN += len(f.Data)
		}
		s.Release(frames[:n])
		got += n
	}
	elapsed := time.Since(start)
	b.StopTimer()
	close(stop)
	<-senderDone
	st, _ := s.Stats()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "pps")
	b.ReportMetric(float64(st.RxRingFull+st.RxDropped), "drops")
	if int64(got) != sent.Load() {
		b.Logf("sent %d, received %d: %+v", sent.Load(), got, st)
	}
}
