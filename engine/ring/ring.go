// Package ring is the lock-free rings that hand work between goroutines:
// SPSC (one producer, one consumer) and MPSC (many producers), bounded,
// allocation-free after construction. The sinks, the feedback path and
// the tap use them; the invariants that make them correct are documented
// below, next to the code.
package ring

import (
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"unsafe"
)

// Rings hand work between goroutines without locks:
//
//   - SPSC: one producer, one consumer (a worker handing frames or verdicts to
//     the next stage). Wait-free on both sides.
//   - MPSC: many producers, one consumer (the sink path: every worker → one
//     sink writer). Producers never wait for each other; a full ring makes
//     TryPush fail at once, and the caller counts the drop.
//
// Both are bounded; capacity is a power of two so a position maps to a slot
// with a mask. Positions are free-running uint64 counters: at 10^9 pushes per
// second they wrap after 584 years, and the unsigned differences used below
// stay correct across a wrap anyway.
//
// Memory ordering. Go's sync/atomic operations are sequentially consistent.
// The Go memory model: "If the effect of an atomic operation A is observed
// by atomic operation B, then A is synchronized before B. All the atomic
// operations executed in a program behave as though executed in some
// sequentially consistent order." That is strictly stronger than
// the acquire/release pairs libxdp uses for AF_XDP rings, so every argument
// below of the form "store publishes, load acquires" holds. Slot contents are
// ordinary memory: they are only touched by the side that currently owns the
// slot, and ownership moves only through an atomic store observed by an
// atomic load. Shared indices are never read or written with plain accesses
// (that is the classic bug: asavie/xdp issue #34).
//
// False sharing. A core that writes a cache line takes it exclusively; if
// the producer's index and the consumer's index sat in one 64-byte line,
// every push would steal the line from the consumer and every pop would
// steal it back, even though neither touched the other's field. So the
// fields each side writes are grouped and kept at least one full cache line
// away from every other group (ringPad between them). A full line of padding
// rather than "pad up to the next 64" keeps the groups apart whatever the
// alignment of the allocation. Layout is checked at compile time below and
// again in TestRingLayout. (Intel's adjacent-line prefetcher pairs lines into
// 128 bytes; if profiles ever show that, raise ringCacheLine to 128.)

// ringCacheLine is the cache line size assumed for padding (x86-64, most arm64).
const ringCacheLine = 64

// ringMaxCapacity bounds ring sizes: beyond it a mistake in configuration is
// far more likely than a real need, and it keeps int conversions safe.
const ringMaxCapacity = 1 << 30

// ringPad separates groups of fields written by different goroutines.
type ringPad [ringCacheLine]byte

// ErrRingCapacity is returned (wrapped) by NewSPSC and NewMPSC for a capacity
// that is not a power of two in the supported range.
var ErrRingCapacity = errors.New("invalid ring capacity")

func ringCheckCapacity(kind string, capacity, min int) error {
	if capacity < min || capacity > ringMaxCapacity || capacity&(capacity-1) != 0 {
		return fmt.Errorf("%s ring: capacity %d is not a power of two in [%d, %d]: %w",
			kind, capacity, min, ringMaxCapacity, ErrRingCapacity)
	}
	return nil
}

// ringHoldsPointers reports whether values of type t contain pointers that
// the garbage collector would follow (so a stale copy in a ring slot would
// keep their target alive). Called once per ring, at construction.
func ringHoldsPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Slice,
		reflect.String, reflect.Interface, reflect.Chan, reflect.Func:
		return true
	case reflect.Array:
		return t.Len() > 0 && ringHoldsPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if ringHoldsPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	default:
		return false
	}
}

// ---------------------------------------------------------------------------
// SPSC

// spscProducer is the producer's cache line.
type spscProducer struct {
	// tail is the next position the producer will fill.
	// Written only by the producer (Store, after filling the slots: the
	// store publishes them). Read by the consumer (Load: once it sees
	// tail = t, every slot write before that store is visible to it) and by
	// Len from any goroutine.
	tail atomic.Uint64
	// cachedHead is the producer's private copy of cons.head. Because head
	// only grows, a stale copy only underestimates free space, which is safe;
	// the producer refreshes it only when the ring looks full, so while
	// there is room it never touches the consumer's line (libxdp's
	// cached_cons).
	cachedHead uint64
}

