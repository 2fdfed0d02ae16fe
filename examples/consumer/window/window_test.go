package window

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

const sec = int64(time.Second)

// collector gathers emitted results by offset and fails on a second
// result for the same offset.
type collector struct {
	t   *testing.T
	got map[int64]Result
}

func newCollector(t *testing.T) *collector { return &collector{t: t, got: map[int64]Result{}} }

func (c *collector) emit(r Result) {
	c.t.Helper()
	if prev, dup := c.got[r.Offset]; dup {
		c.t.Fatalf("offset %d has two results: %+v and %+v", r.Offset, prev, r)
	}
	c.got[r.Offset] = r
}

func newPart(t *testing.T, cfg Config, ck *Checkpoint, c *collector) *Partition {
	t.Helper()
	p, err := NewPartition(cfg, ck, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func rec(off int64, ts int64, key string, amount int64) Record {
	return Record{Offset: off, HasTime: true, Time: ts * sec, Windowed: true, Key: key, Amount: amount}
}

func sumOf(r Result) int64 {
	v, ok := r.Sum.Int64()
	if !ok {
		panic("sum out of int64 range in a test")
	}
	return v
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Window: 0},
		{Window: time.Minute, Lateness: -1},
		{Window: time.Minute, Dedup: 2 * time.Minute},
		{Window: time.Minute, Dedup: -1},
	} {
		if _, err := NewPartition(cfg, nil, nil); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// TestExactSums: the sliding window is (t − W, t], both edges exact, per
// key, and a result waits for the watermark.
func TestExactSums(t *testing.T) {
	c := newCollector(t)
	p := newPart(t, Config{Window: 10 * time.Second, Threshold: 100}, nil, c)
	in := []Record{
		rec(0, 100, "a", 50),
		rec(1, 101, "b", 7),
		rec(2, 105, "a", 40),
		rec(3, 110, "a", 20), // (100,110]: 40+20 — the record at 100 is out
		rec(4, 110, "a", 1),  // same time: both see each other
		rec(5, 111, "a", 45), // (101,111]: 40+20+1+45 = 106 > 100
		rec(6, 200, "z", 0),  // pushes the watermark past everything
	}
	for _, r := range in {
		if o := p.Add(r); o != Accepted {
			t.Fatalf("%+v: %v", r, o)
		}
	}
	want := map[int64]struct {
		sum   int64
		count int
		alert bool
	}{
		0: {50, 1, false}, 1: {7, 1, false}, 2: {90, 2, false},
		3: {61, 3, false}, 4: {61, 3, false}, 5: {106, 4, true},
	}
	if len(c.got) != len(want) {
		t.Fatalf("results %v, want %d", c.got, len(want))
	}
	for off, w := range want {
		r := c.got[off]
		if sumOf(r) != w.sum || r.Count != w.count || r.Alert != w.alert || r.Flushed {
			t.Errorf("offset %d: %+v, want %+v", off, r, w)
		}
	}
	if s := p.Stats(); s.Alerts != 1 || s.Results != 6 || s.Pending != 1 {
		t.Errorf("stats %+v", s)
	}
	// Nothing is final before the watermark passes it: with lateness the
	// record at 200 waits.
	c2 := newCollector(t)
	p2 := newPart(t, Config{Window: 10 * time.Second, Lateness: 5 * time.Second}, nil, c2)
	p2.Add(rec(0, 100, "a", 1))
	p2.Add(rec(1, 105, "a", 1))
	if len(c2.got) != 0 {
		t.Fatalf("wm 100: results %v", c2.got)
	}
	p2.Add(rec(2, 106, "a", 1))                    // wm 101 > 100
	if len(c2.got) != 1 || sumOf(c2.got[0]) != 1 { // (90,100] holds only itself
		t.Fatalf("wm 101: results %v", c2.got)
	}
}

// TestLateness: records out of order within the lateness are in every
// window they belong to, also the windows of records appended before them;
// older ones are Late and in none.
func TestLateness(t *testing.T) {
	c := newCollector(t)
	p := newPart(t, Config{Window: 10 * time.Second, Lateness: 5 * time.Second}, nil, c)
	steps := []struct {
		r    Record
		want Outcome
	}{
		{rec(0, 100, "a", 10), Accepted},
		{rec(1, 104, "a", 20), Accepted},
		{rec(2, 102, "a", 5), Accepted},                              // out of order, within lateness (wm 99)
		{rec(3, 110, "a", 1), Accepted},                              // wm 105
		{rec(4, 104, "a", 1000), Late},                               // 104 < 105
		{rec(5, 105, "a", 3), Accepted},                              // at the watermark: in time
		{rec(6, 106, "b", 0), Accepted},                              // another key
		{Record{Offset: 7, HasTime: true, Time: 130 * sec}, Skipped}, // not windowed, moves time
		{Record{Offset: 8}, NoTime},
	}
	for _, s := range steps {
		if o := p.Add(s.r); o != s.want {
			t.Fatalf("offset %d: %v, want %v", s.r.Offset, o, s.want)
		}
	}
	want := map[int64]int64{
		0: 10,             // (90,100]
		2: 15,             // (92,102]: 100, 102
		1: 35,             // (94,104]: 100, 102, 104
		5: 38,             // (95,105]
		3: 5 + 20 + 3 + 1, // (100,110]: 102, 104, 105, 110
		6: 0,
	}
	if len(c.got) != len(want) {
		t.Fatalf("results %v", c.got)
	}
	for off, w := range want {
		if got := sumOf(c.got[off]); got != w {
			t.Errorf("offset %d: sum %d, want %d", off, got, w)
		}
	}
	if s := p.Stats(); s.Outcomes[Late] != 1 || s.Outcomes[NoTime] != 1 || s.Outcomes[Skipped] != 1 {
		t.Errorf("stats %+v", s)
	}
	if o := p.Add(rec(7, 200, "a", 1)); o != Stale {
		t.Errorf("offset seen again: %v", o)
	}
}

// TestEviction: keys, entries and IDs go once the watermark leaves them a
// window behind.
func TestEviction(t *testing.T) {
	c := newCollector(t)
	p := newPart(t, Config{Window: 10 * time.Second, Dedup: 10 * time.Second}, nil, c)
	off := int64(0)
	for i := range 1000 {
		r := rec(off, 100+int64(i)/200, fmt.Sprintf("u%d", i%100), 1)
		r.ID = fmt.Sprintf("e%d", i)
		if o := p.Add(r); o != Accepted {
			t.Fatalf("%+v: %v", r, o)
		}
		off++
	}
	if s := p.Stats(); s.Keys != 100 || s.IDs != 1000 || s.Entries != 1000 {
		t.Fatalf("before: %+v", s)
	}
	// Time moves on to 120: everything at or before 110 is out of every window.
	p.Add(Record{Offset: off, HasTime: true, Time: 120 * sec})
	if s := p.Stats(); s.Keys != 0 || s.IDs != 0 || s.Entries != 0 || s.Pending != 0 || s.Results != 1000 {
		t.Fatalf("after: %+v", s)
	}
	// One busy key: the old part of its window is dropped as it slides.
	for i := range 10000 {
		off++
		p.Add(rec(off, 200+int64(i)/100, "hot", 1)) // 100 records per second
	}
	if s := p.Stats(); s.Entries > 1100+100 || s.Keys != 1 {
		t.Fatalf("busy key holds %d entries (window holds ~1000): %+v", s.Entries, s)
	}
	if r := c.got[off-100]; sumOf(r) != 1000 || r.Count != 1000 { // (288,298]
		t.Fatalf("busy key's window: %+v", r)
	}
}

func TestDedup(t *testing.T) {
	c := newCollector(t)
	p := newPart(t, Config{Window: 10 * time.Second, Lateness: 10 * time.Second, Dedup: 5 * time.Second}, nil, c)
	with := func(r Record, id string) Record { r.ID = id; return r }
	steps := []struct {
		r    Record
		want Outcome
	}{
		{with(rec(0, 100, "a", 10), "x"), Accepted},
		{with(rec(1, 100, "a", 10), "x"), Duplicate}, // producer retry
		{with(rec(2, 103, "a", 10), "x"), Duplicate}, // re-sent within 5s
		{with(rec(3, 106, "a", 10), "x"), Accepted},  // 6s later: a new event
		{with(rec(4, 107, "a", 10), "x"), Duplicate}, // of the newer one
		{with(rec(5, 101, "a", 1), ""), Accepted},    // no ID: never a duplicate
		{with(rec(6, 101, "a", 1), ""), Accepted},
	}
	for _, s := range steps {
		if o := p.Add(s.r); o != s.want {
			t.Fatalf("offset %d: %v, want %v", s.r.Offset, o, s.want)
		}
	}
	p.Flush()
	if r := c.got[3]; sumOf(r) != 22 || !r.Flushed { // (96,106]: 100, 101, 101, 106
		t.Fatalf("result of offset 3: %+v", r)
	}
	if o := p.Add(rec(7, 300, "a", 1)); o != Closed {
		t.Fatalf("after Flush: %v", o)
	}
}

func TestCheckpointMetadata(t *testing.T) {
	for _, ck := range []Checkpoint{
		{Offset: 512, Next: 700, MaxTime: -5, HasMax: true},
		{Offset: 0, Next: 0},
	} {
		got, err := ParseCheckpoint(ck.Offset, ck.Metadata())
		if err != nil || got != ck {
			t.Errorf("%+v → %q → %+v, %v", ck, ck.Metadata(), got, err)
		}
	}
	for _, m := range []string{"", "member-1", "xgate-window/1", "xgate-window/1 next=x", "xgate-window/1 next=5 what=1", "xgate-window/1 next=3"} {
		if _, err := ParseCheckpoint(4, m); !errors.Is(err, ErrMetadata) {
			t.Errorf("%q: %v, want ErrMetadata", m, err)
		}
	}
}

// stream is a random partition log: keys, times mostly increasing with
// jitter (some beyond the lateness), amounts of either sign, IDs with
// re-sends, records that only move time, and now and then a time from the
// future (a producer's clock jump) after which records are late for a while.
func stream(rng *rand.Rand, n int, cfg Config) []Record {
	var rs []Record
	lateness := int64(cfg.Lateness)
	now := int64(1_000) * sec
	for i := range n {
		now += rng.Int64N(300) * int64(time.Millisecond)
		t := now - rng.Int64N(lateness+lateness/2+1) // a quarter or so are late
		r := Record{Offset: int64(i), HasTime: true, Time: t, Windowed: true,
			Key: fmt.Sprintf("u%d", rng.IntN(7)), Amount: rng.Int64N(2000) - 300, Tag: uint8(i)}
		switch x := rng.IntN(1000); {
		case x < 2:
			r.Windowed = false
			r.Time = now + int64(cfg.Window+cfg.Dedup) + lateness + rng.Int64N(int64(cfg.Window))
		case x < 50:
			r.Windowed = false
		case x < 100:
			r.HasTime = false
		case x < 300 && i > 0: // re-send of a recent event, maybe with another time
			prev := rs[max(0, len(rs)-1-rng.IntN(200))]
			r.ID, r.Key, r.Amount = prev.ID, prev.Key, prev.Amount
			if rng.IntN(2) == 0 {
				r.Time = prev.Time
			}
		default:
			r.ID = fmt.Sprintf("e%d", i)
		}
		rs = append(rs, r)
	}
	return rs
}

// oracle decides every record by the package's definition, by brute force,
// and returns the expected result of every accepted record.
func oracle(cfg Config, rs []Record) (map[int64]Result, map[int64]Outcome) {
	w, late, dup := int64(cfg.Window), int64(cfg.Lateness), int64(cfg.Dedup)
	var acc []Record
	outs := map[int64]Outcome{}
	hasMax, maxT := false, int64(0)
	for _, r := range rs {
		if !r.HasTime {
			outs[r.Offset] = NoTime
			continue
		}
		if hasMax && r.Time < maxT-late {
			outs[r.Offset] = Skipped
			if r.Windowed {
				outs[r.Offset] = Late
			}
			continue
		}
		if !hasMax || r.Time > maxT {
			hasMax, maxT = true, r.Time
		}
		if !r.Windowed {
			outs[r.Offset] = Skipped
			continue
		}
		isDup := false
		if r.ID != "" {
			// The newest earlier accepted record with this ID decides.
			for j := len(acc) - 1; j >= 0; j-- {
				if acc[j].ID == r.ID {
					isDup = acc[j].Time >= r.Time-dup
					break
				}
			}
		}
		if isDup {
			outs[r.Offset] = Duplicate
			continue
		}
		outs[r.Offset] = Accepted
		acc = append(acc, r)
	}
	res := map[int64]Result{}
	for _, r := range acc {
		var s Int128
		n := 0
		for _, o := range acc {
			if o.Key == r.Key && o.Time > r.Time-w && o.Time <= r.Time {
				s = s.Add(o.Amount)
				n++
			}
		}
		res[r.Offset] = Result{Offset: r.Offset, Time: r.Time, Key: r.Key, Sum: s, Count: n,
			Alert: s.Cmp(I128(cfg.Threshold)) > 0, Tag: r.Tag}
	}
	return res, outs
}

func sameResults(t *testing.T, got, want map[int64]Result) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d results, want %d", len(got), len(want))
	}
	offs := make([]int64, 0, len(want))
	for o := range want {
		offs = append(offs, o)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	bad := 0
	for _, o := range offs {
		g, ok := got[o]
		g.Flushed = false
		if !ok || g != want[o] {
			if bad++; bad <= 5 {
				t.Errorf("offset %d: got %+v (present %v), want %+v", o, g, ok, want[o])
			}
		}
	}
}

// TestAgainstOracle: random logs give exactly the brute-force results and
// outcomes.
func TestAgainstOracle(t *testing.T) {
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 7))
		cfg := Config{Window: time.Duration(1+rng.IntN(20)) * time.Second,
			Lateness: time.Duration(rng.IntN(4000)) * time.Millisecond, Threshold: 5000}
		cfg.Dedup = time.Duration(rng.Int64N(int64(cfg.Window) + 1))
		if seed%4 == 1 {
			cfg.Dedup = 0 // only re-sends with the same time are duplicates
		}
		rs := stream(rng, 3000, cfg)
		want, outs := oracle(cfg, rs)
		c := newCollector(t)
		p := newPart(t, cfg, nil, c)
		for _, r := range rs {
			if o := p.Add(r); o != outs[r.Offset] {
				t.Fatalf("seed %d offset %d: %v, want %v", seed, r.Offset, o, outs[r.Offset])
			}
		}
		p.Flush()
		sameResults(t, c.got, want)
		if s := p.Stats(); s.Pending != 0 {
			t.Fatalf("seed %d: pending %d after Flush", seed, s.Pending)
		}
	}
}

