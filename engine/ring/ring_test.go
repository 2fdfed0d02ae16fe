package ring

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

func TestRingCapacity(t *testing.T) {
	tests := []struct {
		capacity  int
		spscOK    bool
		mpscOK    bool
		construct bool // small enough to build here
	}{
		{-8, false, false, true},
		{-1, false, false, true},
		{0, false, false, true},
		{1, true, false, true},
		{2, true, true, true},
		{3, false, false, true},
		{4, true, true, true},
		{6, false, false, true},
		{12, false, false, true},
		{1024, true, true, true},
		{1023, false, false, true},
		{1025, false, false, true},
		{1<<30 + 1, false, false, true},
		{1 << 31, false, false, true},
		{1 << 40, false, false, true},
	}
	for _, tt := range tests {
		s, err := NewSPSC[uint64](tt.capacity)
		if ok := err == nil; ok != tt.spscOK {
			t.Errorf("NewSPSC(%d): err = %v, want ok=%v", tt.capacity, err, tt.spscOK)
		} else if ok && s.Cap() != tt.capacity {
			t.Errorf("NewSPSC(%d).Cap() = %d", tt.capacity, s.Cap())
		} else if !ok && (!errors.Is(err, ErrRingCapacity) || !strings.Contains(err.Error(), "spsc ring")) {
			t.Errorf("NewSPSC(%d): err = %v, want spsc ErrRingCapacity", tt.capacity, err)
		}
		m, err := NewMPSC[uint64](tt.capacity)
		if ok := err == nil; ok != tt.mpscOK {
			t.Errorf("NewMPSC(%d): err = %v, want ok=%v", tt.capacity, err, tt.mpscOK)
		} else if ok && m.Cap() != tt.capacity {
			t.Errorf("NewMPSC(%d).Cap() = %d", tt.capacity, m.Cap())
		} else if !ok && (!errors.Is(err, ErrRingCapacity) || !strings.Contains(err.Error(), "mpsc ring")) {
			t.Errorf("NewMPSC(%d): err = %v, want mpsc ErrRingCapacity", tt.capacity, err)
		}
	}
	// The upper bound itself is accepted (zero-size elements: no memory).
	if r, err := NewSPSC[struct{}](1 << 30); err != nil || r.Cap() != 1<<30 {
		t.Errorf("NewSPSC(1<<30): %v", err)
	}
}

// TestMPSCCapacityOneWouldOverwrite documents why MPSC needs two slots: with
// one, the sequence number of a full slot equals the one that frees it for
// the next lap, so a second push would overwrite an unconsumed value.
func TestMPSCCapacityOneWouldOverwrite(t *testing.T) {
	r := &MPSC[int]{buf: make([]mpscSlot[int], 1), mask: 0} // bypass NewMPSC
	if !r.TryPush(1) {
		t.Fatal("first push failed")
	}
	if !r.TryPush(2) {
		t.Fatal("expected the flawed one-slot ring to accept a second push")
	}
	if v := r.buf[0].val; v != 2 {
		t.Fatalf("slot holds %d, expected the overwrite to have happened", v)
	}
	// The real constructor refuses.
	if _, err := NewMPSC[int](1); !errors.Is(err, ErrRingCapacity) {
		t.Fatalf("NewMPSC(1): %v", err)
	}
}

func TestSPSCFullEmptyEdges(t *testing.T) {
	for _, capacity := range []int{1, 2, 4, 8, 64} {
		r, err := NewSPSC[int](capacity)
		if err != nil {
			t.Fatal(err)
		}
		for round := range 3 { // edges again after wrapping
			if v, ok := r.Pop(); ok {
				t.Fatalf("cap %d round %d: Pop on empty = %d, true", capacity, round, v)
			}
			if n := r.PopBatch(make([]int, 4)); n != 0 {
				t.Fatalf("cap %d: PopBatch on empty = %d", capacity, n)
			}
			for i := range capacity {
				if !r.Push(round*1000 + i) {
					t.Fatalf("cap %d round %d: Push %d failed", capacity, round, i)
				}
				if r.Len() != i+1 {
					t.Fatalf("cap %d: Len = %d, want %d", capacity, r.Len(), i+1)
				}
			}
			if r.Push(-1) {
				t.Fatalf("cap %d round %d: Push on full succeeded", capacity, round)
			}
			if n := r.PushBatch([]int{-1, -2}); n != 0 {
				t.Fatalf("cap %d: PushBatch on full = %d", capacity, n)
			}
			if r.Len() != capacity {
				t.Fatalf("cap %d: Len on full = %d", capacity, r.Len())
			}
			for i := range capacity {
				v, ok := r.Pop()
				if !ok || v != round*1000+i {
					t.Fatalf("cap %d round %d: Pop = %d, %v, want %d", capacity, round, v, ok, round*1000+i)
				}
			}
			if r.Len() != 0 {
				t.Fatalf("cap %d: Len on empty = %d", capacity, r.Len())
			}
		}
		if r.PushBatch(nil) != 0 || r.PopBatch(nil) != 0 {
			t.Fatal("empty batches must move nothing")
		}
	}
}