// spscConsumer is the consumer's cache line.
type spscConsumer struct {
	// head is the next position the consumer will take.
	// Written only by the consumer (Store, after reading and zeroing the
	// slots: the store hands them back). Read by the producer (Load: once it
	// sees head = h, the consumer is done with every slot below h, so they
	// may be overwritten) and by Len from any goroutine.
	head atomic.Uint64
	// cachedTail is the consumer's private copy of prod.tail. A stale copy
	// only underestimates what is available; it is refreshed only when the
	// ring looks empty (libxdp's cached_prod).
	cachedTail uint64
}

// SPSC is a bounded, lock-free single-producer single-consumer ring.
//
// Concurrency: at most one goroutine may call Push/PushBatch at a time and
// at most one goroutine may call Pop/PopBatch at a time (they may be
// different goroutines, that is the point). Nothing checks this; two
// producers corrupt the ring. Len and Cap are safe from any goroutine.
// Push, Pop and their batch forms never allocate and never block.
//
// Popped slots are zeroed when T holds pointers, so that the ring does not
// keep frame views, buffers or events reachable after the consumer has
// taken them. The cost is one extra store per element to a line the
// consumer has just read (a memclr per batch in PopBatch); for pointer-free
// T it is skipped.
type SPSC[T any] struct {
	_ ringPad
	// Read-only after NewSPSC; read by both sides, so it may be shared
	// without coherence traffic.
	buf   []T
	mask  uint64
	clear bool // zero popped slots (T holds pointers)
	_     ringPad
	prod  spscProducer
	_     ringPad
	cons  spscConsumer
	_     ringPad
}

// Compile-time layout check: each array length is a constant that
// underflows (a build error) if two groups written by different sides, or a
// written group and the read-only fields, come closer than one cache line.
var (
	_ [unsafe.Offsetof(SPSC[byte]{}.prod) - (unsafe.Offsetof(SPSC[byte]{}.clear) + 1) - ringCacheLine]struct{}
	_ [unsafe.Offsetof(SPSC[byte]{}.cons) - (unsafe.Offsetof(SPSC[byte]{}.prod) + unsafe.Sizeof(spscProducer{})) - ringCacheLine]struct{}
	_ [unsafe.Sizeof(SPSC[byte]{}) - (unsafe.Offsetof(SPSC[byte]{}.cons) + unsafe.Sizeof(spscConsumer{})) - ringCacheLine]struct{}
)

// NewSPSC returns an empty ring holding up to capacity values. capacity
// must be a power of two between 1 and 2^30; otherwise the error wraps
// ErrRingCapacity.
func NewSPSC[T any](capacity int) (*SPSC[T], error) {
	if err := ringCheckCapacity("spsc", capacity, 1); err != nil {
		return nil, err
	}
	return &SPSC[T]{
		buf:   make([]T, capacity),
		mask:  uint64(capacity - 1),
		clear: ringHoldsPointers(reflect.TypeFor[T]()),
	}, nil
}

// Cap returns the capacity given to NewSPSC.
func (r *SPSC[T]) Cap() int { return len(r.buf) }

// Len returns the number of values in the ring. Called by the producer or
// the consumer it is exact up to the other side's concurrent progress; from
// any other goroutine it is a snapshot, always within [0, Cap()].
func (r *SPSC[T]) Len() int {
	h := r.cons.head.Load() // head first: tail ≥ this head from now on
	t := r.prod.tail.Load()
	n := t - h
	if n > uint64(len(r.buf)) { // both moved between the two loads
		n = uint64(len(r.buf))
	}
	return int(n)
}

// free returns how many slots the producer may fill, starting at tail t,
// refreshing cachedHead from the consumer's line only if fewer than want
// appear free.
func (r *SPSC[T]) free(t uint64, want int) uint64 {
	size := uint64(len(r.buf))
	free := size - (t - r.prod.cachedHead)
	if free < uint64(want) {
		r.prod.cachedHead = r.cons.head.Load() // acquire: slots below head are done with
		free = size - (t - r.prod.cachedHead)
	}
	return free
}

// Push appends v and reports whether there was room. Producer only.
func (r *SPSC[T]) Push(v T) bool {
	t := r.prod.tail.Load() // our own index: no other writer, never stale
	if r.free(t, 1) == 0 {
		return false
	}
	r.buf[t&r.mask] = v
	r.prod.tail.Store(t + 1) // release: publishes the slot write above
	return true
}

