package window

import (
	"fmt"
	"testing"
	"time"
)

var sinkResult Result

// BenchmarkAdd: steady state of a partition with 10k users, 60 s window,
// 2 s lateness, dedup on, 2000 events per second (120k in the window),
// times jittered within the lateness. One op = one record in, about one
// result out.
func BenchmarkAdd(b *testing.B) {
	const users, perSec = 10_000, 2000
	keys := make([]string, users)
	for i := range keys {
		keys[i] = fmt.Sprintf("u-%06d", i)
	}
	ids := make([]string, 1<<18)
	for i := range ids {
		ids[i] = fmt.Sprintf("e-%08d", i)
	}
	p, err := NewPartition(Config{Window: time.Minute, Lateness: 2 * time.Second, Dedup: time.Minute, Threshold: 1 << 40},
		nil, func(r Result) { sinkResult = r })
	if err != nil {
		b.Fatal(err)
	}
	step := int64(time.Second) / perSec
	rec := func(i int) Record {
		t := int64(i)*step - int64(i*7919%2000)*int64(time.Millisecond) // up to 2 s behind
		return Record{Offset: int64(i), HasTime: true, Time: t, Windowed: true,
			Key: keys[i*31%users], Amount: int64(i % 1000), ID: ids[i%len(ids)]}
	}
	warm := 3 * 60 * perSec // three windows
	for i := range warm {
		p.Add(rec(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		p.Add(rec(warm + i))
	}
	b.StopTimer()
	s := p.Stats()
	b.ReportMetric(float64(s.Entries), "entries")
	if s.Outcomes[Late]+s.Outcomes[Duplicate] != 0 {
		b.Fatalf("stats %+v", s)
	}
}