func TestMPSCFullEmptyEdges(t *testing.T) {
	for _, capacity := range []int{2, 4, 8, 64} {
		r, err := NewMPSC[int](capacity)
		if err != nil {
			t.Fatal(err)
		}
		for round := range 3 {
			if v, ok := r.Pop(); ok {
				t.Fatalf("cap %d round %d: Pop on empty = %d, true", capacity, round, v)
			}
			if n := r.PopBatch(make([]int, 4)); n != 0 {
				t.Fatalf("cap %d: PopBatch on empty = %d", capacity, n)
			}
			for i := range capacity {
				if !r.TryPush(round*1000 + i) {
					t.Fatalf("cap %d round %d: TryPush %d failed", capacity, round, i)
				}
				if r.Len() != i+1 {
					t.Fatalf("cap %d: Len = %d, want %d", capacity, r.Len(), i+1)
				}
			}
			if r.TryPush(-1) {
				t.Fatalf("cap %d round %d: TryPush on full succeeded", capacity, round)
			}
			for i := range capacity {
				v, ok := r.Pop()
				if !ok || v != round*1000+i {
					t.Fatalf("cap %d round %d: Pop = %d, %v, want %d", capacity, round, v, ok, round*1000+i)
				}
			}
			if r.Len() != 0 {
				t.Fatalf("cap %d: Len on empty = %d", capacity, r.Len())
			}
		}
	}
}

func TestSPSCBatchPartial(t *testing.T) {
	tests := []struct {
		name     string
		capacity int
		skip     int // push and pop this many first, to move head/tail off 0
		preload  int // then leave this many in the ring
		push     int // PushBatch of this many
		wantPush int
		pop      int // then PopBatch into a slice this long
		wantPop  int
	}{
		{"empty fits", 8, 0, 0, 5, 5, 8, 5},
		{"exact fill", 8, 0, 0, 8, 8, 8, 8},
		{"overfill", 8, 0, 0, 11, 8, 8, 8},
		{"partial room", 8, 0, 5, 6, 3, 3, 3},
		{"no room", 8, 0, 8, 2, 0, 4, 4},
		{"wraps on push", 8, 6, 0, 5, 5, 5, 5},
		{"wraps on push overfill", 8, 6, 1, 9, 7, 16, 8},
		{"wraps on pop only", 8, 5, 3, 2, 2, 5, 5},
		{"pop larger than content", 8, 3, 2, 0, 0, 16, 2},
		{"cap 1", 1, 1, 0, 3, 1, 3, 1},
		{"cap 2 wrap", 2, 3, 1, 2, 1, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewSPSC[int](tt.capacity)
			if err != nil {
				t.Fatal(err)
			}
			var model []int
			next := 0
			for range tt.skip {
				if !r.Push(next) {
					t.Fatal("skip push")
				}
				if v, ok := r.Pop(); !ok || v != next {
					t.Fatal("skip pop")
				}
				next++
			}
			for range tt.preload {
				if !r.Push(next) {
					t.Fatal("preload push")
				}
				model = append(model, next)
				next++
			}
			in := make([]int, tt.push)
			for i := range in {
				in[i] = next + i
			}
			got := r.PushBatch(in)
			if got != tt.wantPush {
				t.Fatalf("PushBatch(%d) = %d, want %d", tt.push, got, tt.wantPush)
			}
			model = append(model, in[:got]...)
			if r.Len() != len(model) {
				t.Fatalf("Len = %d, want %d", r.Len(), len(model))
			}
			dst := make([]int, tt.pop)
			n := r.PopBatch(dst)
			if n != tt.wantPop {
				t.Fatalf("PopBatch(%d) = %d, want %d", tt.pop, n, tt.wantPop)
			}
			if !reflect.DeepEqual(dst[:n], model[:n]) {
				t.Fatalf("PopBatch gave %v, want %v", dst[:n], model[:n])
			}
			for _, v := range dst[n:] {
				if v != 0 {
					t.Fatalf("PopBatch wrote past n: %v", dst)
				}
			}
			if r.Len() != len(model)-n {
				t.Fatalf("Len after pop = %d, want %d", r.Len(), len(model)-n)
			}
		})
	}
}