// PushBatch appends as many leading values of vs as fit and returns how many
// it appended (0 when full). One index store publishes the whole batch.
// Producer only.
func (r *SPSC[T]) PushBatch(vs []T) int {
	if len(vs) == 0 {
		return 0
	}
	t := r.prod.tail.Load()
	n := min(r.free(t, len(vs)), uint64(len(vs)))
	if n == 0 {
		return 0
	}
	i := t & r.mask
	k := copy(r.buf[i:], vs[:n]) // up to the end of buf…
	copy(r.buf, vs[k:n])         // …and the rest from the start
	r.prod.tail.Store(t + n)     // release: publishes all n slots
	return int(n)
}

// avail returns how many values the consumer may take, starting at head h,
// refreshing cachedTail from the producer's line only if fewer than want
// appear available.
func (r *SPSC[T]) avail(h uint64, want int) uint64 {
	n := r.cons.cachedTail - h
	if n < uint64(want) {
		r.cons.cachedTail = r.prod.tail.Load() // acquire: slots below tail are filled
		n = r.cons.cachedTail - h
	}
	return n
}

// Pop removes and returns the oldest value; ok is false if the ring is
// empty. Consumer only.
func (r *SPSC[T]) Pop() (v T, ok bool) {
	h := r.cons.head.Load() // our own index: no other writer
	if r.avail(h, 1) == 0 {
		return v, false
	}
	i := h & r.mask
	v = r.buf[i]
	if r.clear {
		var zero T
		r.buf[i] = zero
	}
	r.cons.head.Store(h + 1) // release: the slot is the producer's again
	return v, true
}

// PopBatch moves up to len(dst) of the oldest values into dst, in order, and
// returns how many it moved (0 when empty). One index store frees the whole
// batch. Consumer only.
func (r *SPSC[T]) PopBatch(dst []T) int {
	if len(dst) == 0 {
		return 0
	}
	h := r.cons.head.Load()
	n := min(r.avail(h, len(dst)), uint64(len(dst)))
	if n == 0 {
		return 0
	}
	i := h & r.mask
	k := copy(dst[:n], r.buf[i:])
	copy(dst[k:n], r.buf)
	if r.clear {
		end := min(i+n, uint64(len(r.buf)))
		clear(r.buf[i:end])
		clear(r.buf[:n-(end-i)])
	}
	r.cons.head.Store(h + n) // release: all n slots are the producer's again
	return int(n)
}

// ---------------------------------------------------------------------------
// MPSC

// mpscSlot is one cell of an MPSC ring. seq says who owns it for which lap:
// for position p mapping to this slot,
//
//	seq == p      free: the producer that claims p may fill it
//	seq == p+1    full: the consumer may take it
//	seq == p+cap  taken and freed for the next lap's producer
//
// Written by the producer that claimed p (Store p+1 after writing val:
// publishes val) and by the consumer (Store p+cap after reading and zeroing
// val: hands the slot back). Both sides Load it before touching val, which
// is what orders val's plain accesses.
type mpscSlot[T any] struct {
	seq atomic.Uint64
	val T
}

// MPSC is a bounded multi-producer single-consumer ring after Dmitry
// Vyukov's bounded MPMC queue (per-slot sequence numbers; producers claim a
// position with one CAS on tail), reduced to one consumer.
//
// Concurrency: any number of goroutines may call TryPush; at most one
// goroutine may call Pop/PopBatch at a time. Len and Cap are safe from any
// goroutine. Nothing allocates or blocks.
//
// Progress: a producer never waits for another producer — a failed CAS
// means another producer advanced, so it retries at the new tail. The one
// non-lock-free spot is inherent to the design: a producer descheduled
// between its CAS and its seq store leaves a claimed-but-empty slot, and the
// consumer cannot pass it until that producer runs again (later slots wait
// behind it; other producers keep pushing until the ring is full).
//
// Popped slots are zeroed when T holds pointers (see SPSC for the cost).
// Slots are not padded to a cache line each: neighbouring producers may
// share a line while filling adjacent slots, a cost paid once per push,
// while padding would multiply the ring's memory by 64/sizeof(slot).
type MPSC[T any] struct {
	_     ringPad
	buf   []mpscSlot[T] // read-only after NewMPSC
	mask  uint64        // read-only after NewMPSC
	clear bool          // read-only after NewMPSC
	_     ringPad
	// tail is the next position a producer will claim. Changed only by
	// producers, only by CompareAndSwap from the value they loaded (so each
	// position is claimed by exactly one producer). Read by Len.
	tail atomic.Uint64
	_    ringPad
	// head is the next position the consumer will take. Stored only by
	// the consumer; the consumer needs no atomic for its own reads, but Len
	// reads it from other goroutines, so all accesses are atomic.
	// Producers never read it: they learn that a slot is free from its seq.
	head atomic.Uint64
	_    ringPad
}

