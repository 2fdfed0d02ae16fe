package host

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Real-time scheduling of the worker threads (workers.realtime_priority).
//
// A pinned worker shares its CPU with whatever else the scheduler puts
// there: the gateway's own Go threads (GC, timers, the HTTP server), kernel
// threads and agents. Under SCHED_OTHER each of those preempts the worker
// for tens of µs to milliseconds, and an event that arrives meanwhile waits
// in the RX ring: that is the p99 at moderate load. Under SCHED_FIFO the
// worker preempts every SCHED_OTHER thread on its CPU and is preempted only
// by higher real-time priorities and by interrupts/softirqs.
//
// The trade-off: the worker spins on an empty ring for afxdp.spin before
// it sleeps in poll(2), and at high load it never sleeps at all. A FIFO thread
// that never sleeps starves every SCHED_OTHER thread of its CPU — including
// ksoftirqd, which is SCHED_OTHER: softirq work deferred to ksoftirqd on
// that CPU (NAPI under sustained load) waits until the worker sleeps — save
// for the kernel's RT throttling, which by default gives real-time threads
// at most sched_rt_runtime_us (950 ms) of every sched_rt_period_us (1 s) per
// CPU (since Linux 6.12 the "fair server" does the same job: it reserves
// SCHED_OTHER threads 50 ms a second on a CPU a real-time thread hogs).
// That reserve is itself a stall of up to 50 ms for a worker that never
// sleeps. With throttling off (sched_rt_runtime_us = -1) nothing else may
// run on a saturated worker's CPU; New warns about that.
//
// Softirqs are not affected while they run in interrupt context (they
// preempt any thread); only ksoftirqd is. In the bench layout (xgate
// bench: generator on CPU 1, worker on CPU 0) veth's NAPI runs on the
// sending CPU (/proc/softirqs NET_RX grows on the sender's CPU, hardly on
// the worker's), so the worker's FIFO does not delay its own
// receive path there; with a NIC whose queue IRQ is on the worker's CPU
// (the production layout) NAPI under sustained load falls back to
// ksoftirqd, which the spinning worker then delays. So it is opt-in,
// for worker CPUs that are otherwise dedicated (isolcpus, IRQs elsewhere),
// and measured before it is relied on (BENCHMARKS.md).

// MaxRealtimePriority is the highest SCHED_FIFO priority.
const MaxRealtimePriority = 99

// SetRealtime makes the calling thread SCHED_FIFO at prio (1..99); an
// EPERM error says which privilege is missing. The caller should be
// locked to its thread (runtime.LockOSThread) and keep it locked.
func SetRealtime(prio int) error {
	attr := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("SCHED_FIFO priority %d: %w (needs CAP_SYS_NICE, or RLIMIT_RTPRIO >= %d: ulimit -r, LimitRTPRIO= in a systemd unit; "+
				"inside a cgroup with RT group scheduling the cgroup also needs cpu.rt_runtime_us > 0)", prio, err, prio)
		}
		return fmt.Errorf("SCHED_FIFO priority %d: %w", prio, err)
	}
	return nil
}

// CheckRealtime tries SCHED_FIFO at prio on a thread of its own, so that a
// missing privilege is an error of New rather than a worker that fails in
// Run. The thread goes back to SCHED_OTHER at once (it may outlive the
// call by a moment), and is not handed back to the Go scheduler: the
// goroutine exits locked to it, and the runtime ends the thread.
func CheckRealtime(prio int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		err := SetRealtime(prio)
		if err == nil {
			normal := unix.SchedAttr{Policy: unix.SCHED_NORMAL}
			if rerr := unix.SchedSetAttr(0, &normal, 0); rerr != nil {
				err = fmt.Errorf("back to SCHED_OTHER: %w", rerr)
			}
		}
		errc <- err
	}()
	return <-errc
}

// RTRuntimePath is the kernel's RT throttling budget per period, in µs;
// -1 turns throttling off.
const RTRuntimePath = "/proc/sys/kernel/sched_rt_runtime_us"

// RTThrottlingOff reports whether the kernel lets real-time threads take a
// whole CPU (sched_rt_runtime_us = -1). An unreadable file reads as on.
func RTThrottlingOff() bool {
	b, err := os.ReadFile(RTRuntimePath)
	return err == nil && rtThrottlingOff(b)
}

// rtThrottlingOff reads the text of sched_rt_runtime_us: "-1" is off.
func rtThrottlingOff(b []byte) bool { return strings.TrimSpace(string(b)) == "-1" }
