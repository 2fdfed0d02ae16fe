package state

import (
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const nsSec = int64(time.Second)

func rlMust(t testing.TB, cfg RateLimitConfig) *RateLimiter {
	t.Helper()
	r, err := NewRateLimiter(cfg, &ManualClock{})
	if err != nil {
		t.Fatalf("NewRateLimiter(%+v): %v", cfg, err)
	}
	return r
}

// step is one call to Allow at time at (ns) and the expected answer.
type rlStep struct {
	at   int64
	key  uint64
	want bool
}

func TestRateLimitSchedules(t *testing.T) {
	rep := func(at int64, key uint64, want bool, n int) []rlStep {
		s := make([]rlStep, n)
		for i := range s {
			s[i] = rlStep{at, key, want}
		}
		return s
	}
	cat := func(parts ...[]rlStep) []rlStep {
		var out []rlStep
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name  string
		cfg   RateLimitConfig
		steps []rlStep
	}{
		{"burst then deny", RateLimitConfig{Rate: 10, Burst: 5},
			cat(rep(0, 1, true, 5), rep(0, 1, false, 3))},
		{"refill after exactly 1/rate", RateLimitConfig{Rate: 10, Burst: 5},
			cat(rep(0, 1, true, 5), rep(nsSec/10-1, 1, false, 1), rep(nsSec/10, 1, true, 1), rep(nsSec/10, 1, false, 1))},
		{"steady rate is allowed", RateLimitConfig{Rate: 4, Burst: 1},
			[]rlStep{{0, 1, true}, {nsSec / 4, 1, true}, {nsSec / 2, 1, true}, {nsSec/2 + 1, 1, false}, {3 * nsSec / 4, 1, true}}},
		{"full refill caps at burst", RateLimitConfig{Rate: 10, Burst: 3},
			cat(rep(0, 1, true, 3), rep(100*nsSec, 1, true, 3), rep(100*nsSec, 1, false, 1))},
		{"fractional rate 0.5/s", RateLimitConfig{Rate: 0.5, Burst: 1},
			[]rlStep{{0, 1, true}, {nsSec, 1, false}, {2*nsSec - 1, 1, false}, {2 * nsSec, 1, true}, {3 * nsSec, 1, false}, {4 * nsSec, 1, true}}},
		{"fractional burst 2.5", RateLimitConfig{Rate: 1, Burst: 2.5},
			[]rlStep{{0, 1, true}, {0, 1, true}, {0, 1, false}, {nsSec/2 - 1, 1, false}, {nsSec / 2, 1, true}, {nsSec / 2, 1, false}}},
		{"default burst is rate", RateLimitConfig{Rate: 3},
			cat(rep(0, 1, true, 3), rep(0, 1, false, 1))},
		{"default burst is at least 1", RateLimitConfig{Rate: 0.1},
			[]rlStep{{0, 1, true}, {9 * nsSec, 1, false}, {10 * nsSec, 1, true}}},
		{"huge burst", RateLimitConfig{Rate: 1, Burst: 1e5},
			cat(rep(0, 1, true, 100_000), rep(0, 1, false, 2), rep(nsSec, 1, true, 1), rep(nsSec, 1, false, 1))},
		{"huge burst at high rate, no overflow", RateLimitConfig{Rate: 1e6, Burst: 1e12},
			cat(rep(0, 1, true, 1000), rep(1<<62, 1, true, 1000))},
		{"keys are independent", RateLimitConfig{Rate: 1, Burst: 2},
			cat(rep(0, 1, true, 2), rep(0, 2, true, 2), rep(0, 1, false, 1), rep(0, 2, false, 1), rep(0, 3, true, 1))},
		{"late caller does not gain", RateLimitConfig{Rate: 1, Burst: 1},
			[]rlStep{{5 * nsSec, 1, true}, {4 * nsSec, 1, false}, {6 * nsSec, 1, true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rlMust(t, tc.cfg)
			var allowed, limited uint64
			for i, s := range tc.steps {
				if got := r.Allow(s.key, s.at); got != s.want {
					t.Fatalf("step %d: Allow(key %d, t=%v) = %v, want %v", i, s.key, time.Duration(s.at), got, s.want)
				}
				if s.want {
					allowed++
				} else {
					limited++
				}
			}
			st := r.Stats()
			if st.Allowed != allowed || st.Limited != limited || st.Full != 0 {
				t.Fatalf("stats %+v, want allowed %d limited %d", st, allowed, limited)
			}
		})
	}
}

// A limiter whose table has exactly one probe range (capacity 4): the fifth
// key needs an idle victim.
func TestRateLimitEvictionAndFull(t *testing.T) {
	cfg := RateLimitConfig{Rate: 1, Burst: 2, MaxKeys: 4, IdleTTL: 10 * time.Second}
	r := rlMust(t, cfg)
	// Keys 1..4 take the four slots and empty their buckets at t=0.
	for k := uint64(1); k <= 4; k++ {
		for i := 0; i < 2; i++ {
			if !r.Allow(k, 0) {
				t.Fatalf("key %d event %d denied", k, i)
			}
		}
	}
	if st := r.Stats(); st.Keys != 4 || st.Capacity != 4 {
		t.Fatalf("stats %+v", st)
	}
	// At t=5s nobody is idle (TAT=2s, idle needs TAT <= now-10s): key 5 is Full
	// and denied (fail closed, the default), and stays unknown.
	for i := 0; i < 3; i++ {
		if r.Allow(5, 5*nsSec) {
			t.Fatal("full table must fail closed by default")
		}
	}
	if st := r.Stats(); st.Full != 3 || st.Evictions != 0 || st.Limited != 3 {
		t.Fatalf("after full: %+v", st)
	}
	// The same with OnFullAllow: allowed (as a fresh bucket), counted.
	open := rlMust(t, RateLimitConfig{Rate: 1, Burst: 2, MaxKeys: 4, IdleTTL: 10 * time.Second, OnFull: OnFullAllow})
	for k := uint64(1); k <= 4; k++ {
		open.Allow(k, 0)
	}
	for i := 0; i < 3; i++ {
		if !open.Allow(5, 5*nsSec) {
			t.Fatal("full table with OnFullAllow must fail open")
		}
	}
	if st := open.Stats(); st.Full != 3 || st.Allowed != 4+3 || st.Limited != 0 {
		t.Fatalf("after full, OnFullAllow: %+v", st)
	}
	// Key 1 stays busy; keys 2..4 become idle at 12s (TAT 2s + 10s).
	for now := 2 * nsSec; now <= 12*nsSec; now += nsSec {
		r.Allow(1, now)
	}
	if a, b, c := r.Allow(6, 12*nsSec), r.Allow(6, 12*nsSec), r.Allow(6, 12*nsSec); !a || !b || c {
		t.Fatal("key 6 should get a fresh bucket of 2 in an evicted slot")
	}
	st := r.Stats()
	if st.Evictions != 1 || st.Full != 3 || st.Keys != 4 {
		t.Fatalf("after eviction: %+v", st)
	}
	// Key 1 was not evicted: its bucket is still empty-ish (one event per
	// second since 2s): at 12s it was just allowed, so it is denied now.
	if !r.Allow(1, 12*nsSec) || r.Allow(1, 12*nsSec) {
		t.Fatal("busy key 1 must not have been evicted (one token left, not a fresh two)")
	}
	// Two more new keys take the two remaining idle slots, the next is Full.
	if !r.Allow(7, 12*nsSec) || !r.Allow(8, 12*nsSec) {
		t.Fatal("keys 7, 8")
	}
	r.Allow(9, 12*nsSec)
	if st := r.Stats(); st.Evictions != 3 || st.Full != 4 {
		t.Fatalf("after filling: %+v", st)
	}
	// An evicted key comes back as a fresh bucket, which is what it was.
	if a, b, c := r.Allow(2, 40*nsSec), r.Allow(2, 40*nsSec), r.Allow(2, 40*nsSec); !a || !b || c {
		t.Fatal("re-inserted key 2 should have a full bucket of 2")
	}
}

func TestRateLimitConfigErrors(t *testing.T) {
	tests := []struct {
		cfg  RateLimitConfig
		want string
	}{
		{RateLimitConfig{}, "rate must be > 0"},
		{RateLimitConfig{Rate: -1}, "rate must be > 0"},
		{RateLimitConfig{Rate: math.NaN()}, "rate must be > 0"},
		{RateLimitConfig{Rate: 2e9}, "rate must be > 0 and <= 1e9"},
		{RateLimitConfig{Rate: 1, Burst: 0.5}, "burst must be >= 1"},
		{RateLimitConfig{Rate: 1, Burst: -3}, "burst must be >= 1"},
		{RateLimitConfig{Rate: 1e-3, Burst: 1e12}, "too long"},
		{RateLimitConfig{Rate: 1, MaxKeys: -1}, "max_keys"},
		{RateLimitConfig{Rate: 1, MaxKeys: 1 << 31}, "max_keys"},
		{RateLimitConfig{Rate: 1, IdleTTL: -time.Second}, "idle_ttl"},
	}
	for _, tc := range tests {
		_, err := NewRateLimiter(tc.cfg, nil)
		if err == nil || !errors.Is(err, ErrInvalidRateLimit) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewRateLimiter(%+v) = %v, want error containing %q", tc.cfg, err, tc.want)
		}
	}
	r, err := NewRateLimiter(RateLimitConfig{Rate: 1, MaxKeys: 1000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Capacity != 1024 || st.Bytes != 16*1024 {
		t.Fatalf("capacity: %+v", st)
	}
	if r.idle != nsSec {
		t.Fatalf("default idle = %v, want 1s", time.Duration(r.idle))
	}
	r = rlMust(t, RateLimitConfig{Rate: 2, Burst: 10})
	if r.idle != 5*nsSec {
		t.Fatalf("default idle = %v, want refill time 5s", time.Duration(r.idle))
	}
}

// Many goroutines hammer one key at a fixed time: exactly floor(burst) are
// allowed, no lost and no extra tokens.
func TestRateLimitConcurrentFixedClock(t *testing.T) {
	for _, burst := range []float64{1, 7, 100, 1000} {
		r := rlMust(t, RateLimitConfig{Rate: 1, Burst: burst, MaxKeys: 64})
		const goroutines, attempts = 8, 2000
		var allowed atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				n := int64(0)
				for i := 0; i < attempts; i++ {
					if r.Allow(42, 1000) {
						n++
					}
				}
				allowed.Add(n)
			}()
		}
		close(start)
		wg.Wait()
		if got := allowed.Load(); got != int64(burst) {
			t.Errorf("burst %v: allowed %d, want exactly %v", burst, got, burst)
		}
		st := r.Stats()
		if st.Allowed != uint64(burst) || st.Limited != goroutines*attempts-uint64(burst) || st.Keys != 1 {
			t.Errorf("burst %v: stats %+v", burst, st)
		}
	}
}

// Many goroutines hammer one key while the clock advances: the allowed count
// never exceeds burst + elapsed*rate, and a steady hammering gets most of it.
func TestRateLimitConcurrentAdvancingClock(t *testing.T) {
	const rate, burst = 1000.0, 10.0
	clk := &ManualClock{}
	r, err := NewRateLimiter(RateLimitConfig{Rate: rate, Burst: burst, MaxKeys: 64}, clk)
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, ticks = 4, 100
	interval := time.Second / time.Duration(rate)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(0)
			for i := 0; i < ticks*50; i++ {
				if i%50 == 0 {
					clk.Advance(interval / 4) // goroutines advance the clock in turn
				}
				if r.AllowNow(7) {
					n++
				}
			}
			allowed.Add(n)
		}()
	}
	wg.Wait()
	elapsed := clk.Nanotime()
	upper := int64(burst) + elapsed/int64(interval)
	got := allowed.Load()
	if got > upper {
		t.Fatalf("allowed %d > theoretical bound %d", got, upper)
	}
	// Every goroutine keeps trying, so nearly the whole bound is used (the
	// last advances may come after the others have stopped).
	if got < upper-goroutines*2 {
		t.Fatalf("allowed %d, want close to the bound %d", got, upper)
	}
	t.Logf("allowed %d of bound %d (elapsed %v)", got, upper, time.Duration(elapsed))
}

