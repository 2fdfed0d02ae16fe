package state

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// stateKeys is a Zipf-ish mix (s=1.1) over 100k user keys, precomputed so
// the benchmarks measure only the limiter and the window.
var stateKeys = func() []uint64 {
	const users = 100_000
	hashes := make([]uint64, users)
	for i := range hashes {
		hashes[i] = keyHash(fmt.Sprintf("u-%d", i))
	}
	z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 1, users-1)
	keys := make([]uint64, 1<<16)
	for i := range keys {
		keys[i] = hashes[z.Uint64()]
	}
	return keys
}()

// keyHash is the engine's KeyHash (its seed is per process): a 64-bit
// hash, never 0.
func keyHash(key string) uint64 {
	if h := maphash.String(benchSeed, key); h != 0 {
		return h
	}
	return 1
}

var benchSeed = maphash.MakeSeed()

var (
	stateSinkBool  atomic.Bool
	stateSinkFloat atomic.Uint64
)

func benchLimiter(b *testing.B) *RateLimiter {
	r, err := NewRateLimiter(RateLimitConfig{Rate: 100, Burst: 200, MaxKeys: 1 << 18}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

func benchWindow(b *testing.B) *Window {
	w, err := NewWindow(WindowConfig{Size: 60 * time.Second, Slide: 5 * time.Second, Agg: AggSum, MaxKeys: 1 << 18}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// Each op advances the event clock by 1µs: 1M events/s, so buckets refill
// and segments roll over as they would in production.
func BenchmarkRateLimiterAllow(b *testing.B) {
	r := benchLimiter(b)
	b.ReportAllocs()
	ok := false
	for i := 0; b.Loop(); i++ {
		ok = r.Allow(stateKeys[i&(len(stateKeys)-1)], int64(i)*1000)
	}
	stateSinkBool.Store(ok)
}

func BenchmarkRateLimiterAllowParallel(b *testing.B) {
	r := benchLimiter(b)
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 7919
		ok := false
		for pb.Next() {
			i++
			ok = r.Allow(stateKeys[i&(len(stateKeys)-1)], int64(i)*1000)
		}
		stateSinkBool.Store(ok)
	})
}

func BenchmarkWindowAdd(b *testing.B) {
	w := benchWindow(b)
	b.ReportAllocs()
	v := 0.0
	for i := 0; b.Loop(); i++ {
		v = w.Add(stateKeys[i&(len(stateKeys)-1)], 12.5, 0, int64(i)*1000)
	}
	stateSinkFloat.Store(uint64(v))
}

func BenchmarkWindowAddParallel(b *testing.B) {
	w := benchWindow(b)
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 7919
		v := 0.0
		for pb.Next() {
			i++
			v = w.Add(stateKeys[i&(len(stateKeys)-1)], 12.5, 0, int64(i)*1000)
		}
		stateSinkFloat.Store(uint64(v))
	})
}

func BenchmarkWindowAddDistinct(b *testing.B) {
	w, err := NewWindow(WindowConfig{Size: 60 * time.Second, Slide: 5 * time.Second, Agg: AggDistinct, MaxKeys: 1 << 17}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	v := 0.0
	for i := 0; b.Loop(); i++ {
		v = w.Add(stateKeys[i&(len(stateKeys)-1)], 0, uint64(i), int64(i)*1000)
	}
	stateSinkFloat.Store(uint64(v))
}

// BenchmarkRateLimiterAllowUniform is Allow at the default capacity (1 Mi
// slots, 16 MiB) with keys drawn evenly from users: unlike the Zipf mix,
// whose hot keys stay cached, most lookups go to a cold place of the
// table, as a gateway's do under many users (the TLB and cache misses are
// the cost).
func BenchmarkRateLimiterAllowUniform(b *testing.B) {
	for _, users := range []int{4096, 100_000} {
		b.Run(fmt.Sprint(users), func(b *testing.B) {
			r, err := NewRateLimiter(RateLimitConfig{Rate: 100, Burst: 200}, nil)
			if err != nil {
				b.Fatal(err)
			}
			keys := make([]uint64, 1<<16)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range keys {
				keys[i] = keyHash(fmt.Sprintf("u-%d", rng.IntN(users)))
			}
			b.ReportAllocs()
			ok := false
			for i := 0; b.Loop(); i++ {
				ok = r.Allow(keys[i&(len(keys)-1)], int64(i)*1000)
			}
			stateSinkBool.Store(ok)
		})
	}
}
