package bpf

import (
	"errors"
	"testing"

	"github.com/xgate/xgate/packet"

	"github.com/cilium/ebpf"
)

// BenchmarkXDP measures ns per packet inside BPF_PROG_TEST_RUN
// (Program.Benchmark: the kernel runs the program b.N times in one syscall
// and reports the mean). "trivial" is the floor of the machinery: a program
// that bumps one per-CPU counter and passes. The others run the ingest
// program on one packet that takes the named path; "survivor" is the whole
// policy path (parse → listen set → blocklist prefilter → token bucket CAS
// → pass), with the cost sampling at its default 1 in 64.
//
//	go test ./bpf/ -run '^$' -bench BenchmarkXDP -count 5
func BenchmarkXDP(b *testing.B) {
	xgNeedRoot(b)
	pkt := packet.Frame{Src: xgSrc4, Dst: xgDst4, Payload: xgJSON}.Bytes()

	b.Run("trivial", func(b *testing.B) {
		var objs trivialObjects
		if err := loadTrivialObjects(&objs, nil); err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				b.Skip(err)
			}
			b.Fatal(err)
		}
		defer objs.Close()
		xgBench(b, objs.XgateTrivial, pkt, xgPass)
	})

	b.Run("not-ours", func(b *testing.B) {
		x := xgLoad(b, Options{})
		p := packet.Frame{Src: xgSrc4, Dst: xgDst4, DstPort: 53, Payload: xgJSON}.Bytes()
		xgBench(b, x.Program(), p, xgPass)
	})

	b.Run("blocked", func(b *testing.B) {
		x := xgLoad(b, Options{})
		xgNoErr(b, x.Block(xgSrc4, Forever))
		xgBench(b, x.Program(), pkt, xgDrop)
	})

	b.Run("rate-limited", func(b *testing.B) {
		x := xgLoad(b, Options{Config: Config{BucketRate: 1, BucketBurst: 1}})
		// Spend the only token: from here one packet a second is admitted.
		if v, _, _ := xgRun(b, x.Program(), pkt, xgLoIfindex, 0); v != xgPass {
			b.Fatalf("first packet: verdict %d", v)
		}
		xgBench(b, x.Program(), pkt, xgDrop)
	})

	// survivor: a rate no single CPU can exceed, so every packet takes the
	// CAS and is admitted; a blocklist with other entries in it. The burst
	// lasts 64 ms, at least two ticks for any HZ >= 32, so the loader picks
	// the coarse (jiffies) bucket clock — as it would for any bucket whose
	// burst covers two ticks.
	survivor := Config{BucketRate: 1e9, BucketBurst: 1 << 26}
	b.Run("survivor", func(b *testing.B) {
		x := xgLoad(b, Options{Config: survivor})
		xgBenchClock(b, x, true)
		xgNoErr(b, x.Block(xgOther4, Forever))
		xgNoErr(b, x.Block(xgSrc6, Forever))
		xgBench(b, x.Program(), pkt, xgPass)
	})

	// survivor-fine-clock: the same with bpf_ktime_get_ns for the bucket,
	// what a burst shorter than two ticks gets (the pre-slot benchmark's
	// burst of 2^20 ns, ≈ 1 ms, is one).
	b.Run("survivor-fine-clock", func(b *testing.B) {
		c := survivor
		c.FineClock = true
		x := xgLoad(b, Options{Config: c})
		xgBenchClock(b, x, false)
		xgNoErr(b, x.Block(xgOther4, Forever))
		xgNoErr(b, x.Block(xgSrc6, Forever))
		xgBench(b, x.Program(), pkt, xgPass)
	})

	b.Run("survivor-no-bucket", func(b *testing.B) {
		x := xgLoad(b, Options{})
		xgNoErr(b, x.Block(xgOther4, Forever))
		xgBench(b, x.Program(), pkt, xgPass)
	})

	b.Run("survivor-afxdp-no-xsk", func(b *testing.B) {
		x := xgLoad(b, Options{Config: Config{Deliver: DeliverXSK, BucketRate: 1e9, BucketBurst: 1 << 26}})
		xgBench(b, x.Program(), pkt, xgPass)
	})
}

// xgBenchClock fails the benchmark unless the bucket runs on the clock
// the sub-benchmark is named for.
func xgBenchClock(b *testing.B, x *XDP, coarse bool) {
	b.Helper()
	raw, err := x.ReadConfig()
	xgNoErr(b, err)
	if (raw.TickNs != 0) != coarse {
		b.Fatalf("bucket clock: tick_ns %d, want coarse=%v", raw.TickNs, coarse)
	}
}

func xgBench(b *testing.B, prog *ebpf.Program, pkt []byte, want uint32) {
	b.Helper()
	b.ReportAllocs()
	ret, per, err := prog.Benchmark(pkt, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	if ret != want {
		b.Fatalf("verdict %d, want %d", ret, want)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/op")
}
