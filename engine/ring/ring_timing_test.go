package ring

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// ringBenchSink keeps the consumer's result alive so the loops are not
// optimised away.
var ringBenchSink uint64

// BenchmarkSPSC moves b.N uint64 values from a producer goroutine to the
// benchmark goroutine through a 1024-slot ring; one op is one element.
// batch=64 uses PushBatch/PopBatch, batch=1 uses Push/Pop.
func BenchmarkSPSC(b *testing.B) {
	for _, batch := range []int{64, 1} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			r, err := NewSPSC[uint64](1024)
			if err != nil {
				b.Fatal(err)
			}
			n := uint64(b.N)
			b.ReportAllocs()
			b.SetBytes(8)
			b.ResetTimer()
			var wg sync.WaitGroup
			wg.Go(func() {
				src := make([]uint64, batch)
				for v := uint64(0); v < n; {
					k := int(min(uint64(batch), n-v))
					for i := range k {
						src[i] = v + uint64(i)
					}
					var pushed int
					if batch == 1 {
						if r.Push(src[0]) {
							pushed = 1
						}
					} else {
						pushed = r.PushBatch(src[:k])
					}
					if pushed == 0 {
						runtime.Gosched()
					}
					v += uint64(pushed)
				}
			})
			dst := make([]uint64, batch)
			var sum uint64
			for got := uint64(0); got < n; {
				var k int
				if batch == 1 {
					if v, ok := r.Pop(); ok {
						dst[0], k = v, 1
					}
				} else {
					k = r.PopBatch(dst)
				}
				if k == 0 {
					runtime.Gosched()
					continue
				}
				for _, v := range dst[:k] {
					sum += v
				}
				got += uint64(k)
			}
			wg.Wait()
			b.StopTimer()
			if want := n * (n - 1) / 2; sum != want {
				b.Fatalf("sum %d, want %d", sum, want)
			}
			ringBenchSink += sum
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
		})
	}
}

// BenchmarkMPSC has GOMAXPROCS producers (b.RunParallel) TryPush into a
// 1024-slot ring while one goroutine drains it with PopBatch(64); one op is
// one element delivered. A refused push is retried after a yield and
// counted in full/op.
func BenchmarkMPSC(b *testing.B) {
	r, err := NewMPSC[uint64](1024)
	if err != nil {
		b.Fatal(err)
	}
	n := b.N
	b.ReportAllocs()
	b.SetBytes(8)
	var full atomic.Uint64
	var got atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	wg.Go(func() {
		dst := make([]uint64, 64)
		var sum uint64
		c := 0
		for c < n {
			k := r.PopBatch(dst)
			if k == 0 {
				runtime.Gosched()
				continue
			}
			for _, v := range dst[:k] {
				sum += v
			}
			c += k
		}
		ringBenchSink += sum
		got.Store(int64(c))
	})
	b.RunParallel(func(pb *testing.PB) {
		var refused uint64
		v := uint64(1)
		for pb.Next() {
			for !r.TryPush(v) {
				refused++
				runtime.Gosched()
			}
			v++
		}
		full.Add(refused)
	})
	wg.Wait()
	b.StopTimer()
	if got.Load() != int64(n) {
		b.Fatalf("consumer got %d, want %d", got.Load(), n)
	}
	b.ReportMetric(float64(full.Load())/float64(b.N), "full/op")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
}
