package bpf

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Kernel features xgate probes at run time. A kernel build may refuse any
// of them (hardened builds refuse helpers and test-run flags that the
// version would allow), so each is probed by doing the thing on a tiny
// program, never inferred from the version, and each has a fallback.
//
// The names are stable: they appear in `xgate features`, /status and the
// XGATE_FEATURES_OFF list.
const (
	// FeatXDPMeta: an XDP program may call bpf_xdp_adjust_meta. Without
	// it the receive timestamp travels in a prefix header instead
	// (StampPrefix).
	FeatXDPMeta = "xdp_meta"
	// FeatLiveFrames: BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (the
	// fastest traffic generator). Without it the generator transmits
	// through an AF_XDP socket.
	FeatLiveFrames = "xdp_live_frames"
	// FeatXDPLink: XDP attached through a bpf_link (detaches when the
	// process dies). Without it xgate does not attach: a netlink-attached
	// program would outlive a crashed daemon.
	FeatXDPLink = "xdp_link"
	// FeatXDPNative: XDP in the driver (per interface). Without it the
	// program runs in generic (skb) mode.
	FeatXDPNative = "xdp_native"
	// FeatAFXDP: AF_XDP sockets (copy mode at least; per interface).
	FeatAFXDP = "afxdp"
	// FeatAFXDPZeroCopy: AF_XDP bound in zero-copy mode (per interface).
	FeatAFXDPZeroCopy = "afxdp_zerocopy"
	// FeatAFXDPNeedWakeup: the XDP_USE_NEED_WAKEUP bind flag.
	FeatAFXDPNeedWakeup = "afxdp_need_wakeup"
	// FeatTpBtf: BTF-typed tracepoint programs (the kernel probes).
	FeatTpBtf = "tp_btf"
	// FeatSocketFilter: socket filter programs (socket-path latency).
	FeatSocketFilter = "socket_filter"
	// FeatReuseport: sk_reuseport programs (NUMA steering of the socket
	// groups).
	FeatReuseport = "sk_reuseport"
	// FeatBTF: the kernel's own BTF (/sys/kernel/btf/vmlinux), for tp_btf.
	FeatBTF = "btf"
)

// KernelFeatures are the features probed without an interface, in the
// order `xgate features` shows them.
var KernelFeatures = []string{FeatBTF, FeatXDPLink, FeatXDPMeta, FeatLiveFrames, FeatTpBtf, FeatSocketFilter, FeatReuseport}

// InterfaceFeatures are probed on an interface (by the gateway when it
// attaches and binds, or by `xgate features --interface`).
var InterfaceFeatures = []string{FeatXDPNative, FeatAFXDP, FeatAFXDPZeroCopy, FeatAFXDPNeedWakeup}

// AllFeatures is every feature name.
func AllFeatures() []string { return append(slices.Clone(KernelFeatures), InterfaceFeatures...) }

// ErrForcedOff is matched by the error of a feature switched off with
// XGATE_FEATURES_OFF or ForceOff.
var ErrForcedOff = errors.New("switched off")

// FeaturesOffEnv names the environment variable with a comma-separated
// list of features to treat as refused, whatever the kernel says. It
// exists to prove the fallbacks on kernels that allow the fast path (the
// tests set it), and lets an operator step around a feature that misbehaves
// on their kernel.
const FeaturesOffEnv = "XGATE_FEATURES_OFF"

var (
	offMu   sync.RWMutex
	offSet  map[string]bool // nil: not read from the environment yet
	probeMu sync.Mutex
	probed  = map[string]*probeResult{}
)

// probeResult is one feature's cached answer; mu serialises its probe
// without holding the others (a probe may ask another one: tp_btf asks btf).
type probeResult struct {
	mu   sync.Mutex
	done bool
	err  error
}

func loadOffLocked() {
	if offSet != nil {
		return
	}
	offSet = map[string]bool{}
	for _, f := range strings.Split(os.Getenv(FeaturesOffEnv), ",") {
		if f = strings.TrimSpace(f); f != "" {
			offSet[f] = true
		}
	}
}

