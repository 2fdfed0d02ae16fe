package bpf

import (
	"errors"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// BenchmarkXDP measures ns per packet inside BPF_PROG_TEST_RUN
// (Program.Benchmark: the kernel runs the program b.N times in one syscall
// and reports the mean). "trivial" is the floor of the machinery: a program
// that bumps one per-CPU counter and passes. The others run the ingest
// program on one packet that takes the named path; "survivor" is the whole
// policy path (parse → listen set → blocklist lookup → token bucket CAS →
// pass), with the cost sampling at its default 1 in 64.
//
//	go test ./bpf/ -run '^$' -bench BenchmarkXDP -count 5
func BenchmarkXDP(b *testing.B) {
	xgNeedRoot(b)
	pkt := xgPacket{src: xgSrc4, dst: xgDst4, payload: xgJSON}.bytes()

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
		p := xgPacket{src: xgSrc4, dst: xgDst4, dport: 53, payload: xgJSON}.bytes()
		xgBench(b, x.Program(), p, xgPass)
	})

	b.Run("blocked", func(b *testing.B) {
		x := xgLoad(b, Options{})
		xgNoErr(b, x.Block(xgSrc4, Forever))
		xgBench(b, x.Program(), pkt, xgDrop)
	})

	b.Run("rate-limited", func(b *testing.B) {
		x := xgLoad(b, Options{Config: Config{BucketRate: 1, BucketBurst: 1}})
		k, _ := srcKey(xgSrc4)
		xgNoErr(b, x.objs.XgateBuckets.Put(k, XdpXgateBucket{TatNs: Ktime() + uint64(time.Hour)}))
		xgBench(b, x.Program(), pkt, xgDrop)
	})

	b.Run("survivor", func(b *testing.B) {
		// A rate no single CPU can exceed, so every packet takes the CAS
		// and is admitted; a blocklist with other entries in it.
		x := xgLoad(b, Options{Config: Config{BucketRate: 1e9, BucketBurst: 1 << 20}})
		xgNoErr(b, x.Block(xgOther4, Forever))
		xgNoErr(b, x.Block(xgSrc6, Forever))
		xgBench(b, x.Program(), pkt, xgPass)
	})

	b.Run("survivor-afxdp-no-xsk", func(b *testing.B) {
		x := xgLoad(b, Options{Config: Config{Mode: ModeAFXDP, BucketRate: 1e9, BucketBurst: 1 << 20}})
		xgBench(b, x.Program(), pkt, xgPass)
	})
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
