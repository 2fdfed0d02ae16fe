package host

import (
	"fmt"
	"math"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Capability is a Linux capability number (linux/capability.h).
type Capability uint

// The capabilities xgate cares about.
const (
	CapNetAdmin    Capability = 12 // attach XDP, SO_RCVBUFFORCE
	CapNetRaw      Capability = 13 // AF_XDP sockets
	CapIPCLock     Capability = 14 // AF_XDP UMEM not charged to RLIMIT_MEMLOCK
	CapSysAdmin    Capability = 21 // stands in for CAP_BPF and CAP_PERFMON (and is all of them before 5.8)
	CapSysResource Capability = 24 // raise RLIMIT_MEMLOCK
	CapPerfmon     Capability = 38 // tracing probes (Linux >= 5.8)
	CapBPF         Capability = 39 // load programs and maps (Linux >= 5.8)
)

var capNames = map[Capability]string{
	CapNetAdmin: "CAP_NET_ADMIN", CapNetRaw: "CAP_NET_RAW", CapIPCLock: "CAP_IPC_LOCK",
	CapSysAdmin: "CAP_SYS_ADMIN", CapSysResource: "CAP_SYS_RESOURCE",
	CapPerfmon: "CAP_PERFMON", CapBPF: "CAP_BPF",
}

func (c Capability) String() string {
	if n, ok := capNames[c]; ok {
		return n
	}
	return fmt.Sprintf("capability(%d)", uint(c))
}

// setcapName is the name setcap(8) takes: cap_bpf.
func (c Capability) setcapName() string { return strings.ToLower(c.String()) }

// CapSet is a set of capabilities as in /proc/<pid>/status (bit n = capability n).
type CapSet uint64

// Has reports whether c is in the set.
func (s CapSet) Has(c Capability) bool { return c < 64 && s&(1<<c) != 0 }

// ParseCapEff reads the effective capability set from the text of
// /proc/self/status.
func ParseCapEff(status string) (CapSet, error) {
	v, ok := statusField(status, "CapEff")
	if !ok {
		return 0, fmt.Errorf("no CapEff line in the process status")
	}
	n, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("CapEff %.40q: not a hex mask", v)
	}
	return CapSet(n), nil
}

