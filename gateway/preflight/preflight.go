// Package preflight is what a run needs of the host before it touches
// anything: the privileges, capabilities and kernel features of each
// receive path (afxdp, socket, plain), the problems that rule a path out,
// the path a configuration gets (mode auto's choice, a strict mode's
// refusal), and the host check of xgate validate --host. It reads the
// host and the kernel; it opens, attaches and changes nothing.
package preflight

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/vishvananda/netlink"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/host"
)

// ChoosePath resolves mode auto and checks that the chosen path can work:
// auto takes afxdp when the interface, privileges and kernel allow it, else
// socket, else plain UDP without BPF. A configured mode that cannot work is
// an error naming what is missing.
func ChoosePath(cfg *config.Config) (path config.Mode, why string, err error) {
	switch cfg.Mode {
	case config.ModeAFXDP, config.ModeSocket:
		path = config.ModeAFXDP
		if cfg.Mode == config.ModeSocket {
			path = config.ModeSocket
		}
		if p := PathProblems(cfg, path); len(p) > 0 {
			return "", "", fmt.Errorf("mode %s: %w:\n  %s", cfg.Mode, ErrNoPath, strings.Join(p, "\n  "))
		}
		// Switched off or refused before anything is attached: a strict
		// mode fails at once, naming the feature.
		if path == config.ModeAFXDP && bpf.ForcedOff(bpf.FeatAFXDP) {
			return "", "", fmt.Errorf("mode %s: %w: %w (use mode socket or auto)", cfg.Mode, ErrNoPath, bpf.ForcedErr(bpf.FeatAFXDP))
		}
		if err := ProbeXDPLink(); err != nil && !errors.Is(err, bpf.ErrPermission) {
			return "", "", fmt.Errorf("mode %s: %w: %w (xgate attaches XDP only through a bpf_link; mode auto runs plain sockets)",
				cfg.Mode, ErrNoPath, err)
		}
		return path, "configured (mode: " + cfg.Mode.String() + ")", nil
	}
	if cfg.Mode == config.ModePlain {
		return config.ModePlain, "configured (mode: plain): UDP sockets without BPF; blocks are not enforced in the kernel", nil
	}
	if cfg.Interface == "" {
		return config.ModePlain, "auto: no interface configured, so no XDP; plain UDP sockets", nil
	}
	p := PathProblems(cfg, config.ModeAFXDP)
	if len(p) == 0 {
		return config.ModeAFXDP, "auto: interface, privileges and kernel allow AF_XDP", nil
	}
	if q := PathProblems(cfg, config.ModeSocket); len(q) == 0 {
		return config.ModeSocket, "auto: AF_XDP not possible (" + strings.Join(p, "; ") + "); SO_REUSEPORT groups behind the XDP program", nil
	}
	return config.ModePlain, "auto: no BPF possible (" + strings.Join(p, "; ") + "); plain UDP sockets, blocks are not enforced in the kernel", nil
}

// PathProblems checks what a receive path needs; it returns the fatal
// problems in words the operator can act on.
func PathProblems(cfg *config.Config, path config.Mode) []string {
	if path == config.ModePlain {
		return nil
	}
	need := NeedsFor(cfg, false)
	if path == config.ModeSocket {
		need.NetRaw, need.UMEMBytes = false, 0
	}
	var out []string
	for _, p := range host.FatalProblems(host.CheckPrivileges(need)) {
		if p.What == "bpffs" && host.WillMountBPFFS(cfg.Pin.Path) {
			continue // gateway.New mounts it before loading anything
		}
		out = append(out, p.Msg)
	}
	if len(out) > 0 {
		return out
	}
	if err := features.HaveProgramType(ebpf.XDP); err != nil {
		out = append(out, fmt.Sprintf("the kernel cannot run XDP programs: %v", err))
	}
	// The socket path needs no sk_reuseport program: it steers by NUMA
	// node with one where the kernel allows it, else the kernel's flow
	// hash picks the socket (the gateway's openSockets).
	if path == config.ModeAFXDP {
		if err := features.HaveMapType(ebpf.XSKMap); err != nil {
			out = append(out, fmt.Sprintf("the kernel has no XSKMAP (AF_XDP): %v", err))
		}
	}
	return out
}

