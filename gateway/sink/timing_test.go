package sink

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/xgate/xgate/engine"
)

// BenchmarkSinkFile measures one worker feeding a file sink through Add and
// Flush (a Flush every 64 records, like a receive batch), with OnFull
// "block" so that every record is written: records/s is what reaches the
// file, Close included.
func BenchmarkSinkFile(b *testing.B) {
	for _, bc := range []struct {
		name   string
		format string
		d      engine.Decision
	}{
		{"raw", "raw", engine.Decision{Raw: event(12345), Action: engine.ActionPass}},
		{"annotated", "annotated", engine.Decision{Raw: event(12345), Action: engine.ActionAlert, Rule: "big-payment", Value: 51234.5}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "events.ndjson")
			s, err := New([]Spec{{
				Type: "file", Path: path, What: "all", Format: bc.format,
				Fsync: "never", OnFull: "block", BlockTimeout: time.Minute,
			}}, 1)
			if err != nil {
				b.Fatal(err)
			}
			w := s.Writer(0)
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.d.Raw)))
			start := time.Now()
			i := 0
			for b.Loop() {
				w.Add(&bc.d)
				if i++; i%64 == 0 {
					w.FlushAll()
				}
			}
			w.FlushAll()
			if err := s.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			el := time.Since(start)
			st := s.Stats()[0]
			if st.Records != uint64(i) || st.Dropped != 0 {
				b.Fatalf("%d added, stats %+v", i, st)
			}
			b.ReportMetric(float64(st.Records)/el.Seconds(), "records/s")
			benchSinkStats = st
		})
	}
}

// benchSinkStats keeps the benchmark's result alive.
var benchSinkStats Stats

// BenchmarkSinkUDP measures forwarding: one datagram per record to a
// loopback socket (which nobody reads, so the kernel drops what overflows
// its buffer; the sender's cost is the same).
func BenchmarkSinkUDP(b *testing.B) {
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	s, err := New([]Spec{{
		Type: "udp", Address: ln.LocalAddr().String(), What: "passed",
		OnFull: "block", BlockTimeout: time.Minute,
	}}, 1)
	if err != nil {
		b.Fatal(err)
	}
	d := engine.Decision{Raw: event(12345), Action: engine.ActionPass}
	w := s.Writer(0)
	b.ReportAllocs()
	b.SetBytes(int64(len(d.Raw)))
	start := time.Now()
	i := 0
	for b.Loop() {
		w.Add(&d)
		if i++; i%64 == 0 {
			w.FlushAll()
		}
	}
	w.FlushAll()
	if err := s.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	st := s.Stats()[0]
	if st.Records+st.Failed != uint64(i) || st.Dropped != 0 {
		b.Fatalf("%d added, stats %+v", i, st)
	}
	b.ReportMetric(float64(st.Records)/time.Since(start).Seconds(), "records/s")
	benchSinkStats = st
}