// statusField returns the value of the first "name:" line of a
// /proc/<pid>/status text, without its blanks.
func statusField(status, name string) (string, bool) {
	for line := range strings.Lines(status) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// ParseKernelRelease reads the major and minor version from a release
// string like "6.18.44-fc-v669" or "5.4.0-150-generic": both decimal
// digits only (no sign), below 1<<20.
func ParseKernelRelease(release string) (major, minor int, err error) {
	s := strings.TrimSpace(release)
	maj, rest, ok := strings.Cut(s, ".")
	if !ok {
		return 0, 0, fmt.Errorf("kernel release %.64q: want major.minor", release)
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	major, ok1 := parseDecimal(maj, 1<<20)
	minor, ok2 := parseDecimal(rest[:end], 1<<20)
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("kernel release %.64q: want major.minor", release)
	}
	return major, minor, nil
}

// MountFor reports the filesystem type and mount point (cleaned) of the
// mount that holds dir, from the text of /proc/self/mounts ("" when no
// mount covers it, which cannot happen on a real host since / always does).
func MountFor(mounts, dir string) (fstype, mountPoint string) {
	dir = path.Clean(dir)
	best := -1
	for line := range strings.Lines(mounts) {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		// Cleaned before the lengths are compared: "/sys/fs/bpf/" is no
		// deeper a mount than "/sys/fs/bpf".
		mp := path.Clean(unescapeMount(f[1]))
		if !pathWithin(dir, mp) || len(mp) < best {
			continue
		}
		// The longest mount point wins; for equal ones the later mount
		// (stacked on top) does.
		best, fstype, mountPoint = len(mp), f[2], mp
	}
	return fstype, mountPoint
}

// pathWithin reports whether the clean path dir is mp or below it.
func pathWithin(dir, mp string) bool {
	mp = path.Clean(mp)
	return mp == "/" || dir == mp || strings.HasPrefix(dir, mp+"/")
}

// unescapeMount undoes the octal escapes of /proc/self/mounts (\040 for a
// space, \011, \012, \134).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Needs says what a run will do, and so which privileges it needs.
type Needs struct {
	BPF      bool // load BPF programs and maps
	NetAdmin bool // attach XDP to an interface
	NetRaw   bool // open AF_XDP sockets
	Probes   bool // attach tracing probes (CAP_PERFMON)
	// PinPath is where BPF objects are pinned: its parent must be on
	// bpffs. "" = no pinning.
	PinPath string
	// UMEMBytes is the AF_XDP UMEM to register, which the kernel charges
	// to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK. 0 = none.
	UMEMBytes uint64
	// Binary names the executable in the setcap hint; "" = bin/xgate.
	Binary string
}

// Problem is one thing that stops (Fatal) or shapes a run, in words the
// operator can act on.
type Problem struct {
	What  string // CAP_BPF, bpffs, memlock, …
	Msg   string
	Fatal bool // false: information, the run can go on
}

func (p Problem) String() string { return p.Msg }

// Host is what CheckHost looks at, read from this process (ReadHost) or
// given by a test.
type Host struct {
	Status  string // text of /proc/self/status
	Mounts  string // text of /proc/self/mounts
	Release string // kernel release (uname -r)
	// Memlock is the soft RLIMIT_MEMLOCK in bytes; math.MaxUint64 is
	// unlimited.
	Memlock uint64
}

// ReadHost reads the current process's Host. Unreadable parts are left
// empty, and CheckHost says so.
func ReadHost() Host {
	var h Host
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		h.Status = string(b)
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		h.Mounts = string(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Release = strings.TrimSpace(string(b))
	}
	var rl unix.Rlimit
	h.Memlock = math.MaxUint64
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY {
		h.Memlock = rl.Cur
	}
	return h
}

// CheckPrivileges checks this process against need, up front, so that the
// operator reads "needs CAP_BPF" and not a bare EPERM later. It returns
// every problem found, fatal or not (see Problem.Fatal).
func CheckPrivileges(need Needs) []Problem {
	return CheckHost(need, ReadHost())
}

// memlockPre511 is what xgate wants of RLIMIT_MEMLOCK on kernels that
// charge BPF maps to it.
const memlockPre511 = 64 << 20

// CheckHost is CheckPrivileges on a given host.
func CheckHost(need Needs, h Host) []Problem {
	var ps []Problem
	bin := need.Binary
	if bin == "" {
		bin = "bin/xgate"
	}
	major, minor, kerr := ParseKernelRelease(h.Release)
	kernel := func(maj, min int) bool { // kernel >= maj.min; unknown counts as new
		return kerr != nil || major > maj || major == maj && minor >= min
	}
	caps, cerr := ParseCapEff(h.Status)
	if cerr != nil {
		ps = append(ps, Problem{What: "capabilities", Fatal: true,
			Msg: fmt.Sprintf("cannot read this process's capabilities (/proc/self/status: %v)", cerr)})
	}

	// The capabilities to ask for, in setcap order. Before 5.8 there is no
	// CAP_BPF or CAP_PERFMON: CAP_SYS_ADMIN is both.
	hasCapBPF := kernel(5, 8)
	var want []Capability
	if need.BPF {
		if hasCapBPF {
			// CAP_PERFMON too: the verifier allows the XDP program's
			// packet pointer arithmetic only with it (capsteps.go).
			want = append(want, CapBPF, CapPerfmon)
		} else {
			want = append(want, CapSysAdmin)
		}
	}
	if need.NetAdmin {
		want = append(want, CapNetAdmin)
	}
	if need.NetRaw {
		want = append(want, CapNetRaw)
	}
	if need.Probes {
		if hasCapBPF && !need.BPF {
			want = append(want, CapPerfmon)
		} else if !hasCapBPF && !need.BPF {
			want = append(want, CapSysAdmin)
		}
	}
	setcap := func() string {
		names := make([]string, len(want))
		for i, c := range want {
			names[i] = c.setcapName()
		}
		return fmt.Sprintf("setcap %s+ep %s", strings.Join(names, ","), bin)
	}
	if cerr == nil {
		var missing []Problem
		for _, c := range want {
			ok := caps.Has(c)
			if c == CapBPF || c == CapPerfmon {
				ok = ok || caps.Has(CapSysAdmin) // bpf_capable(), perfmon_capable()
			}
			if ok {
				continue
			}
			msg := "needs " + c.String()
			switch {
			case c == CapPerfmon && need.BPF:
				msg += " (the verifier allows the XDP program's packet arithmetic only with it)"
			case c == CapPerfmon:
				msg += " for probes"
			case c == CapSysAdmin && !hasCapBPF:
				msg += fmt.Sprintf(" (Linux %d.%d predates CAP_BPF and CAP_PERFMON)", major, minor)
			}
			missing = append(missing, Problem{What: c.String(), Fatal: true, Msg: msg})
		}
		// One hint for them all, on the last: it names every capability.
		if n := len(missing); n > 0 {
			missing[n-1].Msg += ": run as root or grant them: " + setcap()
			if n == 1 {
				missing[0].Msg = strings.Replace(missing[0].Msg, "grant them", "grant it", 1)
			}
		}
		ps = append(ps, missing...)
	}

	if need.PinPath != "" {
		dir := path.Dir(path.Clean(need.PinPath))
		if h.Mounts == "" {
			ps = append(ps, Problem{What: "bpffs", Fatal: true,
				Msg: "cannot read /proc/self/mounts to check that bpffs is mounted at " + dir})
		} else if fstype, _ := MountFor(h.Mounts, dir); fstype != "bpf" {
			ps = append(ps, Problem{What: "bpffs", Fatal: true,
				Msg: fmt.Sprintf("bpffs is not mounted at %s: mount -t bpf bpf %s", dir, dir)})
		}
	}

	if need.BPF || need.UMEMBytes > 0 {
		ps = append(ps, checkMemlock(need, h, caps, cerr == nil, kerr == nil, major, minor)...)
	}
	return ps
}

func checkMemlock(need Needs, h Host, caps CapSet, capsKnown, kernelKnown bool, major, minor int) []Problem {
	var ps []Problem
	limit := "unlimited"
	if h.Memlock != math.MaxUint64 {
		limit = byteSize(h.Memlock)
	}
	canRaise := capsKnown && caps.Has(CapSysResource)
	fix := "raise it: ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit"
	if need.BPF {
		switch {
		case !kernelKnown:
			ps = append(ps, Problem{What: "memlock", Msg: "kernel version unknown: assuming BPF memory is charged to the memory cgroup (>= 5.11), not RLIMIT_MEMLOCK"})
		case major > 5 || major == 5 && minor >= 11:
			ps = append(ps, Problem{What: "memlock", Msg: fmt.Sprintf(
				"memlock: Linux %d.%d charges BPF maps to the memory cgroup (>= 5.11), so RLIMIT_MEMLOCK (%s) does not limit them", major, minor, limit)})
		case h.Memlock >= memlockPre511:
		case canRaise:
			ps = append(ps, Problem{What: "memlock", Msg: fmt.Sprintf(
				"memlock: Linux %d.%d charges BPF maps to RLIMIT_MEMLOCK (%s); xgate raises it (it has CAP_SYS_RESOURCE)", major, minor, limit)})
		default:
			ps = append(ps, Problem{What: "memlock", Fatal: true, Msg: fmt.Sprintf(
				"RLIMIT_MEMLOCK is %s and Linux %d.%d charges BPF maps to it (before 5.11): %s", limit, major, minor, fix)})
		}
	}
	// AF_XDP charges its UMEM to RLIMIT_MEMLOCK on every kernel, unless the
	// process has CAP_IPC_LOCK.
	if need.UMEMBytes > 0 && !(capsKnown && caps.Has(CapIPCLock)) && h.Memlock < need.UMEMBytes {
		if canRaise {
			ps = append(ps, Problem{What: "memlock", Msg: fmt.Sprintf(
				"memlock: the AF_XDP UMEM (%s) is charged to RLIMIT_MEMLOCK (%s) without CAP_IPC_LOCK; xgate raises it (it has CAP_SYS_RESOURCE)",
				byteSize(need.UMEMBytes), limit)})
		} else {
			ps = append(ps, Problem{What: "memlock", Fatal: true, Msg: fmt.Sprintf(
				"RLIMIT_MEMLOCK is %s but the AF_XDP UMEM needs %s and is charged to it without CAP_IPC_LOCK: grant cap_ipc_lock, or %s",
				limit, byteSize(need.UMEMBytes), fix)})
		}
	}
	return ps
}

func byteSize(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// FatalProblems returns the problems that stop a run.
func FatalProblems(ps []Problem) []Problem {
	var out []Problem
	for _, p := range ps {
		if p.Fatal {
			out = append(out, p)
		}
	}
	return out
}
