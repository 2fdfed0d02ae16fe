package gateway

import (
	"golang.org/x/sys/unix"
)

// busyCPUEvery is how often a worker reads its thread's CPU clock: around
// every busyCPUEvery-th non-empty batch. The read is a system call
// (CLOCK_THREAD_CPUTIME_ID has no vDSO path), on a virtual machine more
// than half a µs: read around every batch it would cost as much as a
// decided event or two; read around one batch in 64 it costs a few per
// cent of one, and the samples still come by the hundred a second at any
// load that keeps a worker busy.
const busyCPUEvery = 64

// busyDecay is the weight of a new sample in the averages of CPU time and
// datagrams per sampled batch: the estimate follows the last hundred or
// so samples, so a change of load (and so of the batch size) shows within
// a second while one odd sample barely moves it.
const busyDecay = 1.0 / 128

// busyMeter is a worker's busy time in two measures. wall: the monotonic
// time from a batch in hand to done with it, summed over every batch (the
// loop reads that clock anyway); it includes the time the thread waited
// preempted on a busy CPU. cpu: the thread's CPU time on its batches,
// estimated from a sample: the thread's CPU clock is read before and after
// every busyCPUEvery-th batch (the first one included), and each batch
// adds its datagrams × the CPU time per datagram of the recent samples
// (without a sample, if the clock cannot be read: its wall time). It is what the batches cost, whatever else runs on the CPU,
// so events per busy CPU-second is the worker's capacity even when the
// generator, not the worker, limits the rate.
//
// Why per datagram and not a CPU share of the wall time: a preemption
// stretches one batch's wall time by milliseconds, a hundred batches'
// worth, so a share taken from one batch in 64 swings with the few
// preemptions that happen to fall on sampled batches. The CPU clock does
// not run while the thread waits, so a sampled batch's CPU time is what
// that batch cost whether or not it was preempted; the samples being every
// busyCPUEvery-th batch, their datagrams are a fair share of all, and so
// is their CPU time per datagram (per-batch costs included).
//
// A sample is also capped at the batch's wall time: the interval between
// the two CPU clock reads holds the tail of the first read and the head
// of the second (system call entry and exit), which the wall interval
// (read inside it) does not, and which costs more in the loop than
// threadCPUCost, the least of back-to-back pairs. Not capped, every
// sample would carry a few hundred ns of the meter's own cost.
//
// The worker's goroutine only (it reads its own thread's clock); the
// results go out through the worker's atomics.
type busyMeter struct {
	wallNs uint64 // every batch
	cpuNs  uint64 // every batch, estimated; never above wallNs
	// avgCPU and avgN: moving averages (busyDecay) of a sampled batch's
	// CPU ns and datagrams; avgN is 0 until a sample with datagrams.
	avgCPU, avgN float64
	samples      uint32
	perN         float64 // avgCPU / avgN, set with them
	batches      uint32
	sampling     bool
	cpu0         uint64
	ts           unix.Timespec // a field: ClockGettime's argument never escapes per call
}

// begin is called with a non-empty batch in hand, before the loop reads
// the wall clock for it.
func (m *busyMeter) begin() {
	if m.batches%busyCPUEvery == 0 { // the first batch too
		m.cpu0 = m.threadCPU()
		m.sampling = m.cpu0 != 0
	}
	m.batches++
}

// end is called with the batch's wall time (its end read after begin's
// start) and its datagrams (frames), and returns the totals so far: wall
// ns and estimated CPU ns. Both only grow, and the CPU total never passes
// the wall total.
func (m *busyMeter) end(wallNs uint64, n int) (wall, cpu uint64) {
	m.wallNs += wallNs
	if m.sampling {
		m.sampling = false
		if c := m.threadCPU(); c > m.cpu0 {
			s := min(c-m.cpu0-min(c-m.cpu0, threadCPUCost), wallNs)
			// The plain mean of the samples until there are 1/busyDecay
			// of them, then the moving one: no sample weighs more than
			// the others of its time.
			m.samples++
			k := max(1/float64(m.samples), busyDecay)
			m.avgCPU += (float64(s) - m.avgCPU) * k
			m.avgN += (float64(n) - m.avgN) * k
			if m.avgN > 0 {
				m.perN = m.avgCPU / m.avgN
			}
		}
	}
	add := wallNs
	if m.avgN > 0 {
		add = uint64(float64(n) * m.perN)
	}
	m.cpuNs = min(m.cpuNs+add, m.wallNs)
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
