package xdp

import (
	"sync/atomic"
	"testing"
	"unsafe"
)

// fakeShared is the kernel-shared part of a ring, in Go memory.
type fakeShared struct {
	prod, cons, flags uint32
}

// newFakeAddrRing and newFakeDescRing build a ring over Go memory whose
// indices start at start (to test wrap-around of the free-running
// counters). The test plays the kernel through sh.
func newFakeAddrRing(size, start uint32) (ring, *fakeShared, []uint64) {
	sh := &fakeShared{prod: start, cons: start}
	ents := make([]uint64, size)
	return ring{producer: &sh.prod, consumer: &sh.cons, flags: &sh.flags,
		descs: unsafe.Pointer(&ents[0]), mask: size - 1, size: size}, sh, ents
}

func newFakeDescRing(size, start uint32) (ring, *fakeShared, []desc) {
	sh := &fakeShared{prod: start, cons: start}
	ents := make([]desc, size)
	return ring{producer: &sh.prod, consumer: &sh.cons, flags: &sh.flags,
		descs: unsafe.Pointer(&ents[0]), mask: size - 1, size: size}, sh, ents
}

// TestRingProducerWrap produces through a fill-like ring across the 2^32
// wrap of the indices while a fake kernel consumes in odd-sized chunks;
// every value comes out once, in order.
func TestRingProducerWrap(t *testing.T) {
	const size = 8
	const start = ^uint32(0) - 20
	r, sh, ents := newFakeAddrRing(size, start)
	r.initProducer()
	next, want := uint64(0), uint64(0)
	for round := 0; round < 50; round++ {
		// Producer: a batch of up to 5.
		idx, n := r.reserve(5)
		for i := uint32(0); i < n; i++ {
			*r.addr(idx + i) = next
			next++
		}
		r.submit()
		if got := atomic.LoadUint32(&sh.prod); got != r.cachedProd {
			t.Fatalf("submit stored %d, reserved up to %d", got, r.cachedProd)
		}
		// Kernel: consume up to 3.
		cons := atomic.LoadUint32(&sh.cons)
		avail := atomic.LoadUint32(&sh.prod) - cons
		if avail > size {
			t.Fatalf("round %d: %d entries in a ring of %d", round, avail, size)
		}
		for i := uint32(0); i < min(avail, 3); i++ {
			if v := ents[(cons+i)&(size-1)]; v != want {
				t.Fatalf("round %d: got %d, want %d", round, v, want)
			}
			want++
		}
		atomic.StoreUint32(&sh.cons, cons+min(avail, 3))
	}
	if sh.prod >= start {
		t.Fatalf("indices did not wrap: prod %d", sh.prod)
	}
	if want < 100 {
		t.Fatalf("only %d values went through", want)
	}
}

// TestRingPartialBatch: a producer asking for more than is free gets what
// is free, then nothing; unreserve gives back what was not written.
func TestRingPartialBatch(t *testing.T) {
	r, sh, _ := newFakeAddrRing(8, 0)
	r.initProducer()
	if _, n := r.reserve(10); n != 8 {
		t.Fatalf("reserve(10) on an empty ring of 8 = %d", n)
	}
	if _, n := r.reserve(1); n != 0 {
		t.Fatalf("reserve on a full ring = %d", n)
	}
	r.unreserve(3)
	r.submit()
	if sh.prod != 5 {
		t.Fatalf("submitted %d, want 5", sh.prod)
	}
	if idx, n := r.reserve(4); n != 3 || idx != 5 {
		t.Fatalf("reserve(4) after unreserve = %d at %d, want 3 at 5", n, idx)
	}
}

// TestRingCachedIndices: the other side's index is reloaded only when the
// cached view cannot satisfy the request.
func TestRingCachedIndices(t *testing.T) {
	r, sh, _ := newFakeAddrRing(8, 0)
	r.initProducer()
	r.reserve(6)
	r.submit()
	atomic.StoreUint32(&sh.cons, 6) // the kernel consumed everything
	if n := r.free(2); n != 2 {
		t.Fatalf("free(2) = %d: the cache (2 free) suffices, no reload expected", n)
	}
	if n := r.free(3); n != 8 {
		t.Fatalf("free(3) = %d: reload expected, 8 free", n)
	}

	c, csh, ents := newFakeDescRing(8, 0)
	c.initConsumer()
	for i := range uint32(4) {
		ents[i] = desc{Addr: uint64(i), Len: 1}
	}
	atomic.StoreUint32(&csh.prod, 4)
	if idx, n := c.peek(2); n != 2 || idx != 0 {
		t.Fatalf("peek(2) = %d at %d", n, idx)
	}
	atomic.StoreUint32(&csh.prod, 6)
	if n := c.filled(2); n != 2 {
		t.Fatalf("filled(2) = %d: the cache (2 left) suffices", n)
	}
	if idx, n := c.peek(10); n != 4 || idx != 2 {
		t.Fatalf("peek(10) = %d at %d, want 4 at 2 (partial batch)", n, idx)
	}
	if csh.cons != 0 {
		t.Fatalf("consumer moved before release: %d", csh.cons)
	}
	c.release()
	if csh.cons != 6 {
		t.Fatalf("release stored %d, want 6", csh.cons)
	}
	if _, n := c.peek(1); n != 0 {
		t.Fatalf("peek on an empty ring = %d", n)
	}
}

// TestRingConsumerWrap consumes across the index wrap.
func TestRingConsumerWrap(t *testing.T) {
	const size = 4
	c, sh, ents := newFakeDescRing(size, ^uint32(0)-2)
	c.initConsumer()
	next, want := uint64(0), uint64(0)
	for round := 0; round < 20; round++ {
		prod := atomic.LoadUint32(&sh.prod)
		free := size - (prod - atomic.LoadUint32(&sh.cons))
		for i := uint32(0); i < min(free, 3); i++ {
			ents[(prod+i)&(size-1)] = desc{Addr: next}
			next++
		}
		atomic.StoreUint32(&sh.prod, prod+min(free, 3))
		idx, n := c.peek(2)
		for i := uint32(0); i < n; i++ {
			if a := c.desc(idx + i).Addr; a != want {
				t.Fatalf("round %d: got %d want %d", round, a, want)
			}
			want++
		}
		c.release()
	}
	if want < 30 {
		t.Fatalf("only %d went through", want)
	}
}

func TestRingNeedWakeup(t *testing.T) {
	r, sh, _ := newFakeAddrRing(8, 0)
	if r.needsWakeup() {
		t.Fatal("flag clear, needsWakeup true")
	}
	atomic.StoreUint32(&sh.flags, ringNeedWakeup)
	if !r.needsWakeup() {
		t.Fatal("flag set, needsWakeup false")
	}
}
