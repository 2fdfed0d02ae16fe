package gateway

import (
	"golang.org/x/sys/unix"
)

// busyCPUEvery is how often a worker reads its thread's CPU clock: around
// every busyCPUEvery-th non-empty batch. The read is a system call
// (CLOCK_THREAD_CPUTIME_ID has no vDSO path), on a virtual machine about a
// µs: read around every batch it would cost a full batch of 64 datagrams
// several per cent; read around one batch in 16 it costs a fraction of one.
const busyCPUEvery = 16

// busyMeter is a worker's busy time in two measures. wall: the monotonic
// time from a batch in hand to done with it, summed over every batch (the
// loop reads that clock anyway); it includes the time the thread waited
// preempted on a busy CPU. cpu: the thread's CPU time on its batches,
// estimated per batch as its wall time × the CPU share of wall measured so
// far on every busyCPUEvery-th batch (thread CPU clock read before and
// after it). It
// is what the batches cost, whatever else runs on the CPU, so events per
// busy CPU-second is the worker's capacity even when the generator, not
// the worker, limits the rate.
//
// The worker's goroutine only (it reads its own thread's clock); the
// results go out through the worker's atomics.
type busyMeter struct {
	wallNs         uint64 // every batch
	cpuNs          uint64 // every batch, estimated
	sampWall, samp uint64 // sampled batches: wall ns and CPU ns
	batches        uint32
	sampling       bool
	cpu0           uint64
	ts             unix.Timespec // a field: ClockGettime's argument never escapes per call
}

// begin is called with a non-empty batch in hand, before the loop reads
// the wall clock for it.
func (m *busyMeter) begin() {
	m.batches++
	if m.batches%busyCPUEvery == 0 {
		m.sampling = true
		m.cpu0 = m.threadCPU()
	}
}

// end is called with the batch's wall time (its end read after begin's
// start) and returns the totals so far: wall ns and estimated CPU ns.
// Both only grow: each batch adds its wall time × the CPU share of the
// samples so far (1 until the first sample), never more than its wall.
func (m *busyMeter) end(wallNs uint64) (wall, cpu uint64) {
	m.wallNs += wallNs
	if m.sampling {
		m.sampling = false
		if c := m.threadCPU(); c > m.cpu0 {
			// The two reads' own cost inside the interval is about one
			// read (threadCPUCost); no sample goes below 0.
			m.samp += (c - m.cpu0) - min(c-m.cpu0, threadCPUCost)
			m.sampWall += wallNs
		}
	}
	share := 1.0
	if m.sampWall > 0 {
		share = min(1, float64(m.samp)/float64(m.sampWall))
	}
	m.cpuNs += uint64(float64(wallNs) * share)
	return m.wallNs, m.cpuNs
}

// threadCPU reads the calling thread's CPU clock, ns; 0 if it cannot.
func (m *busyMeter) threadCPU() uint64 {
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &m.ts) != nil {
		return 0
	}
	return uint64(m.ts.Nano())
}

// threadCPUCost is the thread CPU time one clock read adds between two
// reads, taken once: the least of a few back-to-back pairs.
var threadCPUCost = func() uint64 {
	var m busyMeter
	least := ^uint64(0)
	for range 16 {
		a := m.threadCPU()
		b := m.threadCPU()
		if b >= a {
			least = min(least, b-a)
		}
	}
	if least == ^uint64(0) {
		return 0
	}
	return least
}()
