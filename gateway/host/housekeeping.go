package host

import (
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Housekeeping keeps the process's other threads — the Go runtime's, and
// with them HTTP, stats, sinks, feedback and GC work — off the workers'
// CPUs when workers.cpus leaves CPUs free: they are confined to the CPUs
// the process may use that are not workers' ("Housekeeping CPUs").
//
// Why: a worker shares its CPU with whatever else the scheduler puts
// there. For a SCHED_OTHER worker those threads preempt it; a SCHED_FIFO
// worker preempts them, yet still waits behind them now and then, with
// stalls of tens of ms, unless they are moved off its CPU (likely Linux
// 6.12+'s deadline "fair server", which reserves runnable SCHED_OTHER
// threads a share of a CPU a real-time thread holds). The run-queue waits
// with and without: BENCHMARKS.md, "Why the defaults".
//
// Which threads: every thread of the process but the workers whose
// affinity is the process's whole set (so a thread someone else pinned —
// the bench's sender — is left alone). The Go runtime makes new threads
// from existing ones or from its template thread, so they inherit the
// Housekeeping set once those are moved; a scan every second catches the
// rest. Stop gives every thread with exactly the Housekeeping set the
// whole set back (a thread something else pinned to exactly those CPUs
// included). The whole set is read once, from the process's main thread,
// at New: run one gateway with workers.cpus per process.
type Housekeeping struct {
	all  []int // the process's CPUs
	CPUs []int // the housekeeping ones (non-empty): where the other threads run

	mu      sync.Mutex
	workers map[int]bool // worker thread IDs: never touched
}

// NewHousekeeping returns nil when there is nothing to do: no workers.cpus,
// or no CPU of the process left over.
func NewHousekeeping(workerCPUs []int) (*Housekeeping, error) {
	if len(workerCPUs) == 0 {
		return nil, nil
	}
	all, err := ProcessCPUs()
	if err != nil {
		return nil, err
	}
	h := &Housekeeping{workers: map[int]bool{}, all: all}
	for _, c := range all {
		if !slices.Contains(workerCPUs, c) {
			h.CPUs = append(h.CPUs, c)
		}
	}
	if len(h.CPUs) == 0 {
		return nil, nil
	}
	return h, nil
}

// worker records the calling thread as a worker's (after it pinned itself).
func (h *Housekeeping) Worker() {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.workers[unix.Gettid()] = true
	h.mu.Unlock()
}

// run confines the other threads now and every second until stop closes,
// then restores them.
func (h *Housekeeping) Run(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		h.confine()
		select {
		case <-stop:
			h.restore()
			return
		case <-t.C:
		}
	}
}

// confine moves every thread whose affinity is the whole set, but the
// workers', to the Housekeeping CPUs. It returns how many it moved.
func (h *Housekeeping) confine() int {
	all, hk := CPUSet(h.all), CPUSet(h.CPUs)
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, tid := range ThreadIDs() {
		if h.workers[tid] {
			continue
		}
		var cur unix.CPUSet
		if unix.SchedGetaffinity(tid, &cur) != nil || cur != all {
			continue // ended, or pinned by someone
		}
		if unix.SchedSetaffinity(tid, &hk) == nil {
			n++
		}
	}
	return n
}

// restore gives every thread that has exactly the Housekeeping set (the
// ones confine moved, and the ones the runtime made from them since) the
// whole set back. Only threads of this process are touched: a thread ID
// from an earlier scan may belong to another process by now.
func (h *Housekeeping) restore() {
	all, hk := CPUSet(h.all), CPUSet(h.CPUs)
	h.mu.Lock()
	defer h.mu.Unlock()
	for range 3 { // threads made while we restore inherit the old set
		n := 0
		for _, tid := range ThreadIDs() {
			var cur unix.CPUSet
			if h.workers[tid] || unix.SchedGetaffinity(tid, &cur) != nil || cur != hk {
				continue
			}
			if unix.SchedSetaffinity(tid, &all) == nil {
				n++
			}
		}
		if n == 0 {
			break
		}
	}
}

func CPUSet(cpus []int) (s unix.CPUSet) {
	for _, c := range cpus {
		s.Set(c)
	}
	return s
}

// ThreadIDs lists the threads of this process.
func ThreadIDs() []int {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return threadIDs(names)
}

// maxTID bounds thread IDs (Linux: PID_MAX_LIMIT, 4M).
const maxTID = 1 << 22

// threadIDs reads the entries of /proc/<pid>/task as thread IDs: decimal,
// 1..maxTID-1; anything else is skipped. Never 0, which the scheduler
// calls take as the calling thread.
func threadIDs(names []string) []int {
	ids := make([]int, 0, len(names))
	for _, n := range names {
		if id, ok := parseDecimal(n, maxTID); ok && id > 0 {
			ids = append(ids, id)
		}
	}
	return ids
}