// Many goroutines and many keys on a small table: in each phase (fixed
// clock) all goroutines hammer a new group of keys that must evict the idle
// previous group, so concurrent evictions race each other on the same new
// keys. Every key must get exactly its burst per phase: a key inserted twice
// would get more, a lost slot would show as Full.
func TestRateLimitConcurrentEvictionChurn(t *testing.T) {
	const capacity, burst, goroutines, phases = 16, 3, 6, 12
	r := rlMust(t, RateLimitConfig{Rate: 1, Burst: burst, MaxKeys: capacity, IdleTTL: time.Second})
	for p := 0; p < phases; p++ {
		now := int64(p) * 10 * nsSec
		base := uint64(p%4) * 1000
		var perKey [capacity]atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				<-start
				for i := 0; i < 50*capacity; i++ {
					k := (i + g*5) % capacity
					if r.Allow(base+uint64(k)+1, now) {
						perKey[k].Add(1)
					}
				}
			}(g)
		}
		close(start)
		wg.Wait()
		seen := map[uint64]int{}
		for i := range r.tab.slots {
			seen[r.tab.slots[i].key.Load()]++
			if r.tab.slots[i].stamp.Load() == stampLocked {
				t.Errorf("phase %d: slot %d left locked", p, i)
			}
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("phase %d: key %d in %d slots", p, k, n)
			}
		}
		for k := range perKey {
			if n := perKey[k].Load(); n != burst {
				t.Fatalf("phase %d key %d: allowed %d, want exactly %d (stats %+v)", p, k, n, burst, r.Stats())
			}
		}
	}
	st := r.Stats()
	if st.Full != 0 || st.Evictions != capacity*(phases-1) || st.Keys != capacity {
		t.Fatalf("stats %+v, want no Full and %d evictions", st, capacity*(phases-1))
	}
}

func TestRateLimitAllocs(t *testing.T) {
	r := rlMust(t, RateLimitConfig{Rate: 100, Burst: 10, MaxKeys: 1024})
	now := int64(0)
	key := uint64(1)
	allocs := testing.AllocsPerRun(1000, func() {
		r.Allow(key, now)
		key = key%2000 + 1 // includes Full and eviction paths
		now += int64(time.Millisecond)
	})
	if allocs != 0 {
		t.Fatalf("Allow allocates %v per call", allocs)
	}
}
