//go:build linux

package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/baseline"
)

// The receiver of a bench (the gateway in any mode, or a yardstick) runs
// in a child process: the bench's binary started again with childEnv set,
// which this package's init turns into childMain. So the receiver's CPU
// time is its own process's, every thread of it (workers, helper
// goroutines, its Go runtime: GC, sysmon, timers) and nothing of the
// generator's, whose Go runtime, harness and sending thread stay in the
// parent. What neither process is charged is the receiving host's kernel
// path that runs in softirq on the sender's CPU (see Report.ReceiverCPUS).
//
// The parent talks to the child over two pipes (the child's fds 3 and 4):
// a request per line ("snap" or "stop"), a JSON reply per line. The child
// stops its receiver when asked, or when the parent goes away (its end of
// the request pipe closes).
const childEnv = "XGATE_BENCH_RECEIVER"

func init() {
	if spec, ok := os.LookupEnv(childEnv); ok {
		os.Exit(childMain(spec))
	}
}

// childSpec is what the child runs: o's mode and tuning in the host named
// by NS and Link.
type childSpec struct {
	Mode           string
	NS, Link       string
	RTPriority     int
	Spin           time.Duration
	NoProbes       bool
	NoRxTimestamps bool
	// CPUProfile: a pprof CPU profile of the receiver over each measured
	// window ("begin" to "end") into this file ("" for none).
	CPUProfile string
}

// usage is a receiver's tally and costs so far, as the child reports them.
type usage struct {
	Tally   tally
	Latency [gateway.LatencyBuckets]uint64
	// CPU is the receiver process's CPU time (user + system) so far.
	CPU time.Duration
	// WorkerAllocs counts allocations on the gateway's workers (Allocs
	// false: not counted, a yardstick); Mallocs and NumGC the process's.
	WorkerAllocs uint64
	Allocs       bool
	Mallocs      uint64
	NumGC        uint32
	RSS          uint64
	// Wait is the run-queue wait of the receiver's pinned threads.
	Wait time.Duration
	Err  string `json:",omitempty"`
}

// childMain runs a receiver for a parent bench and answers its requests
// until told to stop; the exit status is 0 when all went well.
func childMain(spec string) int {
	var cs childSpec
	req, rep := os.NewFile(3, "requests"), os.NewFile(4, "replies")
	enc := json.NewEncoder(rep)
	fail := func(err error) int {
		_ = enc.Encode(usage{Err: err.Error()})
		return 1
	}
	if err := json.Unmarshal([]byte(spec), &cs); err != nil {
		return fail(fmt.Errorf("bench receiver: spec: %w", err))
	}
	h, err := testenv.Existing(cs.NS, cs.Link)
	if err != nil {
		return fail(fmt.Errorf("bench receiver: %w", err))
	}
	defer h.Release()
	o := Options{Mode: cs.Mode, RTPriority: cs.RTPriority, Spin: cs.Spin, NoProbes: cs.NoProbes,
		NoRxTimestamps: cs.NoRxTimestamps}.withDefaults()
	t, stop, allocs, err := startTarget(h, o)
	if err != nil {
		return fail(err)
	}
	// snap is the tally alone ("snap": the harness polls it while it
	// waits), or with the costs ("begin" and "end" of a window; see
	// readCosts).
	stopProfile := func() error { return nil }
	defer func() { _ = stopProfile() }()
	snap := func(what string) usage {
		var u usage
		var err error
		switch what {
		case "begin":
			_ = stopProfile()
			if stopProfile, err = startCPUProfile(cs.CPUProfile); err != nil {
				stopProfile = func() error { return nil }
				u.Err = err.Error()
				return u
			}
		case "end":
			if err := stopProfile(); err != nil {
				u.Err = err.Error()
			}
			stopProfile = func() error { return nil }
		}
		if u.Tally, err = t.tally(); err != nil {
			u.Err = err.Error()
		}
		u.Latency = t.latency()
		if what != "snap" {
			u.readCosts(allocs, what == "begin")
		}
		return u
	}
	if err := enc.Encode(snap("snap")); err != nil {
		stop()
		return 1
	}
	sc := bufio.NewScanner(req)
serve:
	for sc.Scan() {
		var err error
		switch what := sc.Text(); what {
		case "snap", "begin", "end":
			err = enc.Encode(snap(what))
		case "stop":
			err := stop()
			if allocs != nil {
				allocs.stop()
			}
			u := usage{}
			if err != nil {
				u.Err = err.Error()
			}
			_ = enc.Encode(u)
			if err != nil {
				return 1
			}
			return 0
		default:
			err = enc.Encode(usage{Err: fmt.Sprintf("bench receiver: unknown request %q", what)})
		}
		if err != nil {
			break serve // the parent is gone
		}
	}
	// The parent went away without a stop: leave nothing behind.
	stop()
	return 1
}

// startTarget starts the receiver of o.Mode in h; stop ends it, allocs
// (the gateway's modes) counts the allocations on its workers.
func startTarget(h *testenv.Host, o Options) (t target, stop func() error, allocs *allocProfile, err error) {
	switch o.Mode {
	case ModeBaseline:
		t, stop, err = startBaseline(h, baseline.Listen)
	case ModeGJSON:
		t, stop, err = startBaseline(h, baseline.ListenGJSON)
	case ModeRawSock:
		t, stop, err = startRawSock(h)
	case ModeRawXSK:
		t, stop, err = startRawXSK(h)
	default:
		var g *gateway.Gateway
		if g, stop, err = startGateway(h, o); err == nil {
			t = gatewayTarget{g}
			// Allocations are counted on the workers' stacks, which
			// needs every allocation profiled (see allocProfile).
			allocs = profileWorkerAllocs()
		}
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("bench: %s: %w", o.Mode, err)
	}
	return t, stop, allocs, nil
}

