package gateway

import (
	"errors"
	"fmt"
	"strings"

	"github.com/xgate/xgate/engine/lists"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/preflight"

	"github.com/xgate/xgate/bpf"
)

// Step is one rung of the receive-path ladder New climbed down: AF_XDP
// native → AF_XDP generic → socket behind XDP → plain sockets. Mode auto
// steps down whenever the kernel or the NIC refuses a rung; the strict
// modes fail instead (generic XDP for native is allowed in every mode).
// The last step is the one taken.
type Step struct {
	Path    config.Mode    `json:"path"`               // afxdp | socket | plain
	XDPMode bpf.AttachMode `json:"xdp_mode,omitempty"` // native (refused) or the XDP mode taken; "" on plain
	OK      bool           `json:"ok"`                 // taken; false: refused
	Reason  string         `json:"reason"`             // why refused, or why taken
}

func (s Step) name() string {
	if s.XDPMode != "" {
		return s.Path.String() + " " + s.XDPMode.String()
	}
	return s.Path.String()
}

// Steps returns the receive-path steps New tried, the taken one last.
func (g *Gateway) Steps() []Step { return g.steps }

// refused records a refused step and logs the step down.
func (g *Gateway) refused(path config.Mode, xdpMode bpf.AttachMode, err error, next fmt.Stringer) {
	s := Step{Path: path, XDPMode: xdpMode, Reason: err.Error()}
	g.steps = append(g.steps, s)
	g.log.Warn("receive path: step down", "refused", s.name(), "reason", s.Reason, "next", next)
}

// strict says whether the configured mode forbids stepping down.
func strict(cfg *config.Config) bool {
	return cfg.Mode == config.ModeAFXDP || cfg.Mode == config.ModeSocket
}

// openPath sets up the path preflight.ChoosePath picked and, in mode auto, steps
// down the ladder when a step is refused, closing what the refused step
// opened. It returns the CPU of each worker.
func (g *Gateway) openPath(cfg *config.Config) ([]int, error) {
	if g.path != config.ModePlain {
		if err := g.setupXDP(cfg); err != nil {
			if strict(cfg) {
				return nil, err
			}
			g.refused(g.path, "", err, config.ModePlain)
			g.dropXDP()
			g.path = config.ModePlain
		}
	}
	if g.path == config.ModeAFXDP {
		cpus, err := g.openXSKs(cfg)
		if err == nil {
			if err = g.openMembership(cfg); err != nil {
				return nil, err
			}
			return cpus, nil
		}
		if strict(cfg) {
			return nil, err
		}
		g.closeXSKs()
		g.xsks = nil
		next := config.ModeSocket
		if p := preflight.PathProblems(cfg, config.ModeSocket); len(p) > 0 {
			next = config.ModePlain
			err = fmt.Errorf("%w; and the socket path: %s", err, strings.Join(p, "; "))
		}
		g.refused(config.ModeAFXDP, "", err, next)
		if next == config.ModeSocket {
			// The program stays attached; it now passes survivors to the
			// stack instead of redirecting them.
			if err := g.xdp.SetConfig(xdpConfig(cfg, config.ModeSocket)); err != nil {
				g.refused(config.ModeSocket, "", err, config.ModePlain)
				next = config.ModePlain
			}
		}
		if next == config.ModePlain {
			g.dropXDP()
		}
		g.path = next
	}
	cpus, err := g.openSockets(cfg)
	if err == nil || strict(cfg) || g.path == config.ModePlain {
		return cpus, err
	}
	g.refused(g.path, "", err, config.ModePlain)
	g.closeSockets()
	g.dropXDP()
	g.path = config.ModePlain
	return g.openSockets(cfg)
}

// finishSteps records the step taken and folds the refused ones into why.
func (g *Gateway) finishSteps() {
	var mode bpf.AttachMode
	if g.path != config.ModePlain {
		mode = g.xdpMode
	}
	if t := stepsText(g.steps); t != "" {
		g.why += "; stepped down: " + t
	}
	g.steps = append(g.steps, Step{Path: g.path, XDPMode: mode, OK: true, Reason: g.why})
}

// dropXDP detaches and closes the XDP program after a refused step.
func (g *Gateway) dropXDP() {
	var errs []error
	if g.xdpLink != nil {
		errs = append(errs, g.xdpLink.Close())
		g.xdpLink = nil
	}
	if g.xdp != nil {
		if !g.Config().Pin.Keep {
			errs = append(errs, g.xdp.Unpin())
		}
		errs = append(errs, g.xdp.Close())
		g.xdp = nil
	}
	g.xdpMode = ""
	g.xdpBase = bpf.Counters{}
	if err := errors.Join(errs...); err != nil {
		g.log.Warn("closing the refused step's XDP program", "error", err)
	}
}

// closeSockets closes the socket group after a refused step.
func (g *Gateway) closeSockets() {
	for _, s := range g.sockets {
		_ = s.close()
	}
	g.sockets = nil
	if g.reuse != nil {
		if !g.Config().Pin.Keep {
			_ = g.reuse.Unpin()
		}
		_ = g.reuse.Close()
		g.reuse = nil
	}
}

// cidrLists are the XDP program's CIDR lists of cfg (config.CIDRLists).
func cidrLists(cfg *config.Config, data func(name string) *lists.ListData) []bpf.CIDRList {
	return cfg.CIDRLists(data)
}

// xdpConfig is the XDP program's run-time policy for path (config.XDPConfig).
func xdpConfig(cfg *config.Config, path config.Mode) bpf.Config { return cfg.XDPConfig(path) }