// ringOps is the common surface of both rings, for the model test.
type ringOps interface {
	push(v uint64) bool
	pushBatch(vs []uint64) int
	pop() (uint64, bool)
	popBatch(dst []uint64) int
	Len() int
	Cap() int
}

type spscOps struct{ *SPSC[uint64] }

func (r spscOps) push(v uint64) bool        { return r.Push(v) }
func (r spscOps) pushBatch(vs []uint64) int { return r.PushBatch(vs) }
func (r spscOps) pop() (uint64, bool)       { return r.Pop() }
func (r spscOps) popBatch(dst []uint64) int { return r.PopBatch(dst) }

type mpscOps struct{ *MPSC[uint64] }

func (r mpscOps) push(v uint64) bool        { return r.TryPush(v) }
func (r mpscOps) pop() (uint64, bool)       { return r.Pop() }
func (r mpscOps) popBatch(dst []uint64) int { return r.PopBatch(dst) }

// pushBatch has no MPSC counterpart: TryPush until the first refusal.
func (r mpscOps) pushBatch(vs []uint64) int {
	for i, v := range vs {
		if !r.TryPush(v) {
			return i
		}
	}
	return len(vs)
}

// TestRingWrapAroundModel drives each ring through many laps with random
// single and batch operations and compares every result with a slice queue.
func TestRingWrapAroundModel(t *testing.T) {
	mk := map[string]func(int) ringOps{
		"SPSC": func(c int) ringOps { r, _ := NewSPSC[uint64](c); return spscOps{r} },
		"MPSC": func(c int) ringOps { r, _ := NewMPSC[uint64](c); return mpscOps{r} },
	}
	for name, newRing := range mk {
		for _, capacity := range []int{2, 4, 16} {
			t.Run(name, func(t *testing.T) {
				r := newRing(capacity)
				rng := rand.New(rand.NewPCG(1, uint64(capacity)))
				var model []uint64
				var next uint64
				buf := make([]uint64, 2*capacity+1)
				for step := range 20000 {
					switch rng.IntN(4) {
					case 0:
						ok := r.push(next)
						if ok != (len(model) < capacity) {
							t.Fatalf("step %d: push ok=%v with %d/%d", step, ok, len(model), capacity)
						}
						if ok {
							model = append(model, next)
							next++
						}
					case 1:
						k := rng.IntN(len(buf))
						for i := range k {
							buf[i] = next + uint64(i)
						}
						n := r.pushBatch(buf[:k])
						if want := min(k, capacity-len(model)); n != want {
							t.Fatalf("step %d: pushBatch(%d) = %d, want %d", step, k, n, want)
						}
						model = append(model, buf[:n]...)
						next += uint64(n)
					case 2:
						v, ok := r.pop()
						if ok != (len(model) > 0) || ok && v != model[0] {
							t.Fatalf("step %d: pop = %d, %v; model %v", step, v, ok, model)
						}
						if ok {
							model = model[1:]
						}
					case 3:
						k := rng.IntN(len(buf))
						n := r.popBatch(buf[:k])
						if want := min(k, len(model)); n != want {
							t.Fatalf("step %d: popBatch(%d) = %d, want %d", step, k, n, want)
						}
						for i := range n {
							if buf[i] != model[i] {
								t.Fatalf("step %d: popBatch[%d] = %d, want %d", step, i, buf[i], model[i])
							}
						}
						model = model[n:]
					}
					if r.Len() != len(model) {
						t.Fatalf("step %d: Len = %d, want %d", step, r.Len(), len(model))
					}
				}
				if laps := int(next) / capacity; laps < 100 {
					t.Fatalf("only %d laps of the ring; the test should wrap many times", laps)
				}
			})
		}
	}
}