// childTarget is a receiver running in a child process.
type childTarget struct {
	cmd  *exec.Cmd
	req  *os.File // requests, to the child's fd 3
	repF *os.File // replies, from the child's fd 4
	rep  *bufio.Reader
	mu   sync.Mutex // one request at a time
	last usage      // the last reply
	dead error      // set once the child stopped answering
}

// startChild starts the receiver of o.Mode in a child process in h.
func startChild(h *testenv.Host, o Options) (*childTarget, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: receiver process: %w", err)
	}
	spec, err := json.Marshal(childSpec{Mode: o.Mode, NS: h.NS, Link: h.Link, RTPriority: o.RTPriority, Spin: o.Spin,
		NoProbes: o.NoProbes, NoRxTimestamps: o.NoRxTimestamps, CPUProfile: profilePath(o.CPUProfile, o.Mode)})
	if err != nil {
		return nil, err
	}
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.ExtraFiles = []*os.File{reqR, repW}
	// The child's stdout is not ours to fill (a --json report goes there).
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// A process group of its own: a Ctrl-C at the terminal reaches the
	// bench alone, which then stops the receiver in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = startUnpinned(cmd)
	reqR.Close()
	repW.Close()
	if err != nil {
		reqW.Close()
		repR.Close()
		return nil, fmt.Errorf("bench: start receiver process: %w", err)
	}
	c := &childTarget{cmd: cmd, req: reqW, repF: repR, rep: bufio.NewReader(repR)}
	// The first reply says the receiver runs (or why not).
	if err := c.read(&c.last, childStartTimeout); err != nil {
		return nil, errors.Join(err, c.wait())
	}
	if c.last.Err != "" {
		return nil, errors.Join(errors.New(c.last.Err), c.wait())
	}
	return c, nil
}

// startUnpinned starts cmd from a thread with the process's CPU affinity:
// a child inherits its forking thread's, and the thread running this
// goroutine may be one the bench pinned to the sender's CPU.
func startUnpinned(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cur, want unix.CPUSet
	if unix.SchedGetaffinity(0, &cur) == nil && unix.SchedGetaffinity(os.Getpid(), &want) == nil && cur != want {
		if err := unix.SchedSetaffinity(0, &want); err == nil {
			// Restored before the thread runs anything else; should it
			// fail, the thread stays locked and exits with the goroutine.
			defer func() {
				if unix.SchedSetaffinity(0, &cur) == nil {
					return
				}
				runtime.LockOSThread()
			}()
		}
	}
	return cmd.Start()
}

// How long the child may take to start its receiver, and to answer a
// request (a "begin" or "end" runs a garbage collection); past that it is
// taken for hung, and killed when the bench closes.
const (
	childStartTimeout = time.Minute
	childReplyTimeout = 30 * time.Second
)

// read reads one reply, waiting at most timeout.
func (c *childTarget) read(u *usage, timeout time.Duration) error {
	_ = c.repF.SetReadDeadline(time.Now().Add(timeout))
	line, err := c.rep.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("bench: receiver process: %w", err)
	}
	if err := json.Unmarshal(line, u); err != nil {
		return fmt.Errorf("bench: receiver process: reply %q: %w", line, err)
	}
	return nil
}

// ask sends a request ("snap", "begin", "end") and reads the reply.
func (c *childTarget) ask(what string) (usage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead != nil {
		return usage{}, c.dead
	}
	if _, err := io.WriteString(c.req, what+"\n"); err != nil {
		c.dead = fmt.Errorf("bench: receiver process: %w", err)
		return usage{}, c.dead
	}
	var u usage
	if err := c.read(&u, childReplyTimeout); err != nil {
		c.dead = err
		return u, err
	}
	c.last = u
	if u.Err != "" {
		return u, errors.New(u.Err)
	}
	return u, nil
}

func (c *childTarget) tally() (tally, error) {
	u, err := c.ask("snap")
	return u.Tally, err
}

// usage is the receiver's tally and costs at the beginning or the end of
// a window.
func (c *childTarget) usage(begin bool) (usage, error) {
	if begin {
		return c.ask("begin")
	}
	return c.ask("end")
}

// latency is that of the last reply (phase reads it from usage).
func (c *childTarget) latency() [gateway.LatencyBuckets]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last.Latency
}

// stop stops the receiver and waits for the child to exit.
func (c *childTarget) stop() error {
	c.mu.Lock()
	var err error
	if c.dead == nil {
		if _, werr := io.WriteString(c.req, "stop\n"); werr == nil {
			var u usage
			if err = c.read(&u, childReplyTimeout); err == nil && u.Err != "" {
				err = errors.New(u.Err)
			}
		}
	}
	c.dead = errors.New("bench: receiver process stopped")
	c.mu.Unlock()
	return errors.Join(err, c.wait())
}

// wait closes the pipes (a child still running stops on it) and waits
// for the child, 10 s at most before it is killed.
func (c *childTarget) wait() error {
	c.req.Close()
	defer c.repF.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("bench: receiver process: %w", err)
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
		return errors.New("bench: receiver process did not stop within 10 s: killed")
	}
}
