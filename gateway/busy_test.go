package gateway

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/metrics"
)

// TestWorkerBusyTime: after traffic every path's workers report busy time
// that is > 0 in sum, never more than the wall time they ran, and the same
// figures on /metrics.
func TestWorkerBusyTime(t *testing.T) {
	for _, mode := range []string{string(config.ModeAFXDP), string(config.ModeSocket), string(config.ModePlain)} {
		t.Run(mode, func(t *testing.T) {
			t0 := time.Now()
			pair, g, stop := runIT(t, 2, mode, nil)
			sent := sendEventsAndOther(t, pair, 300, 0)
			var s metrics.Stats
			deadline := time.Now().Add(5 * time.Second)
			for {
				var err error
				if s, err = g.Stats(); err != nil {
					t.Fatal(err)
				}
				if s.Datagrams >= sent || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			wall := time.Since(t0)
			if s.Datagrams < sent || s.Engine.Events == 0 {
				t.Fatalf("received %d of %d, decided %d", s.Datagrams, sent, s.Engine.Events)
			}
			if len(s.WorkerBusy) != len(g.workers) {
				t.Fatalf("%d busy times for %d workers", len(s.WorkerBusy), len(g.workers))
			}
			var sum time.Duration
			for i, b := range s.WorkerBusy {
				if b < 0 || b > wall {
					t.Fatalf("worker %d busy %v over a wall time of %v", i, b, wall)
				}
				// The CPU measure (0 before its first sample) is at most
				// the wall time on the same batches.
				if c := s.WorkerBusyCPU[i]; c < 0 || c > b {
					t.Fatalf("worker %d busy CPU %v, wall %v", i, c, b)
				}
				sum += b
			}
			t.Logf("%s: %d events, busy %v (%v), %.0f ns per event", mode, s.Engine.Events, s.WorkerBusy, wall, float64(sum)/float64(s.Engine.Events))
			if sum <= 0 {
				t.Fatal("no busy time after traffic")
			}
			var scraped float64
			fams := scrape(t, g)
			for i := range s.WorkerBusy {
				scraped += metricValue(t, fams, "xgate_worker_busy_seconds_total", "mode="+mode, "queue="+strconv.Itoa(i))
			}
			// Counters only grow: the scrape (later) reads at least what
			// Stats did, up to float rounding.
			if scraped < sum.Seconds()-1e-9 || scraped > time.Since(t0).Seconds()*float64(len(s.WorkerBusy)) {
				t.Fatalf("/metrics busy %.6f s, Stats %.6f s", scraped, sum.Seconds())
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBusyMeterCPU: the CPU measure of busy time follows the thread's CPU
// clock, not the wall: batches that compute come out at about their wall
// time, batches that wait (as a preempted thread does) at a fraction of
// it; neither above the wall, and it only grows. The first batch is
// sampled.
func TestBusyMeterCPU(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	batch := func(m *busyMeter, work func()) (wall, cpu uint64) {
		m.begin()
		t0 := time.Now()
		work()
		return m.end(uint64(time.Since(t0)), 8)
	}
	spin := func() {
		for t0 := time.Now(); time.Since(t0) < 200*time.Microsecond; {
		}
	}
	var m busyMeter
	if wall, cpu := batch(&m, spin); cpu == 0 || cpu > wall {
		t.Errorf("first batch (sampled): CPU %d ns, wall %d ns", cpu, wall)
	}
	var wall, cpu, lastCPU uint64
	for range 4 * busyCPUEvery {
		wall, cpu = batch(&m, spin)
		if cpu < lastCPU {
			t.Fatalf("CPU went back from %d to %d ns", lastCPU, cpu)
		}
		lastCPU = cpu
	}
	t.Logf("computing: wall %v, CPU %v", time.Duration(wall), time.Duration(cpu))
	if cpu == 0 || cpu > wall || cpu < wall/4 { // a loaded host preempts some
		t.Errorf("computing batches: CPU %d ns of %d ns wall", cpu, wall)
	}
	var w busyMeter
	for range 8 * busyCPUEvery {
		wall, cpu = batch(&w, func() { time.Sleep(time.Millisecond) })
	}
	t.Logf("waiting: wall %v, CPU %v", time.Duration(wall), time.Duration(cpu))
	if cpu > wall/4 {
		t.Errorf("waiting batches: CPU %d ns of %d ns wall", cpu, wall)
	}
}

// TestBusyMeterPreempted: batches of different sizes, every fifth of them
// also waiting 1 ms (as a thread preempted on a busy CPU waits): the CPU
// measure comes out near the thread's CPU clock over the whole loop, not
// near the wall time, however the waits fall on the sampled batches.
// (The share of the wall time that the meter used before swung with the
// few long waits that happened to be sampled.)
func TestBusyMeterPreempted(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	spin := func(d time.Duration) {
		for t0 := time.Now(); time.Since(t0) < d; {
		}
	}
	var m, clk busyMeter
	c0 := clk.threadCPU()
	var wall, cpu uint64
	for i := range 40 * busyCPUEvery {
		n := 1 + i%7 // datagrams in the batch, each 20 µs of work
		m.begin()
		t0 := time.Now()
		spin(time.Duration(n) * 20 * time.Microsecond)
		if i%5 == 0 {
			time.Sleep(time.Millisecond)
		}
		wall, cpu = m.end(uint64(time.Since(t0)), n)
	}
	thread := clk.threadCPU() - c0
	t.Logf("wall %v, CPU %v, thread CPU %v", time.Duration(wall), time.Duration(cpu), time.Duration(thread))
	// The thread's clock also counts the loop around the batches and the
	// meter's reads (well under a tenth here); a loaded host preempts
	// some of the spins, which both clocks leave out; the sleeps' own CPU
	// time varies. The wall time is several times either.
	if float64(cpu) < 0.6*float64(thread) || float64(cpu) > 1.4*float64(thread) {
		t.Errorf("busy CPU %v, the thread's CPU clock %v (wall %v)", time.Duration(cpu), time.Duration(thread), time.Duration(wall))
	}
}

// TestBusyMeterNoAllocs: the meter allocates nothing, sampled batch or not.
func TestBusyMeterNoAllocs(t *testing.T) {
	var m busyMeter
	if n := testing.AllocsPerRun(10*busyCPUEvery, func() { m.begin(); m.end(100, 4) }); n != 0 {
		t.Errorf("%v allocations per batch", n)
	}
}

// BenchmarkBusyMeter is the meter's cost per batch (a sampled batch in
// busyCPUEvery reads the thread's CPU clock twice).
func BenchmarkBusyMeter(b *testing.B) {
	b.ReportAllocs()
	var m busyMeter
	for b.Loop() {
		m.begin()
		m.end(100, 4)
	}
}
