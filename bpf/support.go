package bpf

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// ErrNotSupported is matched (errors.Is) by every error that says the kernel
// lacks something a program needs; it also matches ebpf.ErrNotSupported.
var ErrNotSupported = errors.New("not supported by this kernel")

// ErrPermission is matched by errors that say a capability is missing.
var ErrPermission = errors.New("missing privilege")

// UnsupportedError names the missing kernel feature and what to do about it.
type UnsupportedError struct {
	What string // e.g. "map type XSKMap"
	Hint string // e.g. "needs Linux >= 4.18"
	Err  error  // the probe's error, if any
}

func (e *UnsupportedError) Error() string {
	s := e.What + " not supported"
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *UnsupportedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotSupported) and ebpf.ErrNotSupported true.
func (e *UnsupportedError) Is(target error) bool {
	return target == ErrNotSupported || target == ebpf.ErrNotSupported
}

// PermissionError names the capabilities a caller lacks.
type PermissionError struct {
	Missing []string
}

func (e *PermissionError) Error() string {
	return "needs " + strings.Join(e.Missing, " and ") +
		": run as root or grant them (setcap cap_bpf,cap_net_admin,cap_net_raw+ep, or AmbientCapabilities= in the unit)"
}

func (e *PermissionError) Is(target error) bool { return target == ErrPermission }

// Linux capability numbers (linux/capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// effectiveCaps reads CapEff of this process (no syscalls needed).
func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

// checkCaps says which of CAP_BPF (or CAP_SYS_ADMIN on kernels before 5.8)
// and CAP_NET_ADMIN are missing. Unknown state (no /proc) is not an error:
// the load itself will then tell.
func checkCaps(netAdmin bool) error {
	caps, err := effectiveCaps()
	if err != nil {
		return nil
	}
	has := func(c uint) bool { return caps&(1<<c) != 0 }
	var missing []string
	if !has(capBPF) && !has(capSysAdmin) {
		missing = append(missing, "CAP_BPF")
	}
	if netAdmin && !has(capNetAdmin) && !has(capSysAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if len(missing) > 0 {
		return &PermissionError{Missing: missing}
	}
	return nil
}

type requirement struct {
	what, hint string
	probe      func() error
}

// checkFeatures runs the probes; only nil and ErrNotSupported are conclusive,
// other probe errors are passed on wrapped.
func checkFeatures(reqs []requirement) error {
	for _, r := range reqs {
		err := r.probe()
		switch {
		case err == nil:
		case errors.Is(err, ebpf.ErrNotSupported):
			return &UnsupportedError{What: r.what, Hint: r.hint, Err: err}
		case errors.Is(err, os.ErrPermission):
			return fmt.Errorf("probe %s: %w", r.what, &PermissionError{Missing: []string{"CAP_BPF"}})
		default:
			return fmt.Errorf("probe %s: %w", r.what, err)
		}
	}
	return nil
}

var xdpRequirements = []requirement{
	{"program type XDP", "needs Linux >= 4.8", func() error { return features.HaveProgramType(ebpf.XDP) }},
	{"map type PerCPUArray", "needs Linux >= 4.6", func() error { return features.HaveMapType(ebpf.PerCPUArray) }},
	{"map type LRUHash", "needs Linux >= 4.10", func() error { return features.HaveMapType(ebpf.LRUHash) }},
	{"map type XSKMap", "needs Linux >= 4.18 with CONFIG_XDP_SOCKETS", func() error { return features.HaveMapType(ebpf.XSKMap) }},
	{"BPF ISA v3 (atomics for the token bucket)", "needs Linux >= 5.12 for atomic compare-and-swap", features.HaveV3ISA},
	{"bounded loops", "needs Linux >= 5.3", features.HaveBoundedLoops},
}

var reuseportRequirements = []requirement{
	{"program type SkReuseport", "needs Linux >= 4.19", func() error { return features.HaveProgramType(ebpf.SkReuseport) }},
	{"map type ReusePortSockArray", "needs Linux >= 4.19", func() error { return features.HaveMapType(ebpf.ReusePortSockArray) }},
}

// explainLoad turns a failed collection load into an error that says what
// to do. Verifier errors keep their log: print them with %+v.
func explainLoad(what string, err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		return fmt.Errorf("load %s: verifier rejected the program (print with %%+v for the log): %w", what, err)
	case errors.Is(err, ebpf.ErrMapIncompatible):
		return fmt.Errorf("load %s: a pinned map from an older xgate has another layout; remove the pin directory (or its map) and load again: %w", what, err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("load %s: %w (%w)", what, &PermissionError{Missing: []string{"CAP_BPF"}}, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("load %s: %w", what, err)
	}
	return fmt.Errorf("load %s: %w", what, err)
}

// preparePins clears pinning when pinPath is empty, or creates the pin
// directory (on a mounted bpffs) when it is not.
func preparePins(maps map[string]*ebpf.MapSpec, pinPath string) error {
	if pinPath == "" {
		for _, m := range maps {
			m.Pinning = ebpf.PinNone
		}
		return nil
	}
	if err := os.MkdirAll(pinPath, 0o700); err != nil {
		return fmt.Errorf("create pin directory %s (is bpffs mounted at /sys/fs/bpf? `mount -t bpf bpf /sys/fs/bpf`): %w", pinPath, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(pinPath, &st); err == nil && st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("pin directory %s is not on a bpffs (`mount -t bpf bpf /sys/fs/bpf`)", pinPath)
	}
	return nil
}

// unpinAll removes the pins of maps and, if it is then empty, the directory.
func unpinAll(pinPath string, maps ...*ebpf.Map) error {
	var errs []error
	for _, m := range maps {
		if m != nil && m.IsPinned() {
			if err := m.Unpin(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if pinPath != "" {
		// Fails harmlessly when other pins (probes, links) remain.
		_ = os.Remove(pinPath)
	}
	return errors.Join(errs...)
}
