package host

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/xdp"
)

// InterfaceReport is `xgate features --interface`: the interface's active
// RX queues and every feature, the interface's probed on it.
type InterfaceReport struct {
	Interface string        `json:"interface,omitempty"`
	RxQueues  *RxQueueCount `json:"rx_queues,omitempty"`
	Features  Features      `json:"features"`
}

// ProbeInterface reports the kernel's features and tries the interface's
// in the calling thread's network namespace: a native XDP attach through a
// bpf_link (an XDP_PASS program, detached at once), and AF_XDP binds on
// queue 0, zero-copy then copy, with need_wakeup then without. An
// interface that already has an XDP program (a running xgate, say) is not
// touched: its features say "in use". Some drivers reset their rings when
// a native XDP program comes or goes, so the interface may drop a few
// frames while it is probed.
func ProbeInterface(ifname string) (*InterfaceReport, error) {
	lnk, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w (is it in this network namespace?)", ifname, err)
	}
	qc := ActiveRxQueues(ifname)
	r := &InterfaceReport{Interface: ifname, RxQueues: &qc, Features: KernelFeatures()}
	if x := lnk.Attrs().Xdp; x != nil && x.Attached {
		why := fmt.Sprintf("in use: XDP program id %d is attached to %s (a running xgate?); not probed", x.ProgId, ifname)
		for _, n := range bpf.InterfaceFeatures {
			r.Features = append(r.Features, UnknownFeature(n, why))
		}
		return r, nil
	}
	r.Features = append(r.Features, probeNative(lnk.Attrs().Index))
	r.Features = append(r.Features, probeXSK(lnk.Attrs().Index, ifname, qc)...)
	return r, nil
}

// probeNative attaches an XDP_PASS program in driver mode for a moment.
func probeNative(ifindex int) Feature {
	n := bpf.FeatXDPNative
	if bpf.ForcedOff(n) {
		return FeatureFromErr(n, "interface", bpf.ForcedErr(n))
	}
	if err := bpf.Probe(bpf.FeatXDPLink); err != nil {
		return UnknownFeature(n, "not probed: needs xdp_link: "+err.Error())
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xgate_probe", Type: ebpf.XDP, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}, // XDP_PASS
	})
	if err != nil {
		return UnknownFeature(n, "probe program: "+err.Error())
	}
	defer prog.Close()
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return UnknownFeature(n, "in use: "+err.Error())
		}
		return FeatureFromErr(n, "interface", RefusedErr{fmt.Errorf("native XDP attach: %w", err)})
	}
	if err := l.Close(); err != nil {
		return UnknownFeature(n, "detach after probe: "+err.Error())
	}
	return FeatureFromErr(n, "interface", nil)
}

// probeXSK binds AF_XDP sockets on queue 0: zero-copy, then copy; with
// need_wakeup, and without it when that was refused.
func probeXSK(ifindex int, ifname string, qc RxQueueCount) []Feature {
	names := []string{bpf.FeatAFXDP, bpf.FeatAFXDPZeroCopy, bpf.FeatAFXDPNeedWakeup}
	if bpf.ForcedOff(bpf.FeatAFXDP) {
		var out []Feature
		for _, n := range names {
			err := bpf.ForcedErr(bpf.FeatAFXDP)
			if n != bpf.FeatAFXDP && !bpf.ForcedOff(n) {
				out = append(out, UnknownFeature(n, "not probed: "+err.Error()))
				continue
			}
			out = append(out, FeatureFromErr(n, "interface", bpf.ForcedErr(n)))
		}
		return out
	}
	nwOff := bpf.ForcedOff(bpf.FeatAFXDPNeedWakeup)
	try := func(bind xdp.BindMode, noWakeup bool) error {
		s, err := xdp.Open(ifindex, 0, xdp.Config{FillSize: 64, RxSize: 64, Bind: bind, NoNeedWakeup: noWakeup, BusyRetry: -1})
		if err != nil {
			if hint := QueueHint(ifname, 0, qc, err); hint != "" {
				err = fmt.Errorf("%w (%s)", err, hint)
			}
			return err
		}
		return s.Close()
	}
	inUse := func(err error) bool { return errors.Is(err, unix.EBUSY) }
	var zc, cp, nw error
	if bpf.ForcedOff(bpf.FeatAFXDPZeroCopy) {
		zc = bpf.ForcedErr(bpf.FeatAFXDPZeroCopy)
	} else {
		zc = try(xdp.BindZeroCopy, nwOff)
	}
	allInUse := func(err error) []Feature {
		var out []Feature
		for _, n := range names {
			out = append(out, UnknownFeature(n, "in use: "+err.Error()))
		}
		return out
	}
	if inUse(zc) {
		return allInUse(zc)
	}
	if zc != nil {
		cp = try(xdp.BindCopy, nwOff)
		if inUse(cp) {
			return allInUse(cp)
		}
		if cp != nil && !nwOff && try(xdp.BindCopy, true) == nil {
			nw, cp = cp, nil // refused only with the need_wakeup flag
		}
	}
	afxdp := cp
	if zc == nil {
		afxdp = nil
	}
	var out []Feature
	mark := func(n string, err error) {
		if err != nil && !errors.Is(err, bpf.ErrForcedOff) {
			err = RefusedErr{err}
		}
		out = append(out, FeatureFromErr(n, "interface", err))
	}
	mark(bpf.FeatAFXDP, afxdp)
	if afxdp != nil {
		out = append(out, UnknownFeature(bpf.FeatAFXDPZeroCopy, "not probed: no AF_XDP bind"),
			UnknownFeature(bpf.FeatAFXDPNeedWakeup, "not probed: no AF_XDP bind"))
		return out
	}
	mark(bpf.FeatAFXDPZeroCopy, zc)
	if nwOff {
		nw = bpf.ForcedErr(bpf.FeatAFXDPNeedWakeup)
	}
	mark(bpf.FeatAFXDPNeedWakeup, nw)
	return out
}