// TestReplayFromCheckpoint: an owner processes a prefix and checkpoints; a
// new owner reads from the checkpoint's offset. Together they emit every
// result exactly once, and each equals the brute-force one.
func TestReplayFromCheckpoint(t *testing.T) {
	var suppressed uint64
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 11))
		cfg := Config{Window: time.Duration(1+rng.IntN(10)) * time.Second,
			Lateness: time.Duration(rng.IntN(3000)) * time.Millisecond, Threshold: 3000,
			Block: []int64{1, 5, DefaultBlock}[seed%3]}
		cfg.Dedup = time.Duration(rng.Int64N(int64(cfg.Window) + 1))
		if seed%2 == 0 {
			cfg.Dedup = cfg.Window
		}
		rs := stream(rng, 4000, cfg)
		want, _ := oracle(cfg, rs)
		c := newCollector(t)
		// Three owners: hand over at two random points (the second owner
		// may hand over while still replaying).
		cut1 := 500 + rng.IntN(1500)
		cut2 := cut1 + rng.IntN(2000)
		first := newPart(t, cfg, nil, c)
		for _, r := range rs[:cut1] {
			first.Add(r)
		}
		ck, ok := first.Checkpoint()
		if !ok || ck.Next != int64(cut1) || ck.Offset > ck.Next || ck.Offset%cfg.Block != 0 {
			t.Fatalf("seed %d: checkpoint %+v", seed, ck)
		}
		ck, err := ParseCheckpoint(ck.Offset, ck.Metadata()) // through the commit's string
		if err != nil {
			t.Fatal(err)
		}
		if seed%3 == 0 { // the second owner hands over while still replaying
			cut2 = int(ck.Offset) + rng.IntN(cut1-int(ck.Offset)+1)
		}
		second := newPart(t, cfg, &ck, c)
		for _, r := range rs[ck.Offset:cut2] {
			second.Add(r)
		}
		ck2, ok := second.Checkpoint()
		if !ok { // it read nothing: hand over what it got
			ck2, ok = ck, true
		}
		if ck2.Next != max(int64(cut2), ck.Next) || ck2.Offset < ck.Offset {
			t.Fatalf("seed %d: second checkpoint %+v after %+v", seed, ck2, ck)
		}
		third := newPart(t, cfg, &ck2, c)
		for _, r := range rs[ck2.Offset:] {
			third.Add(r)
		}
		third.Flush()
		sameResults(t, c.got, want)
		if first.Stats().Suppressed != 0 {
			t.Errorf("seed %d: the first owner suppressed %d results", seed, first.Stats().Suppressed)
		}
		suppressed += second.Stats().Suppressed + third.Stats().Suppressed
	}
	if suppressed == 0 { // the replays re-finalized nothing: the test tested no replay
		t.Error("no result was suppressed in any replay")
	}
}

// TestCheckpointBounded: a steady stream keeps the replay distance about a
// window (plus the dedup horizon), not the whole log.
func TestCheckpointBounded(t *testing.T) {
	c := newCollector(t)
	p := newPart(t, Config{Window: 10 * time.Second, Lateness: time.Second, Dedup: 10 * time.Second}, nil, c)
	for i := range int64(100_000) { // 100 records per second, 1000 s
		p.Add(Record{Offset: i, HasTime: true, Time: 1000*sec + i*sec/100, Windowed: true,
			Key: fmt.Sprintf("u%d", i%13), Amount: 1, ID: fmt.Sprint(i)})
	}
	ck, _ := p.Checkpoint()
	// Needed: the last 10 s + 10 s + 1 s of lateness = 2100 records, plus a block.
	if d := ck.Next - ck.Offset; d < 2000 || d > 2100+DefaultBlock {
		t.Fatalf("replay distance %d records (%+v)", d, ck)
	}
	// Held: the last 10 s + 1 s of lateness, plus up to 32 per key before a compaction.
	if s := p.Stats(); s.Entries > 1100+13*32 || s.IDs > 1100+13*32 {
		t.Fatalf("memory: %+v", s)
	}
}