func TestRingHoldsPointers(t *testing.T) {
	// The fields exist for their types only: the test reflects on them.
	//lint:ignore U1000 reflected on
	type flat struct {
		a int64
		b [3]float64
		c struct{ d uint8 }
	}
	//lint:ignore U1000 reflected on
	type view struct {
		off, n int32
		frame  []byte
	}
	tests := []struct {
		typ  reflect.Type
		want bool
	}{
		{reflect.TypeFor[int](), false},
		{reflect.TypeFor[uint64](), false},
		{reflect.TypeFor[[4]int](), false},
		{reflect.TypeFor[flat](), false},
		{reflect.TypeFor[struct{}](), false},
		{reflect.TypeFor[[0]*int](), false},
		{reflect.TypeFor[complex128](), false},
		{reflect.TypeFor[*int](), true},
		{reflect.TypeFor[string](), true},
		{reflect.TypeFor[[]byte](), true},
		{reflect.TypeFor[view](), true},
		{reflect.TypeFor[[2]view](), true},
		{reflect.TypeFor[any](), true},
		{reflect.TypeFor[map[int]int](), true},
		{reflect.TypeFor[func()](), true},
		{reflect.TypeFor[chan int](), true},
		{reflect.TypeFor[unsafe.Pointer](), true},
		{reflect.TypeFor[struct {
			a int
			p *flat
		}](), true},
	}
	for _, tt := range tests {
		if got := ringHoldsPointers(tt.typ); got != tt.want {
			t.Errorf("ringHoldsPointers(%v) = %v, want %v", tt.typ, got, tt.want)
		}
	}
}

// TestRingZeroesPoppedSlots checks that no popped pointer stays reachable
// from the ring, through Pop and PopBatch, including a batch that wraps.
func TestRingZeroesPoppedSlots(t *testing.T) {
	vals := make([]*int, 8)
	for i := range vals {
		vals[i] = new(int)
	}
	t.Run("SPSC", func(t *testing.T) {
		r, _ := NewSPSC[*int](4)
		if !r.clear {
			t.Fatal("SPSC[*int] must zero popped slots")
		}
		r.PushBatch(vals[:3])
		r.Pop()
		r.PopBatch(make([]*int, 2))
		r.PushBatch(vals[3:7]) // slots 3,0,1,2
		r.PopBatch(make([]*int, 3))
		// one value left, in slot 2
		for i, p := range r.buf {
			if (p != nil) != (i == 2) {
				t.Fatalf("slot %d = %v after pops; buf %v", i, p, r.buf)
			}
		}
		r.Pop()
		for i, p := range r.buf {
			if p != nil {
				t.Fatalf("slot %d still holds %p", i, p)
			}
		}
	})
	t.Run("MPSC", func(t *testing.T) {
		r, _ := NewMPSC[*int](4)
		if !r.clear {
			t.Fatal("MPSC[*int] must zero popped slots")
		}
		for _, p := range vals[:3] {
			r.TryPush(p)
		}
		r.Pop()
		r.PopBatch(make([]*int, 2))
		for _, p := range vals[3:7] {
			r.TryPush(p)
		}
		r.PopBatch(make([]*int, 3))
		for i := range r.buf {
			if (r.buf[i].val != nil) != (i == 2) {
				t.Fatalf("slot %d = %v after pops", i, r.buf[i].val)
			}
		}
		r.Pop()
		for i := range r.buf {
			if r.buf[i].val != nil {
				t.Fatalf("slot %d still holds %p", i, r.buf[i].val)
			}
		}
	})
	t.Run("pointer-free", func(t *testing.T) {
		s, _ := NewSPSC[uint64](4)
		m, _ := NewMPSC[[2]int64](4)
		if s.clear || m.clear {
			t.Fatal("pointer-free element types must skip zeroing")
		}
	})
}

