package gateway

import (
	"net/netip"
	"runtime"
	"testing"

	"github.com/xgate/xgate/gateway/config"
	"golang.org/x/sys/unix"
)

// BenchmarkSocketBatch is the socket path's work on rounds of 256 events
// queued on a loopback socket: recvmmsg in batches of 64 and the worker's
// batch (decide each datagram, the batch's bookkeeping), without the
// sending (timer stopped).
// "sampled": receive → verdict sampling at probes.sample's default;
// "unsampled": off. ns/datagram is the figure to compare.
func BenchmarkSocketBatch(b *testing.B) {
	for _, c := range []struct {
		name  string
		every int
	}{{"sampled", config.DefaultProbeSample}, {"unsampled", 0}} {
		b.Run(c.name, func(b *testing.B) {
			s, tx, dst := latencyTestSocket(b)
			// Room for a round of datagrams: rounds of 4 batches keep the
			// stopped timer (which reads the memory statistics) out of the
			// figures.
			_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
			s.startLatency(c.every)
			w := bareWorker(b, nil)
			w.sock, w.batch = s, newBatch(64, 2048)
			payloads := itEvents(64)
			const round = 4 * 64
			var total uint64
			var busy busyMeter
			b.ReportAllocs()
			var datagrams int
			// The thread's CPU time on the timed part too: on a shared
			// host it leaves out the time the benchmark waited preempted.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var clk busyMeter
			var cpuNs uint64
			for b.Loop() {
				b.StopTimer()
				for i := range round {
					if err := unix.Sendto(tx, payloads[i%len(payloads)], 0, dst); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				c0 := clk.threadCPU()
				for got := 0; got < round; {
					n, err := s.recv(w.batch)
					if err != nil || n == 0 {
						b.Fatalf("recv %d, %v", n, err)
					}
					w.socketBatch(n, &total, &busy)
					got += n
				}
				cpuNs += clk.threadCPU() - c0
				datagrams += round
			}
			b.ReportMetric(float64(cpuNs)/float64(max(datagrams, 1)), "cpu-ns/datagram")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(datagrams, 1)), "ns/datagram")
		})
	}
}

// TestSocketBatchNoAllocs: a batch on the socket path, recvmmsg to the
// last verdict and its bookkeeping, allocates nothing (sampled or not).
func TestSocketBatchNoAllocs(t *testing.T) {
	s, tx, dst := latencyTestSocket(t)
	s.startLatency(1)
	w := bareWorker(t, nil)
	w.sock, w.batch = s, newBatch(8, 2048)
	payloads := itEvents(4)
	var total uint64
	var busy busyMeter
	src := netip.MustParseAddr("127.0.0.1")
	allocs := testing.AllocsPerRun(200, func() {
		for _, p := range payloads {
			if err := unix.Sendto(tx, p, 0, dst); err != nil {
				t.Fatal(err)
			}
		}
		for got := 0; got < len(payloads); {
			n, err := s.recv(w.batch)
			if err != nil || n == 0 {
				t.Fatalf("recv %d, %v", n, err)
			}
			w.socketBatch(n, &total, &busy)
			got += n
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch", allocs)
	}
	if w.batch.source(0).Addr() != src || total != 201*uint64(len(payloads)) {
		t.Errorf("source %v, total %d", w.batch.source(0), total)
	}
}