// CheckFeatureNames returns an error naming each unknown name in names.
func CheckFeatureNames(names []string) error {
	all := AllFeatures()
	var bad []string
	for _, n := range names {
		if !slices.Contains(all, n) {
			bad = append(bad, n)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("unknown feature %s (known: %s)", strings.Join(bad, ", "), strings.Join(all, ", "))
	}
	return nil
}

// ForcedOff says whether name is switched off (XGATE_FEATURES_OFF or
// ForceOff).
func ForcedOff(name string) bool {
	offMu.Lock()
	defer offMu.Unlock()
	loadOffLocked()
	return offSet[name]
}

// ForcedOffList is the sorted list of features switched off.
func ForcedOffList() []string {
	offMu.Lock()
	defer offMu.Unlock()
	loadOffLocked()
	var out []string
	for f := range offSet {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// ForceOff switches features off for this process (in addition to
// XGATE_FEATURES_OFF) until the returned function restores the previous
// set. Tests use it to run a fallback on a kernel that has the feature.
func ForceOff(names ...string) (restore func()) {
	offMu.Lock()
	defer offMu.Unlock()
	loadOffLocked()
	prev := make(map[string]bool, len(offSet))
	for k, v := range offSet {
		prev[k] = v
	}
	for _, n := range names {
		offSet[n] = true
	}
	return func() {
		offMu.Lock()
		defer offMu.Unlock()
		offSet = prev
	}
}

// ForcedErr is the error of a feature switched off (XGATE_FEATURES_OFF or
// ForceOff): it matches ErrNotSupported and ErrForcedOff.
func ForcedErr(name string) error {
	return &UnsupportedError{What: name, Hint: "switched off by " + FeaturesOffEnv, Err: ErrForcedOff}
}

// Probe says whether the kernel offers a kernel-wide feature (one of
// KernelFeatures): nil if it does, an error matching ErrNotSupported if it
// does not (or it is switched off: then also ErrForcedOff), another error
// if the probe itself failed (missing privilege: ErrPermission). Kernel
// answers are cached for the life of the process; the switch is not.
func Probe(name string) error {
	if ForcedOff(name) {
		return ForcedErr(name)
	}
	probeMu.Lock()
	r := probed[name]
	if r == nil {
		r = &probeResult{}
		probed[name] = r
	}
	probeMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return r.err
	}
	var err error
	switch name {
	case FeatBTF:
		err = probeBTF()
	case FeatXDPLink:
		err = probeXDPLink()
	case FeatXDPMeta:
		err = probeXDPMeta()
	case FeatLiveFrames:
		err = probeLiveFrames()
	case FeatTpBtf:
		err = probeTpBtf()
	case FeatSocketFilter:
		err = conclusive(FeatSocketFilter, features.HaveProgramType(ebpf.SocketFilter))
	case FeatReuseport:
		err = conclusive(FeatReuseport, errors.Join(features.HaveProgramType(ebpf.SkReuseport),
			features.HaveMapType(ebpf.ReusePortSockArray)))
	default:
		return fmt.Errorf("probe %q: not a kernel-wide feature", name)
	}
	// A probe that failed for want of privilege is not the kernel's answer:
	// do not cache it (the process may gain the capability, and a later
	// caller should see the same clear error).
	if !errors.Is(err, ErrPermission) {
		r.done, r.err = true, err
	}
	return err
}

// conclusive maps a probe error onto our errors: EPERM/EACCES mean a
// missing privilege, ErrNotSupported stays, and a refusal that is not
// EPERM (EINVAL, a verifier rejection) means the kernel says no.
func conclusive(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return &UnsupportedError{What: what, Err: err}
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, os.ErrPermission):
		if checkCaps(false) != nil {
			return fmt.Errorf("probe %s: %w", what, &PermissionError{Missing: []string{"CAP_BPF"}})
		}
		// Privileged and still EPERM: a hardened kernel refusing it.
		return &UnsupportedError{What: what, Hint: "refused by this kernel (EPERM with CAP_BPF)", Err: err}
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return &UnsupportedError{What: what, Hint: "verifier: " + lastLogLine(ve), Err: err}
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) {
		return &UnsupportedError{What: what, Hint: err.Error(), Err: err}
	}
	return fmt.Errorf("probe %s: %w", what, err)
}