// checkRingGroups fails unless each group [off, off+size) is at least one
// cache line away from the next, and the last one from the end.
func checkRingGroups(t *testing.T, name string, total uintptr, groups ...[2]uintptr) {
	t.Helper()
	for i, g := range groups {
		end := g[0] + g[1]
		nextStart := total
		if i+1 < len(groups) {
			nextStart = groups[i+1][0]
		}
		if nextStart < end+ringCacheLine {
			t.Errorf("%s: group %d ends at %d, next starts at %d: closer than %d bytes (false sharing)",
				name, i, end, nextStart, ringCacheLine)
		}
	}
	if groups[0][0] < ringCacheLine {
		t.Errorf("%s: first group at offset %d, want a leading pad", name, groups[0][0])
	}
}

// TestRingLayout checks the padding for several element types at run time
// (ring.go checks it at compile time for byte).
func TestRingLayout(t *testing.T) {
	var s1 SPSC[uint64]
	checkRingGroups(t, "SPSC[uint64]", unsafe.Sizeof(s1),
		[2]uintptr{unsafe.Offsetof(s1.buf), unsafe.Offsetof(s1.clear) + 1 - unsafe.Offsetof(s1.buf)},
		[2]uintptr{unsafe.Offsetof(s1.prod), unsafe.Sizeof(s1.prod)},
		[2]uintptr{unsafe.Offsetof(s1.cons), unsafe.Sizeof(s1.cons)})
	var s2 SPSC[string]
	checkRingGroups(t, "SPSC[string]", unsafe.Sizeof(s2),
		[2]uintptr{unsafe.Offsetof(s2.buf), unsafe.Offsetof(s2.clear) + 1 - unsafe.Offsetof(s2.buf)},
		[2]uintptr{unsafe.Offsetof(s2.prod), unsafe.Sizeof(s2.prod)},
		[2]uintptr{unsafe.Offsetof(s2.cons), unsafe.Sizeof(s2.cons)})
	// The cached copies must sit on their owner's line, next to the index
	// that owner writes.
	if unsafe.Offsetof(s1.prod.cachedHead)-unsafe.Offsetof(s1.prod.tail) >= ringCacheLine ||
		unsafe.Offsetof(s1.cons.cachedTail)-unsafe.Offsetof(s1.cons.head) >= ringCacheLine {
		t.Error("cached indices are not next to their owner's index")
	}
	var m MPSC[[4]uint64]
	checkRingGroups(t, "MPSC[[4]uint64]", unsafe.Sizeof(m),
		[2]uintptr{unsafe.Offsetof(m.buf), unsafe.Offsetof(m.clear) + 1 - unsafe.Offsetof(m.buf)},
		[2]uintptr{unsafe.Offsetof(m.tail), unsafe.Sizeof(m.tail)},
		[2]uintptr{unsafe.Offsetof(m.head), unsafe.Sizeof(m.head)})
}

func TestRingNoAllocs(t *testing.T) {
	s, _ := NewSPSC[*int](64)
	m, _ := NewMPSC[*int](64)
	su, _ := NewSPSC[uint64](64)
	p := new(int)
	batch := make([]*int, 16)
	for i := range batch {
		batch[i] = p
	}
	dst := make([]*int, 16)
	dstU := make([]uint64, 16)
	srcU := make([]uint64, 16)
	cases := map[string]func(){
		"SPSC Push/Pop":           func() { s.Push(p); s.Pop() },
		"SPSC PushBatch/PopBatch": func() { s.PushBatch(batch); s.PopBatch(dst) },
		"SPSC[uint64] batch":      func() { su.Push(7); su.PushBatch(srcU); su.PopBatch(dstU); su.Pop() },
		"MPSC TryPush/Pop":        func() { m.TryPush(p); m.Pop() },
		"MPSC PopBatch":           func() { m.TryPush(p); m.TryPush(p); m.PopBatch(dst) },
		"Len/Cap":                 func() { _ = s.Len() + m.Len() + s.Cap() + m.Cap() },
	}
	for name, f := range cases {
		if a := testing.AllocsPerRun(1000, f); a != 0 {
			t.Errorf("%s: %v allocs per run, want 0", name, a)
		}
	}
}

// ringWatchdog bounds a concurrent test: a lost value would otherwise make it
// spin until the global test timeout. It fires after d without progress (the
// consumer calls moved), not after d in all, so a slow, loaded machine (the
// race detector, other test binaries) is not taken for a stall.
type ringWatchdog struct {
	d        time.Duration
	deadline atomic.Int64 // unix ns
	moves    atomic.Uint64
	seen     atomic.Uint64
	stop     atomic.Bool
}

