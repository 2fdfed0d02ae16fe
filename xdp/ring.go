package xdp

import (
	"sync/atomic"
	"unsafe"
)

// ringNeedWakeup is XDP_RING_NEED_WAKEUP, the bit the kernel sets in a
// ring's flags word when it wants a system call before it makes progress.
const ringNeedWakeup = 1

// desc is struct xdp_desc, an entry of the RX and TX rings.
type desc struct {
	Addr    uint64
	Len     uint32
	Options uint32
}

const (
	addrSize = 8                          // entry of the fill and completion rings
	descSize = int(unsafe.Sizeof(desc{})) // entry of the RX and TX rings
)

// ring is our side of one single-producer single-consumer ring shared with
// the kernel (mirroring libxdp's xsk_ring_prod / xsk_ring_cons). Each ring
// has exactly one producer and one consumer:
//
//	ring        producer (writes *producer)   consumer (writes *consumer)
//	fill        us (Release, refill)          kernel
//	rx          kernel                        us (Receive)
//	tx          us (Transmit)                 kernel
//	completion  kernel                        us (Transmit, FlushTx reaping)
//
// The shared words are read and written only through sync/atomic: a plain
// access lets the compiler cache or reorder them (the asavie/xdp bug). The
// side that owns an index writes it with one atomic store per batch, after
// the batch's entries are written (Go's atomic store is at least a release
// store, so the other side sees the entries once it sees the index); the
// other side loads the index atomically (at least an acquire load) before
// reading the entries it covers.
//
// cachedProd and cachedCons are private copies that save most of the
// atomic loads of the other side's index:
//   - on a producer ring, cachedProd is the next entry to reserve (ahead of
//     *producer by what is reserved but not yet submitted) and cachedCons is
//     the last seen *consumer + size, so cachedCons - cachedProd is a lower
//     bound of the free entries (the consumer only ever frees more);
//   - on a consumer ring, cachedCons is the next entry to peek (ahead of
//     *consumer by what is peeked but not yet released) and cachedProd is
//     the last seen *producer, so cachedProd - cachedCons is a lower bound
//     of the filled entries.
//
// Indices are free-running uint32 counters; differences are taken modulo
// 2^32, so wrap-around needs no special case, and the entry of index i is
// descs[i & mask].
//
// A ring is not safe for concurrent use: one goroutine at a time drives
// each side we own (see Socket for which goroutine that is).
type ring struct {
	producer *uint32
	consumer *uint32
	flags    *uint32
	descs    unsafe.Pointer
	mask     uint32
	size     uint32

	cachedProd uint32
	cachedCons uint32

	mem []byte // the mmapped region, nil for rings in Go memory (tests)
}

// initProducer and initConsumer set the cached indices from the shared
// ones, for a ring we produce into or consume from respectively.
func (r *ring) initProducer() {
	r.cachedProd = atomic.LoadUint32(r.producer)
	r.cachedCons = atomic.LoadUint32(r.consumer) + r.size
}

func (r *ring) initConsumer() {
	r.cachedCons = atomic.LoadUint32(r.consumer)
	r.cachedProd = atomic.LoadUint32(r.producer)
}

// free returns how many entries a producer can reserve; it reloads the
// consumer index only when the cached view shows fewer than want.
func (r *ring) free(want uint32) uint32 {
	n := r.cachedCons - r.cachedProd
	if n >= want {
		return n
	}
	r.cachedCons = atomic.LoadUint32(r.consumer) + r.size
	return r.cachedCons - r.cachedProd
}

// reserve claims up to want entries for the producer and returns the index
// of the first and how many it got (possibly fewer than want: a partial
// batch, possibly 0). The caller writes every claimed entry, or gives back
// the ones it does not write with unreserve, before submit.
func (r *ring) reserve(want uint32) (idx, n uint32) {
	n = r.free(want)
	if n > want {
		n = want
	}
	idx = r.cachedProd
	r.cachedProd += n
	return idx, n
}

// unreserve gives back the last n reserved, not yet submitted entries.
// Legal because nobody but us has seen them: *producer is still behind.
func (r *ring) unreserve(n uint32) { r.cachedProd -= n }

// submit publishes every reserved entry with one atomic store.
func (r *ring) submit() { atomic.StoreUint32(r.producer, r.cachedProd) }

// filled returns how many entries a consumer can peek; it reloads the
// producer index only when the cached view shows fewer than want.
func (r *ring) filled(want uint32) uint32 {
	n := r.cachedProd - r.cachedCons
	if n >= want {
		return n
	}
	r.cachedProd = atomic.LoadUint32(r.producer)
	return r.cachedProd - r.cachedCons
}

// peek claims up to want filled entries for the consumer and returns the
// index of the first and how many it got. The entries stay valid (the
// producer cannot overwrite them) until release.
func (r *ring) peek(want uint32) (idx, n uint32) {
	n = r.filled(want)
	if n > want {
		n = want
	}
	idx = r.cachedCons
	r.cachedCons += n
	return idx, n
}

// release hands every peeked entry back to the producer with one atomic
// store. The caller must have copied out what it needs from them.
func (r *ring) release() { atomic.StoreUint32(r.consumer, r.cachedCons) }

// needsWakeup reports whether the kernel set XDP_RING_NEED_WAKEUP.
func (r *ring) needsWakeup() bool {
	return atomic.LoadUint32(r.flags)&ringNeedWakeup != 0
}

// addr is the fill/completion entry of index i.
func (r *ring) addr(i uint32) *uint64 {
	return (*uint64)(unsafe.Add(r.descs, uintptr(i&r.mask)*addrSize))
}

// desc is the RX/TX entry of index i.
func (r *ring) desc(i uint32) *desc {
	return (*desc)(unsafe.Add(r.descs, uintptr(i&r.mask)*uintptr(descSize)))
}
