package spool

import (
	"fmt"
	"testing"
)

// BenchmarkSpool measures the spool's two directions with records of the
// size of a keyed payment event (about 190 bytes with its header) and a
// 36-byte message id: append (a flush, and with fsync batch an fsync,
// every 512 records: one slab per writer round) and replay (peek, advance,
// acknowledge per 512). It reports records/s.
func BenchmarkSpool(b *testing.B) {
	rec := make([]byte, 190)
	for i := range rec {
		rec[i] = byte('a' + i%26)
	}
	id := []byte(fmt.Sprintf("gw-1-%s-%d", "m3xk2p9q1a", 123456789012))
	for _, fsync := range []bool{true, false} {
		name := "fsync=batch"
		if !fsync {
			name = "fsync=never"
		}
		b.Run("append/"+name, func(b *testing.B) {
			q, err := Open(b.TempDir(), MaxBytes, fsync)
			if err != nil {
				b.Fatal(err)
			}
			defer q.Close()
			b.ReportAllocs()
			b.SetBytes(int64(len(rec)))
			i := 0
			for b.Loop() {
				q.Append(id, rec, 1)
				if i++; i%512 == 0 {
					if err := q.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "records/s")
		})
	}
	b.Run("replay", func(b *testing.B) {
		q, err := Open(b.TempDir(), MaxBytes, false)
		if err != nil {
			b.Fatal(err)
		}
		defer q.Close()
		const n = 1 << 20
		for range n {
			q.Append(id, rec, 1)
		}
		q.Flush()
		b.ReportAllocs()
		b.SetBytes(int64(len(rec)))
		i := 0
		for b.Loop() {
			r, ok, err := q.Peek()
			if err != nil || !ok {
				b.Fatalf("record %d: %v %v", i, ok, err)
			}
			q.Advance(r)
			if i++; i%512 == 0 {
				q.Ack(q.read)
			}
			if i == n {
				b.StopTimer()
				for range n {
					q.Append(id, rec, 1)
				}
				q.Flush()
				i = 0
				b.StartTimer()
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
}