func newRingWatchdog(d time.Duration) *ringWatchdog {
	w := &ringWatchdog{d: d}
	w.deadline.Store(time.Now().Add(d).UnixNano())
	return w
}

// moved records progress: n values went through.
func (w *ringWatchdog) moved(n int) { w.moves.Add(uint64(n)) }

// wait yields; it reports false (and raises stop) once d passed without
// progress.
func (w *ringWatchdog) wait(spins *int) bool {
	runtime.Gosched()
	*spins++
	if *spins&1023 == 0 {
		now := time.Now()
		if m := w.moves.Load(); m != w.seen.Swap(m) {
			w.deadline.Store(now.Add(w.d).UnixNano())
		} else if now.UnixNano() > w.deadline.Load() {
			w.stop.Store(true)
		}
	}
	return !w.stop.Load()
}

func TestSPSCConcurrentChecksum(t *testing.T) {
	const n = 1_000_000
	for _, mode := range []string{"single", "batch"} {
		t.Run(mode, func(t *testing.T) {
			r, err := NewSPSC[uint64](256)
			if err != nil {
				t.Fatal(err)
			}
			w := newRingWatchdog(time.Minute)
			var wantSum, wantXor uint64
			for v := uint64(1); v <= n; v++ {
				wantSum += v * 0x9E3779B97F4A7C15
				wantXor ^= v * 0x9E3779B97F4A7C15
			}
			var wg sync.WaitGroup
			wg.Go(func() { // producer: 1..n in order
				spins := 0
				if mode == "single" {
					for v := uint64(1); v <= n; {
						if r.Push(v) {
							v++
						} else if !w.wait(&spins) {
							return
						}
					}
					return
				}
				rng := rand.New(rand.NewPCG(7, 7))
				src := make([]uint64, 100)
				for v := uint64(1); v <= n; {
					k := 1 + rng.IntN(len(src)) // odd sizes: partial fills and wraps
					k = int(min(uint64(k), n-v+1))
					for i := range k {
						src[i] = v + uint64(i)
					}
					pushed := r.PushBatch(src[:k])
					v += uint64(pushed)
					if pushed == 0 && !w.wait(&spins) {
						return
					}
				}
			})
			var got, sum, xor, prev uint64
			spins := 0
			dst := make([]uint64, 77)
			for got < n {
				var k int
				if mode == "single" {
					v, ok := r.Pop()
					if ok {
						dst[0], k = v, 1
					}
				} else {
					k = r.PopBatch(dst[:1+int(got%uint64(len(dst)))])
				}
				if k == 0 {
					if !w.wait(&spins) {
						t.Fatalf("stalled after %d values", got)
					}
					continue
				}
				for _, v := range dst[:k] {
					if v != prev+1 {
						w.stop.Store(true)
						t.Fatalf("value %d after %d: order broken", v, prev)
					}
					prev = v
					sum += v * 0x9E3779B97F4A7C15
					xor ^= v * 0x9E3779B97F4A7C15
				}
				got += uint64(k)
				w.moved(k)
			}
			wg.Wait()
			if sum != wantSum || xor != wantXor {
				t.Fatalf("checksum: sum %x xor %x, want %x %x", sum, xor, wantSum, wantXor)
			}
			if _, ok := r.Pop(); ok || r.Len() != 0 {
				t.Fatal("ring not empty after all values")
			}
		})
	}
}

