package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/host"

	"golang.org/x/sys/unix"
)

// threadSched reads the policy and real-time priority of thread tid of
// this process from /proc (fields 41 and 40 of stat).
func threadSched(tid int) (policy, prio int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command may hold spaces and ')'
	if i < 0 {
		return 0, 0, fmt.Errorf("stat of %d: no command", tid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3
	if len(f) < 39 {
		return 0, 0, fmt.Errorf("stat of %d: %d fields", tid, len(f)+2)
	}
	if prio, err = strconv.Atoi(f[40-3]); err != nil {
		return 0, 0, err
	}
	policy, err = strconv.Atoi(f[41-3])
	return policy, prio, err
}

// fifoThreads counts this process's threads that run SCHED_FIFO at prio.
func fifoThreads(t *testing.T, prio int) int {
	t.Helper()
	n := 0
	for _, tid := range host.ThreadIDs() {
		pol, p, err := threadSched(tid)
		if err != nil {
			continue // the thread ended meanwhile
		}
		if pol == unix.SCHED_FIFO && p == prio {
			n++
		}
	}
	return n
}

func skipWithoutRealtime(t *testing.T, prio int) {
	t.Helper()
	if err := host.CheckRealtime(prio); err != nil {
		t.Skipf("no real-time scheduling here: %v", err)
	}
}

// TestWorkerPinRealtime: pin makes the worker's own thread SCHED_FIFO at
// rtPrio (read back with sched_getattr and from /proc), and leaves it
// SCHED_OTHER with rtPrio 0.
func TestWorkerPinRealtime(t *testing.T) {
	const prio = 7
	skipWithoutRealtime(t, prio)
	for _, tc := range []struct {
		rtPrio, cpu  int
		policy, prio int
	}{
		{rtPrio: prio, cpu: 0, policy: unix.SCHED_FIFO, prio: prio},
		{rtPrio: prio, cpu: -1, policy: unix.SCHED_FIFO, prio: prio},
		{rtPrio: 0, cpu: 0, policy: unix.SCHED_NORMAL, prio: 0},
	} {
		type result struct {
			attr         *unix.SchedAttr
			policy, prio int
			cpus         unix.CPUSet
			err          error
		}
		done := make(chan result, 1)
		w := &worker{id: 3, cpu: tc.cpu, rtPrio: tc.rtPrio}
		go func() {
			// Exits locked (as finish does for a tainted worker): the
			// runtime ends the thread instead of reusing it.
			var r result
			if r.err = w.pin(); r.err == nil {
				if r.attr, r.err = unix.SchedGetAttr(0, 0); r.err == nil {
					r.policy, r.prio, r.err = threadSched(unix.Gettid())
				}
				if r.err == nil {
					r.err = unix.SchedGetaffinity(0, &r.cpus)
				}
			}
			done <- r
		}()
		r := <-done
		if r.err != nil {
			t.Fatalf("rtPrio %d cpu %d: %v", tc.rtPrio, tc.cpu, r.err)
		}
		if int(r.attr.Policy) != tc.policy || int(r.attr.Priority) != tc.prio {
			t.Errorf("rtPrio %d cpu %d: sched_getattr policy %d priority %d, want %d %d", tc.rtPrio, tc.cpu, r.attr.Policy, r.attr.Priority, tc.policy, tc.prio)
		}
		if r.policy != tc.policy || r.prio != tc.prio {
			t.Errorf("rtPrio %d cpu %d: /proc stat policy %d rt_priority %d, want %d %d", tc.rtPrio, tc.cpu, r.policy, r.prio, tc.policy, tc.prio)
		}
		if tc.cpu >= 0 && (r.cpus.Count() != 1 || !r.cpus.IsSet(tc.cpu)) {
			t.Errorf("rtPrio %d cpu %d: affinity has %d CPUs, want only %d", tc.rtPrio, tc.cpu, r.cpus.Count(), tc.cpu)
		}
		if want := tc.cpu >= 0 || tc.rtPrio > 0; w.tainted != want {
			t.Errorf("rtPrio %d cpu %d: tainted %v, want %v", tc.rtPrio, tc.cpu, w.tainted, want)
		}
	}
}

// TestGatewayRealtimeWorkers: with workers.realtime_priority set, every
// worker thread of a running gateway is SCHED_FIFO at that priority, and
// those threads end with the gateway (none is handed back to the Go
// scheduler to run other goroutines).
func TestGatewayRealtimeWorkers(t *testing.T) {
	const prio = 11
	skipWithoutRealtime(t, prio)
	if n := fifoThreads(t, prio); n != 0 {
		t.Fatalf("%d SCHED_FIFO threads at priority %d before the gateway", n, prio)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	cfg, err := ParseConfig("rt.yaml", fmt.Appendf(nil, "listen: {ports: [%d], address: 127.0.0.1}\nworkers: {realtime_priority: %d}\n", port, prio))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pin.Path = ""
	cfg.HTTP.Listen = ""
	cfg.Probes.Enabled = false
	g, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RecvTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- g.Run(ctx) }()
	defer func() {
		cancel()
		<-runDone
	}()
	want := len(g.workers)
	if want == 0 {
		t.Fatal("no workers")
	}
	got := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = fifoThreads(t, prio); got == want {
			break
		}
	}
	if got != want {
		t.Fatalf("%d threads SCHED_FIFO at priority %d, want %d (one per worker)", got, prio, want)
	}
	cancel()
	if err := <-runDone; err != nil && err != context.Canceled {
		t.Fatalf("run: %v", err)
	}
	runDone <- nil // for the deferred receive
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = fifoThreads(t, prio); got == 0 {
			break
		}
	}
	if got != 0 {
		t.Errorf("%d SCHED_FIFO threads outlive the gateway", got)
	}
}

func TestRealtimePriorityParses(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte("listen: {ports: [9000]}\nworkers: {realtime_priority: 50}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers.RealtimePriority != 50 {
		t.Errorf("realtime_priority %d, want 50", c.Workers.RealtimePriority)
	}
	if DefaultConfig().Workers.RealtimePriority != 0 {
		t.Error("real-time scheduling is on by default")
	}
}
