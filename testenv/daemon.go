package testenv

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Daemon is an `xgate run` (or any long-running program) a test started,
// typically through `ip netns exec` into a test host: its stderr lines are
// kept for Logged and logged on failure, and it is killed by PID when the
// test ends if it still runs. Only the test's own process is signalled.
type Daemon struct {
	Pid int

	t         testing.TB
	receiving chan struct{} // closed when a log line says msg=receiving
	exited    chan struct{} // closed when cmd.Wait returned
	waitErr   error         // cmd.Wait's result, set before exited is closed

	mu     sync.Mutex
	log    []string
	dumped int // lines already written to the test log
}

// StartDaemon starts argv with env added to this process's environment
// and stdin (nil: none). Each program in argv that wraps the next (ip
// netns exec, setpriv) must exec it, so that Pid is the daemon's.
func StartDaemon(t testing.TB, env []string, stdin io.Reader, argv ...string) *Daemon {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	d := &Daemon{Pid: cmd.Process.Pid, t: t, receiving: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.log = append(d.log, line)
			d.mu.Unlock()
			if !seen && (strings.Contains(line, "msg=receiving") || strings.Contains(line, `"msg":"receiving"`)) {
				seen = true
				close(d.receiving)
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // drain, so Wait may close the pipe
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = syscall.Kill(d.Pid, syscall.SIGKILL)
			select {
			case <-d.exited:
			case <-time.After(10 * time.Second):
				t.Errorf("pid %d did not exit within 10s of SIGKILL", d.Pid)
			}
		}
		if t.Failed() {
			d.DumpLog()
		}
	})
	return d
}

// DumpLog writes the log lines not written yet to the test log.
func (d *Daemon) DumpLog() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.log[d.dumped:] {
		d.t.Logf("xgate[%d]: %s", d.Pid, l)
	}
	d.dumped = len(d.log)
}

// Log returns a copy of the log lines so far.
func (d *Daemon) Log() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.log)
}

// Logged reports whether a log line so far contains s.
func (d *Daemon) Logged(s string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.ContainsFunc(d.log, func(l string) bool { return strings.Contains(l, s) })
}

// WaitReceiving waits until the daemon logs "receiving" (its setup done).
func (d *Daemon) WaitReceiving(timeout time.Duration) {
	d.t.Helper()
	select {
	case <-d.receiving:
	case <-d.exited:
		d.DumpLog()
		d.t.Fatalf("xgate exited before receiving: %v", d.waitErr)
	case <-time.After(timeout):
		d.DumpLog()
		d.t.Fatalf("xgate did not log \"receiving\" within %v", timeout)
	}
}

// WaitLogged waits until a log line contains s.
func (d *Daemon) WaitLogged(s string, timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for !d.Logged(s) {
		if time.Now().After(deadline) {
			d.DumpLog()
			d.t.Fatalf("xgate did not log %q within %v", s, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitExit waits for the daemon to exit and returns its exit code.
func (d *Daemon) WaitExit(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.exited:
	case <-time.After(timeout):
		d.DumpLog()
		d.t.Fatalf("xgate pid %d did not exit within %v", d.Pid, timeout)
	}
	var ee *exec.ExitError
	if errors.As(d.waitErr, &ee) {
		return ee.ExitCode()
	}
	if d.waitErr != nil {
		d.t.Fatalf("xgate: %v", d.waitErr)
	}
	return 0
}

// Signal sends sig to the daemon and waits for it to exit; it returns how
// long that took and cmd.Wait's error.
func (d *Daemon) Signal(sig syscall.Signal, timeout time.Duration) (time.Duration, error) {
	d.t.Helper()
	start := time.Now()
	if err := syscall.Kill(d.Pid, sig); err != nil {
		d.t.Fatalf("kill %d %v: %v", d.Pid, sig, err)
	}
	select {
	case <-d.exited:
		return time.Since(start), d.waitErr
	case <-time.After(timeout):
		d.DumpLog()
		d.t.Fatalf("xgate pid %d did not exit within %v of %v", d.Pid, timeout, sig)
		return 0, nil
	}
}