func TestMPSCConcurrentExactlyOnce(t *testing.T) {
	const producers = 8
	const perProducer = 200_000
	// retry: a rejected value is offered again until it goes in, so every
	// value arrives and per-producer sequences are consecutive.
	// drop: a rejected value is dropped and counted, as the sink path does;
	// exactly the accepted values must arrive. The consumer starts late so
	// that the ring is certainly full at some point.
	for _, mode := range []string{"retry", "drop"} {
		t.Run(mode, func(t *testing.T) {
			r, err := NewMPSC[uint64](64)
			if err != nil {
				t.Fatal(err)
			}
			w := newRingWatchdog(time.Minute)
			type stats struct {
				attempted, pushed, rejected int
				sum, xor                    uint64
				accepted                    []bool // by sequence
			}
			st := make([]stats, producers)
			var wg sync.WaitGroup
			var done atomic.Bool
			for id := range producers {
				wg.Go(func() {
					s := &st[id]
					s.accepted = make([]bool, perProducer)
					spins := 0
					for seq := range perProducer {
						v := uint64(id)<<32 | uint64(seq)
						for {
							s.attempted++
							if r.TryPush(v) {
								s.pushed++
								s.sum += v
								s.xor ^= v
								s.accepted[seq] = true
								break
							}
							s.rejected++
							// Yield either way, so that eight producers
							// on two cores leave the consumer some time.
							if !w.wait(&spins) {
								return
							}
							if mode == "drop" {
								break
							}
						}
					}
				})
			}
			go func() { wg.Wait(); done.Store(true) }()

			if mode == "drop" { // let the producers fill the ring and bounce
				for r.Len() < r.Cap() && !done.Load() {
					runtime.Gosched()
				}
				time.Sleep(5 * time.Millisecond)
			}
			received := make([][]bool, producers)
			next := make([]int, producers) // lowest sequence still allowed
			for i := range received {
				received[i] = make([]bool, perProducer)
			}
			var got int
			var sum, xor uint64
			dst := make([]uint64, 32)
			spins := 0
			for {
				var k int
				if got%7 == 0 { // exercise Pop as well as PopBatch
					if v, ok := r.Pop(); ok {
						dst[0], k = v, 1
					}
				} else {
					k = r.PopBatch(dst[:1+got%len(dst)])
				}
				if k == 0 {
					if done.Load() {
						if k = r.PopBatch(dst); k == 0 {
							break // producers finished and the ring is drained
						}
					} else {
						if !w.wait(&spins) {
							t.Fatalf("stalled after %d values", got)
						}
						continue
					}
				}
				for _, v := range dst[:k] {
					id, seq := int(v>>32), int(uint32(v))
					if id >= producers || seq >= perProducer {
						w.stop.Store(true)
						t.Fatalf("garbage value %#x", v)
					}
					if seq < next[id] {
						w.stop.Store(true)
						t.Fatalf("producer %d: seq %d after %d (duplicate or reordered)", id, seq, next[id]-1)
					}
					if mode == "retry" && seq != next[id] {
						w.stop.Store(true)
						t.Fatalf("producer %d: seq %d, want %d (lost value)", id, seq, next[id])
					}
					next[id] = seq + 1
					received[id][seq] = true
					sum += v
					xor ^= v
				}
				got += k
				w.moved(k)
			}
			wg.Wait()
			if w.stop.Load() {
				t.Fatal("watchdog fired")
			}
			var attempted, pushed, rejected int
			var wantSum, wantXor uint64
			for id := range st {
				s := &st[id]
				if s.pushed+s.rejected != s.attempted {
					t.Errorf("producer %d: pushed %d + rejected %d != attempted %d", id, s.pushed, s.rejected, s.attempted)
				}
				if mode == "retry" && s.pushed != perProducer {
					t.Errorf("producer %d: pushed %d, want %d", id, s.pushed, perProducer)
				}
				if mode == "drop" && s.attempted != perProducer {
					t.Errorf("producer %d: attempted %d, want %d", id, s.attempted, perProducer)
				}
				for seq := range perProducer {
					if s.accepted[seq] != received[id][seq] {
						t.Fatalf("producer %d seq %d: accepted=%v received=%v", id, seq, s.accepted[seq], received[id][seq])
					}
				}
				attempted += s.attempted
				pushed += s.pushed
				rejected += s.rejected
				wantSum += s.sum
				wantXor ^= s.xor
			}
			if got != pushed {
				t.Errorf("received %d values, producers pushed %d", got, pushed)
			}
			if sum != wantSum || xor != wantXor {
				t.Errorf("checksum: sum %x xor %x, want %x %x", sum, xor, wantSum, wantXor)
			}
			if mode == "drop" && rejected == 0 {
				t.Error("no TryPush was rejected: the full-ring path was not exercised")
			}
			t.Logf("%s: attempted %d, pushed %d, rejected %d, received %d", mode, attempted, pushed, rejected, got)
		})
	}
}