// lastLogLine is the verifier's reason: the last non-empty line of its log.
func lastLogLine(ve *ebpf.VerifierError) string {
	for i := len(ve.Log) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(ve.Log[i]); l != "" && !strings.HasPrefix(l, "processed ") {
			return l
		}
	}
	return ve.Error()
}

func probeBTF() error {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return &UnsupportedError{What: FeatBTF, Hint: "no /sys/kernel/btf/vmlinux: a kernel built with CONFIG_DEBUG_INFO_BTF", Err: err}
	}
	if _, err := btf.LoadKernelSpec(); err != nil {
		return &UnsupportedError{What: FeatBTF, Hint: "kernel BTF unreadable", Err: err}
	}
	return nil
}

// xdpProbeProgram loads a minimal XDP program: ins, then return XDP_DROP.
func xdpProbeProgram(ins ...asm.Instruction) (*ebpf.Program, error) {
	ins = append(ins, asm.Mov.Imm(asm.R0, 1), asm.Return()) // XDP_DROP
	return ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Name: "xgate_probe", Type: ebpf.XDP, License: "Dual MIT/GPL", Instructions: ins,
	}, ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch})
}

// probeXDPMeta loads an XDP program that calls bpf_xdp_adjust_meta(ctx, 0).
func probeXDPMeta() error {
	prog, err := xdpProbeProgram(
		asm.Mov.Imm(asm.R2, 0), // ctx is already in R1
		asm.FnXdpAdjustMeta.Call(),
	)
	if err != nil {
		return conclusive("bpf_xdp_adjust_meta in XDP", err)
	}
	return prog.Close()
}

// bpfFTestXDPLiveFrames is BPF_F_TEST_XDP_LIVE_FRAMES (uapi linux/bpf.h).
const bpfFTestXDPLiveFrames = 1 << 1

// LiveFramesFlag is the BPF_PROG_RUN flag of live-frames test runs.
const LiveFramesFlag = bpfFTestXDPLiveFrames

// probeLiveFrames runs an XDP_DROP program once in live-frames mode (on
// the loopback device of this namespace: the frame is dropped in XDP).
func probeLiveFrames() error {
	prog, err := xdpProbeProgram()
	if err != nil {
		return conclusive("XDP program", err)
	}
	defer prog.Close()
	frame := make([]byte, 64)
	frame[12], frame[13] = 0x08, 0x00
	_, err = prog.Run(&ebpf.RunOptions{Data: frame, Repeat: 1, Flags: bpfFTestXDPLiveFrames})
	return conclusive("BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES", err)
}

// probeXDPLink attaches an XDP program through a bpf_link to the loopback
// device of a network namespace made for the probe (a thread of its own
// unshares it, and the thread ends with the probe), so no interface of
// the host sees the program. A kernel without XDP links answers EINVAL,
// one that refuses them EPERM.
func probeXDPLink() error {
	prog, err := xdpProbeProgram()
	if err != nil {
		return conclusive("XDP program", err)
	}
	defer prog.Close()
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends the thread with the goroutine
		// instead of handing a thread in the probe's namespace to others.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			// No answer about the kernel: the probe lacks a privilege.
			done <- &PermissionError{Missing: []string{"CAP_SYS_ADMIN (for the xdp_link probe's scratch namespace)"}}
			return
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: 1, Flags: link.XDPGenericMode})
		if err == nil {
			err = l.Close()
		}
		done <- err
	}()
	if err := <-done; err != nil {
		if errors.Is(err, ErrPermission) {
			return fmt.Errorf("probe %s: %w", FeatXDPLink, err)
		}
		return conclusive("XDP bpf_link", err)
	}
	return nil
}

// probeTpBtf loads a tp_btf program on the kfree_skb tracepoint and
// attaches it for a moment (fentry may be refused where tp_btf is not, so
// features.HaveProgramType(ebpf.Tracing), which loads fentry, cannot tell).
func probeTpBtf() error {
	if err := Probe(FeatBTF); err != nil {
		return &UnsupportedError{What: FeatTpBtf, Hint: "needs kernel BTF", Err: err}
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xgate_probe", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "kfree_skb",
		License: "Dual MIT/GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return conclusive("tp_btf program", err)
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		return conclusive("tp_btf attach", err)
	}
	return l.Close()
}
