package state

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// winRefObs is one observation of the reference implementation.
type winRefObs struct {
	at    int64
	key   uint64
	value float64
	hash  uint64
}

// winRefWindow is the straightforward reference: every observation in a slice,
// the aggregate recomputed by filtering on step(at) in [k-n+1, k].
type winRefWindow struct {
	slide, n int64
	agg      Agg
	obs      []winRefObs
}

func (r *winRefWindow) agg1(key uint64, now int64) (float64, int) {
	k := now / r.slide
	cnt, sum, mn, mx := 0, 0.0, math.Inf(1), math.Inf(-1)
	distinct := map[uint64]bool{}
	for i := len(r.obs) - 1; i >= 0; i-- { // observations are in time order
		o := r.obs[i]
		s := o.at / r.slide
		if s < k-r.n+1 {
			break
		}
		if o.key != key || s > k {
			continue
		}
		cnt++
		sum += o.value
		mn, mx = min(mn, o.value), max(mx, o.value)
		distinct[o.hash] = true
	}
	switch r.agg {
	case AggCount:
		return float64(cnt), cnt
	case AggSum:
		return sum, cnt
	case AggMin:
		return mn, cnt
	case AggMax:
		return mx, cnt
	case AggAvg:
		if cnt == 0 {
			return 0, 0
		}
		return sum / float64(cnt), cnt
	}
	return float64(len(distinct)), cnt
}

func winMust(t testing.TB, cfg WindowConfig) *Window {
	t.Helper()
	w, err := NewWindow(cfg, &ManualClock{})
	if err != nil {
		t.Fatalf("NewWindow(%+v): %v", cfg, err)
	}
	return w
}

// winCloseEnough compares a window result with the reference: exact for all
// but distinct, which gets 3 standard errors (+1 for tiny counts).
func winCloseEnough(agg Agg, p uint8, got, want float64) bool {
	if agg != AggDistinct {
		return got == want || math.Abs(got-want) <= 1e-9*math.Abs(want)
	}
	return math.Abs(got-want) <= 3*hllStdErr(p)*want+1
}

// TestWindowAgainstReference drives every aggregation through randomized
// schedules (small steps within a segment, steps across segments, gaps longer
// than the window, forward jumps by many windows) and checks every Add and a
// Value of every key against the reference.
func TestWindowAgainstReference(t *testing.T) {
	aggs := []Agg{AggCount, AggSum, AggMin, AggMax, AggAvg, AggDistinct}
	shapes := []struct{ size, slide time.Duration }{
		{60 * time.Second, 5 * time.Second},
		{time.Second, time.Second}, // one segment
		{100 * time.Millisecond, time.Millisecond},
	}
	for _, agg := range aggs {
		for _, sh := range shapes {
			for seed := uint64(1); seed <= 3; seed++ {
				name := agg.String() + "/" + sh.size.String() + "/" + sh.slide.String()
				t.Run(name, func(t *testing.T) {
					winRunReference(t, agg, sh.size, sh.slide, seed, 8, 1024)
				})
			}
		}
	}
}