// CheckSetup is `xgate validate --host`: the interface exists here, and
// the privileges and kernel features of the configured mode are in place.
// It returns the problems that would stop a run, and notes on what the
// run would do.
func CheckSetup(cfg *config.Config) (problems, notes []string) {
	if cfg.Interface != "" {
		if _, err := netlink.LinkByName(cfg.Interface); err != nil {
			problems = append(problems, fmt.Sprintf("interface %q: %v", cfg.Interface, err))
		}
	}
	path, why, err := ChoosePath(cfg)
	if err != nil {
		return append(problems, err.Error()), notes
	}
	// The feature switches and the kernel's refusals that mode auto would
	// meet before touching the interface (ChoosePath fails the strict
	// modes on them).
	var down []string
	if path != config.ModePlain {
		if err := ProbeXDPLink(); err != nil {
			down = append(down, path.String()+" refused: "+err.Error())
			path = config.ModePlain
		}
	}
	if path == config.ModeAFXDP && bpf.ForcedOff(bpf.FeatAFXDP) {
		down = append(down, path.String()+" refused: "+bpf.ForcedErr(bpf.FeatAFXDP).Error())
		path = config.ModeSocket
	}
	if len(down) > 0 {
		why += "; stepped down: " + strings.Join(down, "; ")
	}
	notes = append(notes, "receive path: "+path.String()+" ("+why+")")
	if path != config.ModePlain && bpf.ForcedOff(bpf.FeatXDPNative) {
		notes = append(notes, "XDP attaches in generic mode: "+bpf.ForcedErr(bpf.FeatXDPNative).Error())
	}
	return problems, notes
}

// ErrNoPath is in the error of a strict mode its path is not possible for.
var ErrNoPath = errors.New("no receive path possible")

// NeedsFor returns what the configured mode needs. For auto it returns
// the needs of afxdp, the first choice; the caller falls back when
// host.CheckPrivileges reports a problem. UMEMBytes counts one socket per
// configured queue (at least one): with queues: 0 the caller should scale
// it by the interface's queue count.
func NeedsFor(c *config.Config, probes bool) host.Needs {
	n := host.Needs{BPF: true, NetAdmin: true, Probes: probes, PinPath: c.Pin.Path}
	if c.Mode == config.ModeAFXDP || c.Mode == config.ModeAuto {
		n.NetRaw = true
		n.UMEMBytes = uint64(c.AFXDP.Frames) * uint64(c.AFXDP.FrameSize) * uint64(max(c.Queues, 1))
	}
	return n
}

// CapSteps lists the setup steps of a run of cfg on the receive path
// (config.ModeAFXDP, config.ModeSocket or config.ModePlain) and the
// capabilities each needs (host.CapSteps).
func CapSteps(cfg *config.Config, path config.Mode) []host.CapStep {
	return host.CapSteps(host.Setup{XDP: path != config.ModePlain, Reuseport: path == config.ModeSocket,
		AFXDP: path == config.ModeAFXDP, Probes: cfg.Probes.Enabled, RealtimePriority: cfg.Workers.RealtimePriority})
}

// ConfiguredPath is the receive path of an explicit mode, "" for auto.
func ConfiguredPath(mode config.Mode) config.Mode {
	switch mode {
	case config.ModeAFXDP:
		return config.ModeAFXDP
	case config.ModeSocket:
		return config.ModeSocket
	}
	return ""
}

// ProbeXDPLink is bpf.Probe(bpf.FeatXDPLink) as the daemon reads it: the
// probe needs CAP_SYS_ADMIN for its scratch namespace, which the unit does
// not grant; without it the probe says so (bpf.ErrPermission), which is no
// answer about the kernel, so the feature counts as available and the
// real attach (through a bpf_link, as always) decides.
func ProbeXDPLink() error {
	err := bpf.Probe(bpf.FeatXDPLink)
	if errors.Is(err, bpf.ErrPermission) {
		return nil
	}
	return err
}