var (
	_ [unsafe.Offsetof(MPSC[byte]{}.tail) - (unsafe.Offsetof(MPSC[byte]{}.clear) + 1) - ringCacheLine]struct{}
	_ [unsafe.Offsetof(MPSC[byte]{}.head) - (unsafe.Offsetof(MPSC[byte]{}.tail) + 8) - ringCacheLine]struct{}
	_ [unsafe.Sizeof(MPSC[byte]{}) - (unsafe.Offsetof(MPSC[byte]{}.head) + 8) - ringCacheLine]struct{}
)

// NewMPSC returns an empty ring holding up to capacity values. capacity
// must be a power of two between 2 and 2^30 (with one slot, "full for lap p"
// and "free for lap p+1" would be the same sequence number); otherwise the
// error wraps ErrRingCapacity.
func NewMPSC[T any](capacity int) (*MPSC[T], error) {
	if err := ringCheckCapacity("mpsc", capacity, 2); err != nil {
		return nil, err
	}
	r := &MPSC[T]{
		buf:   make([]mpscSlot[T], capacity),
		mask:  uint64(capacity - 1),
		clear: ringHoldsPointers(reflect.TypeFor[T]()),
	}
	for i := range r.buf {
		r.buf[i].seq.Store(uint64(i)) // before publication: no reader yet
	}
	return r, nil
}

// Cap returns the capacity given to NewMPSC.
func (r *MPSC[T]) Cap() int { return len(r.buf) }

// Len returns the number of positions claimed by producers and not yet
// taken by the consumer, within [0, Cap()]. It counts values still being
// written by a producer, so Pop may find fewer. A snapshot under
// concurrency.
func (r *MPSC[T]) Len() int {
	h := r.head.Load() // head first: tail ≥ this head from now on
	t := r.tail.Load()
	n := t - h
	if n > uint64(len(r.buf)) {
		n = uint64(len(r.buf))
	}
	return int(n)
}

// TryPush appends v and reports whether it did; false means the ring was
// full at the moment of the attempt, and v was not stored. Safe for
// concurrent use by any number of producers.
func (r *MPSC[T]) TryPush(v T) bool {
	pos := r.tail.Load()
	for {
		s := &r.buf[pos&r.mask]
		seq := s.seq.Load() // acquire: if == pos, the consumer is done with val
		switch d := int64(seq - pos); {
		case d == 0: // free for pos: try to claim it
			if r.tail.CompareAndSwap(pos, pos+1) {
				s.val = v            // ours alone: claimed by the CAS
				s.seq.Store(pos + 1) // release: publishes val to the consumer
				return true
			}
			pos = r.tail.Load() // another producer took pos
		case d < 0: // still holds the value from one lap ago: full
			return false
		default: // another producer claimed pos and moved on; tail is ahead
			pos = r.tail.Load()
		}
	}
}

// Pop removes and returns the oldest value; ok is false if the ring is
// empty or the oldest claimed slot is still being written. Consumer only.
func (r *MPSC[T]) Pop() (v T, ok bool) {
	h := r.head.Load() // our own index: no other writer
	s := &r.buf[h&r.mask]
	if s.seq.Load() != h+1 { // acquire: once == h+1, val is published
		return v, false
	}
	v = s.val
	if r.clear {
		var zero T
		s.val = zero
	}
	s.seq.Store(h + uint64(len(r.buf))) // release: free for the producer of h+cap
	r.head.Store(h + 1)
	return v, true
}

// PopBatch moves up to len(dst) of the oldest ready values into dst, in
// order, and returns how many it moved. It stops at the first slot that is
// not yet published. Each slot is handed back by its own seq store (that is
// how producers learn a slot is free); head is stored once per batch.
// Consumer only.
func (r *MPSC[T]) PopBatch(dst []T) int {
	h := r.head.Load()
	size := uint64(len(r.buf))
	var zero T
	n := 0
	for n < len(dst) {
		p := h + uint64(n)
		s := &r.buf[p&r.mask]
		if s.seq.Load() != p+1 { // acquire
			break
		}
		dst[n] = s.val
		if r.clear {
			s.val = zero
		}
		s.seq.Store(p + size) // release
		n++
	}
	if n > 0 {
		r.head.Store(h + uint64(n))
	}
	return n
}