func winRunReference(t *testing.T, agg Agg, size, slide time.Duration, seed uint64, keys, maxKeys int) {
	rng := rand.New(rand.NewPCG(seed, 99))
	const p = 12
	w := winMust(t, WindowConfig{Size: size, Slide: slide, Agg: agg, MaxKeys: maxKeys, Precision: p})
	ref := &winRefWindow{slide: int64(slide), n: int64(size / slide), agg: agg}
	now := int64(rng.IntN(int(slide)))
	for i := 0; i < 3000; i++ {
		switch x := rng.IntN(100); {
		case x < 60: // same or next few segments
			now += rng.Int64N(int64(slide) / 2)
		case x < 90:
			now += rng.Int64N(3 * int64(slide))
		case x < 97: // a gap longer than the window
			now += int64(size) + rng.Int64N(2*int64(size))
		default: // a clock jump by many windows
			now += 1000 * int64(size)
		}
		o := winRefObs{at: now, key: uint64(rng.IntN(keys)) + 1,
			value: float64(rng.IntN(2001)-1000) / 4, // exact in binary: sums are exact
			hash:  rng.Uint64N(50)}
		ref.obs = append(ref.obs, o)
		got := w.Add(o.key, o.value, o.hash, o.at)
		want, _ := ref.agg1(o.key, now)
		if !winCloseEnough(agg, p, got, want) {
			t.Fatalf("obs %d %+v: Add = %v, want %v", i, o, got, want)
		}
		if i%7 == 0 {
			for k := uint64(1); k <= uint64(keys); k++ {
				got, ok := w.Value(k, now)
				want, n := ref.agg1(k, now)
				if ok != (n > 0) || ok && !winCloseEnough(agg, p, got, want) {
					t.Fatalf("obs %d: Value(%d) = %v, %v; want %v (count %d)", i, k, got, ok, want, n)
				}
			}
		}
	}
	if st := w.Stats(); st.Full != 0 || st.Late != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestWindowEvictionAgainstReference: a table of 4 slots and key groups that
// take turns, separated by gaps longer than the window, so every turn evicts
// the previous group. Results must still match the reference exactly.
func TestWindowEvictionAgainstReference(t *testing.T) {
	for _, agg := range []Agg{AggCount, AggSum, AggMin, AggMax, AggAvg} {
		t.Run(agg.String(), func(t *testing.T) {
			const size, slide = 10 * time.Second, time.Second
			rng := rand.New(rand.NewPCG(7, uint64(agg)))
			w := winMust(t, WindowConfig{Size: size, Slide: slide, Agg: agg, MaxKeys: 4})
			ref := &winRefWindow{slide: int64(slide), n: int64(size / slide), agg: agg}
			now := int64(0)
			for turn := 0; turn < 30; turn++ {
				group := uint64(turn%5) * 100
				for i := 0; i < 200; i++ {
					now += rng.Int64N(int64(slide) / 3)
					o := winRefObs{at: now, key: group + uint64(rng.IntN(4)) + 1, value: float64(rng.IntN(100))}
					ref.obs = append(ref.obs, o)
					got := w.Add(o.key, o.value, 0, now)
					if want, _ := ref.agg1(o.key, now); got != want {
						t.Fatalf("turn %d obs %d: Add = %v, want %v", turn, i, got, want)
					}
				}
				for k := uint64(1); k <= 500; k++ {
					got, ok := w.Value(k, now)
					want, n := ref.agg1(k, now)
					if ok != (n > 0) || ok && got != want {
						t.Fatalf("turn %d: Value(%d) = %v, %v; want %v (count %d)", turn, k, got, ok, want, n)
					}
				}
				now += int64(size) + rng.Int64N(int64(size))
			}
			st := w.Stats()
			if st.Full != 0 || st.Evictions < 4*29-4 || st.Keys != 4 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestWindowExpiryExact(t *testing.T) {
	// 60s/5s sum: segments k-11..k with k = now/5s.
	w := winMust(t, WindowConfig{Size: 60 * time.Second, Slide: 5 * time.Second, Agg: AggSum, MaxKeys: 16})
	at := func(s float64) int64 { return int64(s * float64(time.Second)) }
	steps := []struct {
		at    float64
		add   float64 // 0: only read
		want  float64
		found bool
	}{
		{0, 1, 1, true},
		{4.999, 2, 3, true},      // same segment 0
		{5, 4, 7, true},          // segment 1
		{59.999, 8, 15, true},    // segment 11: 0..11 all live
		{60, 0, 12, true},        // k=12: segment 0 (1+2) expired
		{64.999, 0, 12, true},    // still k=12
		{65, 0, 8, true},         // k=13: segment 1 (4) expired
		{119.999, 0, 0, false},   // k=23: segment 11 expired at k=23
		{1e6, 16, 16, true},      // far jump: all stale
		{1e6 + 55, 32, 48, true}, // k+11 still includes the first
		{1e6 + 60, 64, 96, true}, // next step drops it
		{1e6 + 200, 0, 0, false}, // empty
		{1e6 + 200, 0.5, 0.5, true},
	}
	for i, s := range steps {
		var got float64
		var ok bool
		if s.add != 0 {
			got, ok = w.Add(1, s.add, 0, at(s.at)), true
		} else {
			got, ok = w.Value(1, at(s.at))
		}
		if got != s.want || ok != s.found {
			t.Fatalf("step %d at %vs: got %v, %v; want %v, %v", i, s.at, got, ok, s.want, s.found)
		}
	}
}

func TestWindowMinMaxAvgEdges(t *testing.T) {
	tests := []struct {
		agg  Agg
		vals []float64
		want float64
	}{
		{AggMin, []float64{3, -2, 5}, -2},
		{AggMax, []float64{3, -2, 5}, 5},
		{AggMin, []float64{0}, 0},
		{AggMax, []float64{-7}, -7},
		{AggAvg, []float64{1, 2, 6}, 3},
		{AggSum, []float64{math.NaN(), 2}, 2},             // NaN recorded as 0
		{AggMin, []float64{math.Inf(1)}, math.MaxFloat64}, // ±Inf recorded as ±MaxFloat64
		{AggMax, []float64{math.Inf(-1), -1e308}, -1e308},
		{AggCount, []float64{1, 1, 1, 1}, 4},
	}
	for _, tc := range tests {
		w := winMust(t, WindowConfig{Size: time.Minute, Slide: time.Second, Agg: tc.agg, MaxKeys: 8})
		var got float64
		for _, v := range tc.vals {
			got = w.Add(9, v, 0, 0)
		}
		val, ok := w.Value(9, 0)
		if got != tc.want || !ok || val != tc.want {
			t.Errorf("%v %v: Add = %v, Value = %v %v; want %v", tc.agg, tc.vals, got, val, ok, tc.want)
		}
		if _, ok := w.Value(10, 0); ok {
			t.Errorf("%v: unknown key reported", tc.agg)
		}
	}
}

// A caller whose clock lags: an observation for a step whose segment already
// holds a newer step is Late, reflected in its own Add only; one for an older
// step whose segment is stale is stored in its own step.
func TestWindowLateObservation(t *testing.T) {
	w := winMust(t, WindowConfig{Size: 4 * time.Second, Slide: time.Second, Agg: AggCount, MaxKeys: 8})
	if got := w.Add(1, 0, 0, 10*nsSec); got != 1 { // step 10, segment 2
		t.Fatal(got)
	}
	if got := w.Add(1, 0, 0, 9*nsSec); got != 1 { // step 9: window 6..9 holds only itself
		t.Fatalf("lagging add in its own segment: %v", got)
	}
	if got, _ := w.Value(1, 10*nsSec); got != 2 {
		t.Fatalf("value at 10s = %v, want 2", got)
	}
	if got := w.Add(1, 0, 0, 6*nsSec); got != 1 { // step 6 -> segment 2 holds step 10: Late
		t.Fatalf("late add returns %v, want 1 (steps 3..6 hold nothing, plus itself)", got)
	}
	if st := w.Stats(); st.Late != 1 {
		t.Fatalf("stats %+v", st)
	}
	if got, _ := w.Value(1, 10*nsSec); got != 2 {
		t.Fatalf("late observation must not be stored: %v", got)
	}
}

func TestWindowFull(t *testing.T) {
	w := winMust(t, WindowConfig{Size: 10 * time.Second, Slide: time.Second, Agg: AggSum, MaxKeys: 2})
	w.Add(1, 1, 0, 0)
	w.Add(2, 1, 0, 0)
	if got := w.Add(3, 5, 0, nsSec); got != 5 {
		t.Fatalf("full table: Add = %v, want the observation alone", got)
	}
	if _, ok := w.Value(3, nsSec); ok {
		t.Fatal("key 3 must not be stored")
	}
	// Key 1 and 2 expire at step 10 (segments 0..9 hold step 0 until k=10).
	if got := w.Add(3, 5, 0, 10*nsSec); got != 5 {
		t.Fatal(got)
	}
	if got, _ := w.Value(3, 10*nsSec); got != 5 {
		t.Fatalf("key 3 should have evicted an expired key: %v", got)
	}
	if st := w.Stats(); st.Full != 1 || st.Evictions != 1 || st.Keys != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWindowConfigErrors(t *testing.T) {
	tests := []struct {
		cfg  WindowConfig
		want string
	}{
		{WindowConfig{Size: time.Minute}, "slide must be >= 1ms"},
		{WindowConfig{Size: time.Minute, Slide: time.Microsecond}, "slide must be >= 1ms"},
		{WindowConfig{Size: 0, Slide: time.Second}, "positive multiple"},
		{WindowConfig{Size: 7 * time.Second, Slide: 2 * time.Second}, "positive multiple"},
		{WindowConfig{Size: 2 * time.Second, Slide: time.Millisecond}, "2000 segments, at most 1024"},
		{WindowConfig{Size: time.Minute, Slide: time.Second, Agg: 9}, "unknown aggregation"},
		{WindowConfig{Size: time.Minute, Slide: time.Second, MaxKeys: -1}, "max_keys"},
		{WindowConfig{Size: time.Minute, Slide: time.Second, Agg: AggDistinct, Precision: 3}, "precision"},
		{WindowConfig{Size: time.Minute, Slide: time.Second, Agg: AggDistinct, Precision: 17}, "precision"},
		{WindowConfig{Size: time.Second, Slide: time.Millisecond, Agg: AggDistinct, Precision: 16, MaxKeys: 1 << 30}, "more than 1 TiB"},
	}
	for _, tc := range tests {
		_, err := NewWindow(tc.cfg, nil)
		if err == nil || !errors.Is(err, ErrInvalidWindow) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewWindow(%+v) = %v, want error containing %q", tc.cfg, err, tc.want)
		}
	}
	w := winMust(t, WindowConfig{Size: time.Minute, Slide: 5 * time.Second, Agg: AggSum, MaxKeys: 100})
	if st := w.Stats(); st.Capacity != 128 || st.BytesPerKey != 16+12*24 {
		t.Fatalf("stats %+v", st)
	}
	w = winMust(t, WindowConfig{Size: time.Minute, Slide: 5 * time.Second, Agg: AggDistinct, MaxKeys: 1})
	if st := w.Stats(); st.BytesPerKey != 16+12*16+12*256 {
		t.Fatalf("distinct stats %+v", st)
	}
}

func TestParseAgg(t *testing.T) {
	for _, a := range []Agg{AggCount, AggSum, AggMin, AggMax, AggAvg, AggDistinct} {
		got, err := ParseAgg(a.String())
		if err != nil || got != a {
			t.Errorf("ParseAgg(%q) = %v, %v", a.String(), got, err)
		}
	}
	for _, s := range []string{"", "Count", "median", "sum(amount)"} {
		if _, err := ParseAgg(s); err == nil || !errors.Is(err, ErrInvalidWindow) {
			t.Errorf("ParseAgg(%q) = %v, want error", s, err)
		}
	}
	if s := Agg(42).String(); s != "Agg(42)" {
		t.Error(s)
	}
}

// Concurrency, no expiry: goroutines add to shared keys within one step; the
// total count (and integer sum) across keys equals what was added.
func TestWindowConcurrentChecksum(t *testing.T) {
	for _, agg := range []Agg{AggCount, AggSum} {
		w := winMust(t, WindowConfig{Size: time.Minute, Slide: time.Second, Agg: agg, MaxKeys: 64})
		const goroutines, per, keys = 8, 3000, 10
		var wg sync.WaitGroup
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < per; i++ {
					// Times spread over the whole window (all steps live at 59s).
					now := int64((i*7+g)%60) * nsSec
					w.Add(uint64(i%keys)+1, 2, 0, now)
				}
			}(g)
		}
		wg.Wait()
		total := 0.0
		for k := uint64(1); k <= keys; k++ {
			v, _ := w.Value(k, 59*nsSec)
			total += v
		}
		want := float64(goroutines * per)
		if agg == AggSum {
			want *= 2
		}
		if total != want {
			t.Fatalf("%v: total %v, want %v", agg, total, want)
		}
	}
}

// Concurrency across segment resets: in every phase all goroutines add to
// the same key at the same step, so they race to reset the stale segment.
// After each phase the window must hold exactly the last n phases.
func TestWindowConcurrentRollover(t *testing.T) {
	const n, goroutines, per, phases = 4, 6, 200, 40
	for _, agg := range []Agg{AggCount, AggSum, AggMax, AggDistinct} {
		w := winMust(t, WindowConfig{Size: n * time.Second, Slide: time.Second, Agg: agg, MaxKeys: 8, Precision: 10})
		for p := 0; p < phases; p++ {
			var wg sync.WaitGroup
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := 0; i < per; i++ {
						w.Add(1, float64(p), uint64(p*goroutines*per+g*per+i), int64(p)*nsSec+int64(i))
					}
				}(g)
			}
			wg.Wait()
			got, ok := w.Value(1, int64(p)*nsSec)
			live := min(p+1, n)
			var want float64
			switch agg {
			case AggCount, AggDistinct:
				want = float64(live * goroutines * per)
			case AggSum:
				for q := p - live + 1; q <= p; q++ {
					want += float64(q * goroutines * per)
				}
			case AggMax:
				want = float64(p)
			}
			if !ok || !winCloseEnough(agg, 10, got, want) {
				t.Fatalf("%v phase %d: %v %v, want %v", agg, p, got, ok, want)
			}
		}
		if st := w.Stats(); st.Late != 0 || st.Full != 0 {
			t.Fatalf("%v: stats %+v", agg, st)
		}
	}
}

// Readers and writers at once, with expiry and eviction: nothing to compare
// exactly, but the race detector watches and results must be sane.
func TestWindowConcurrentChurn(t *testing.T) {
	w := winMust(t, WindowConfig{Size: 5 * time.Millisecond, Slide: time.Millisecond, Agg: AggAvg, MaxKeys: 16})
	clk := &ManualClock{}
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 4000; i++ {
				if g == 0 && i%10 == 0 {
					clk.Advance(300 * time.Microsecond)
				}
				k := uint64((i*13+g)%40) + 1
				now := clk.Nanotime()
				if g%2 == 0 {
					// Other writers' observations may be seen half applied
					// and a writer lagging a whole window may hit a reused
					// segment (both documented), so only sanity is checked.
					if v := w.Add(k, 3, 0, now); !(v >= 0 && v < 100) {
						t.Errorf("avg of threes = %v", v)
						return
					}
				} else if v, ok := w.Value(k, now); ok && !(v >= 0 && v < 100) {
					t.Errorf("Value avg of threes = %v", v)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	t.Logf("stats %+v", w.Stats())
}

func TestWindowAllocs(t *testing.T) {
	for _, agg := range []Agg{AggSum, AggMin, AggDistinct} {
		w := winMust(t, WindowConfig{Size: time.Minute, Slide: 5 * time.Second, Agg: agg, MaxKeys: 256})
		now, key := int64(0), uint64(1)
		allocs := testing.AllocsPerRun(1000, func() {
			w.Add(key, 1.5, key*31, now)
			w.Value(key, now)
			key = key%400 + 1 // includes Full and eviction paths
			now += int64(100 * time.Millisecond)
		})
		if allocs != 0 {
			t.Fatalf("%v: Add+Value allocate %v per call", agg, allocs)
		}
	}
}

// TestWindowSumNeverNaN: the Window API itself, fed ±Inf and extremes.
func TestWindowSumNeverNaN(t *testing.T) {
	for _, agg := range []Agg{AggSum, AggAvg} {
		w := winMust(t, WindowConfig{Size: 4 * time.Second, Slide: time.Second, Agg: agg, MaxKeys: 8})
		for i, v := range []float64{math.Inf(1), math.MaxFloat64, math.Inf(-1), -math.MaxFloat64, math.NaN(), 5} {
			got := w.Add(1, v, 0, int64(i%4)*nsSec)
			if math.IsNaN(got) || math.IsInf(got, 0) {
				t.Fatalf("%v: Add #%d (%v) = %v", agg, i, v, got)
			}
			if val, _ := w.Value(1, int64(i%4)*nsSec); math.IsNaN(val) || math.IsInf(val, 0) {
				t.Fatalf("%v: Value after #%d = %v", agg, i, val)
			}
		}
	}
}
