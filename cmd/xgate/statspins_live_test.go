package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/bpf"
)

// WriteLive: rates per second and the program's cost over the interval
// come from the difference of two readings; a reading of maps created anew
// (counters went backwards) gets no rates; drops since the last reading
// are highlighted only with color.
func TestPinSnapshotLive(t *testing.T) {
	var c0, c1 bpf.Counters
	c0[bpf.ReasonPassSocket] = bpf.Counter{Packets: 1000, Bytes: 100000}
	c0[bpf.ReasonRateLimited] = bpf.Counter{Packets: 10, Bytes: 1000}
	c0[bpf.EventBlockExpired] = bpf.Counter{Packets: 1}
	c1 = c0
	c1[bpf.ReasonPassSocket].Packets += 4000 // 2000/s over 2s
	c1[bpf.ReasonRateLimited].Packets += 600 // 300/s
	c1[bpf.EventBlockExpired].Packets += 2   // 1/s
	var cost0, cost1 bpf.Cost
	cost0.Samples, cost0.SumNs, cost0.Hist[12] = 100, 100*3000, 100 // ~4µs before
	cost1 = cost0
	cost1.Samples, cost1.SumNs, cost1.Hist[8] = 200, cost0.SumNs+100*200, 100 // ~256ns since

	s0 := pinSnapshot("/pins", c0, cost0, nil)
	s1 := pinSnapshot("/pins", c1, cost1, nil)
	s1.Time = s0.Time.Add(2 * time.Second)
	var b bytes.Buffer
	if err := s1.WriteLive(&b, s0, false); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, re := range []string{
		`(?m)^  seen +2300\.0/s$`, `(?m)^  xdp_dropped +300\.0/s$`, `(?m)^  survivors +2000\.0/s$`, `(?m)^  not_for_us +0\.0/s$`,
		`(?m)^  pass_socket +5000 packets +100000 bytes +2000\.0/s$`,
		`(?m)^  rate_limited +610 packets +1000 bytes +300\.0/s$`,
		`(?m)^  block_expired +3 +1\.0/s$`,
		`(?m)^program cost since the last reading: 100 samples, mean 200ns, p50 \S+ p99 \S+ p999 \S+$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("live text does not match %s:\n%s", re, out)
		}
	}
	// The interval's p99 lies within its own bucket (128..256ns], not the
	// earlier samples' 4µs bucket.
	if d, ok := s1.costSince(s0); !ok || pinCost(d).Quantile.P99 > 256e-9 || pinCost(d).Quantile.P99 <= 128e-9 {
		t.Errorf("cost since: %+v %v", d, ok)
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("ANSI escapes without color:\n%s", out)
	}
	b.Reset()
	if err := s1.WriteLive(&b, s0, true); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`\x1b\[1;31m  rate_limited .*\x1b\[0m`).MatchString(b.String()) ||
		strings.Contains(b.String(), "\x1b[1;31m  pass_socket") {
		t.Errorf("color: drops not (only) highlighted:\n%s", b.String())
	}

	// The maps were created anew: counts went backwards, no rates.
	b.Reset()
	if err := s0.WriteLive(&b, s1, false); err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`\d/s`).MatchString(b.String()) || strings.Contains(b.String(), "since the last reading") {
		t.Errorf("rates across a reset:\n%s", b.String())
	}
	// Without prev: the plain text of WriteText.
	var plain bytes.Buffer
	b.Reset()
	if err := s1.WriteText(&plain); err != nil {
		t.Fatal(err)
	}
	if err := s1.WriteLive(&b, nil, true); err != nil || b.String() != plain.String() || strings.Contains(plain.String(), "/s") {
		t.Errorf("WriteLive without prev (%v):\n%s\nWriteText:\n%s", err, b.String(), plain.String())
	}
}
