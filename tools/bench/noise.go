//go:build linux

package bench

import (
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// noise is what else the machine did during a window, to read a latency
// tail against: CPU time of other processes, time the hypervisor stole
// from the virtual CPUs, and how long the gateway's workers waited on a
// run queue while runnable (another thread had their CPU).
type noise struct {
	busy, steal time.Duration // all CPUs, from /proc/stat
	self        time.Duration // this process and the receiver's (getrusage)
	wait        time.Duration // run_delay summed over the worker threads
}

// userHZ is the unit of /proc/stat (USER_HZ, 100 on Linux).
const userHZ = 100

// readNoise takes a reading with the receiver's usage u (its CPU time and
// workers' wait); parts it cannot read stay zero.
func (b *runner) readNoise(u usage) noise {
	var n noise
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		tick := func(i int) time.Duration {
			if i >= len(f) {
				return 0
			}
			v, _ := strconv.ParseUint(f[i], 10, 64)
			return time.Duration(v) * time.Second / userHZ
		}
		if len(f) > 0 && f[0] == "cpu" {
			// user + nice + system + irq + softirq. The softirq work
			// done on our sending thread (the gateway host's receive
			// path) is in our own CPU time as well: without
			// IRQ_TIME_ACCOUNTING a task's runtime includes the
			// softirqs it ran, and /proc/stat charges their ticks to
			// softirq. (Tick-sampled: a rough figure over short windows.)
			n.busy = tick(1) + tick(2) + tick(3) + tick(6) + tick(7)
			n.steal = tick(8)
		}
	}
	n.self = u.CPU
	if b.child != nil {
		n.self += processCPU()
	}
	n.wait = u.Wait
	return n
}

// workerRunDelay sums the run-queue wait (schedstat run_delay) of this
// process's threads that are pinned to one CPU other than the sender's:
// the gateway's workers (and the raw modes' readers).
func workerRunDelay() time.Duration {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var set unix.CPUSet
		if unix.SchedGetaffinity(tid, &set) != nil || set.Count() != 1 || set.IsSet(senderCPU) {
			continue
		}
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			ns, _ := strconv.ParseUint(f[1], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

// noiseOver fills r's noise fields from two readings over elapsed.
func (r *Report) noiseOver(a, b noise, elapsed time.Duration) {
	if elapsed <= 0 {
		return
	}
	s := elapsed.Seconds()
	others := (b.busy - a.busy) - (b.self - a.self)
	r.OtherCPU = max(0, others.Seconds()) / s
	r.StealCPU = (b.steal - a.steal).Seconds() / s
	r.WorkerWait = (b.wait - a.wait).Seconds() / s
}
