package host

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CapSysNice allows SCHED_FIFO (workers.realtime_priority).
const CapSysNice Capability = 23

func init() { capNames[CapSysNice] = "CAP_SYS_NICE" }

// CapStep is one setup step and the capabilities it needs.
type CapStep struct {
	Step string       // what the daemon does, e.g. "load and attach the XDP program"
	Caps []Capability // all of them are needed
	// Optional steps are skipped with a warning when a capability is
	// missing (the kernel probes); the others stop the start.
	Optional bool
}

// RtprioLimit is the soft RLIMIT_RTPRIO (0 when unreadable).
func RtprioLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_RTPRIO, &rl); err != nil {
		return 0
	}
	return rl.Cur
}

// hasCap is a capability check as the kernel makes it: CAP_SYS_ADMIN
// stands in for CAP_BPF and CAP_PERFMON.
func hasCap(set CapSet, c Capability) bool {
	if set.Has(c) {
		return true
	}
	return (c == CapBPF || c == CapPerfmon) && set.Has(CapSysAdmin)
}

// MissingCap is a capability a setup step lacks.
type MissingCap struct {
	Cap  Capability
	Step string
}

// CapabilityError names the capabilities the daemon lacks and the steps
// that need them. errors.Is(err, os.ErrPermission) holds.
type CapabilityError struct {
	Missing []MissingCap
	Have    CapSet // the effective set checked
}

func (e *CapabilityError) Error() string {
	var parts, names []string
	seen := map[Capability]bool{}
	for _, m := range e.Missing {
		parts = append(parts, fmt.Sprintf("%s (to %s)", m.Cap, m.Step))
		if !seen[m.Cap] {
			seen[m.Cap] = true
			names = append(names, m.Cap.String())
		}
	}
	return fmt.Sprintf("missing capabilities: %s; grant them with AmbientCapabilities=%s in the systemd unit "+
		"(and CapabilityBoundingSet=), setpriv --inh-caps/--ambient-caps, or setcap %s+ep on the binary",
		strings.Join(parts, ", "), strings.Join(names, " "), strings.ToLower(strings.Join(names, ",")))
}

func (e *CapabilityError) Is(target error) bool { return target == os.ErrPermission }

// CheckCaps checks the effective set have against steps. It returns a
// *CapabilityError for the required steps' missing capabilities (nil when
// none), and for each optional step with a missing capability a warning
// naming it.
func CheckCaps(steps []CapStep, have CapSet) (err error, warnings []string) {
	var missing []MissingCap
	for _, s := range steps {
		var lack []string
		for _, c := range s.Caps {
			if hasCap(have, c) {
				continue
			}
			if s.Optional {
				lack = append(lack, c.String())
			} else {
				missing = append(missing, MissingCap{Cap: c, Step: s.Step})
			}
		}
		if len(lack) > 0 {
			warnings = append(warnings, fmt.Sprintf("cannot %s without %s: running without them (grant %s, or set probes: {enabled: false})",
				s.Step, strings.Join(lack, " and "), strings.Join(lack, " and ")))
		}
	}
	if len(missing) > 0 {
		return &CapabilityError{Missing: missing, Have: have}, warnings
	}
	return nil, warnings
}

// EffectiveCaps reads this process's effective set.
func EffectiveCaps() (CapSet, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	return ParseCapEff(string(b))
}

// ErrCgoThreads says why DropCapabilities cannot work in this binary.
var ErrCgoThreads = errors.New("capabilities are per thread, and a cgo binary cannot change every thread's " +
	"(build with CGO_ENABLED=0: make build)")

// DropCapabilities reduces the permitted, effective and inheritable sets of
// every thread of the process to keep (the ambient set follows: the kernel
// clears what leaves the permitted set) and sets no_new_privs, so that
// nothing the process runs can gain privileges again. Capabilities and
// no_new_privs are per thread in Linux, and the Go runtime runs many
// threads (the workers' among them, locked and pinned): the syscalls go
// through syscall.AllThreadsSyscall, which makes them on every thread the
// runtime has and fails whole if one thread's result differs; threads
// started later copy the dropped credentials from their creator. A binary
// built with cgo gets ErrCgoThreads and keeps its capabilities. Afterwards
// every thread's CapEff is read back from /proc/self/task.
func DropCapabilities(keep CapSet) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData // capset reads both 32-bit halves
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	perm := CapSet(data[0].Permitted) | CapSet(data[1].Permitted)<<32
	keep &= perm // a set cannot grow
	for i := range data {
		half := uint32(keep >> (32 * i))
		data[i].Permitted, data[i].Effective, data[i].Inheritable = half, half, 0
	}
	hdr.Pid = 0 // the calling thread, on each thread
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		if e == syscall.ENOTSUP {
			return ErrCgoThreads
		}
		return fmt.Errorf("capset: %w", e)
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", e)
	}
	return verifyThreadCaps(keep)
}

// verifyThreadCaps checks that no thread of the process has an effective
// capability outside keep, or lacks no_new_privs.
func verifyThreadCaps(keep CapSet) error {
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) == 0 {
		return fmt.Errorf("list this process's threads: %v", err)
	}
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		eff, err := ParseCapEff(string(b))
		if err != nil {
			return err
		}
		if eff&^keep != 0 {
			return fmt.Errorf("thread %s still has capabilities %#x after the drop", filepath.Base(filepath.Dir(p)), uint64(eff&^keep))
		}
		if !noNewPrivs(string(b)) {
			return fmt.Errorf("thread %s has no no_new_privs after the drop", filepath.Base(filepath.Dir(p)))
		}
	}
	return nil
}

// noNewPrivs reports whether a task's status text says NoNewPrivs: 1.
func noNewPrivs(status string) bool {
	v, ok := statusField(status, "NoNewPrivs")
	return ok && v == "1"
}

// Names lists the set's capabilities by name, lowest first ("" = none).
func (s CapSet) Names() []string {
	var out []string
	for c := Capability(0); c < 64; c++ {
		if s.Has(c) {
			out = append(out, c.String())
		}
	}
	return out
}
