package gateway

import (
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/preflight"

	"github.com/xgate/xgate/gateway/host"
)

// Least privilege. Every setup step names the capabilities it needs
// (preflight.CapSteps); New checks exactly those (not uid 0) before it
// touches anything, and after setup host.DropCapabilities gives up every
// capability on every thread and sets no_new_privs: reload, feedback, stats and stop work through the file
// descriptors the daemon already holds (map updates and lookups, link and
// socket closes need no capability since Linux 6.5 moved the
// unprivileged-BPF check into map and program creation), and unpinning is
// an unlink in a pin directory the daemon's user owns.

// checkCaps is New's check of the path's steps: a *host.CapabilityError for a
// missing required capability, a warning logged for an optional one.
func (g *Gateway) checkCaps(cfg *config.Config, path config.Mode) error {
	have, err := host.EffectiveCaps()
	if err != nil {
		g.log.Warn("cannot read this process's capabilities; the setup steps will say what they lack", "error", err)
		return nil
	}
	err, warnings := host.CheckCaps(preflight.CapSteps(cfg, path), have)
	for _, w := range warnings {
		g.log.Warn(w)
	}
	return err
}

// dropCaps is Run's drop after setup. A failure is logged, not fatal: the
// gateway works as before, with the privileges it was given.
func (g *Gateway) dropCaps() {
	if err := host.DropCapabilities(0); err != nil {
		g.log.Warn("capabilities not dropped after setup; the daemon keeps the ones it was started with", "error", err)
		return
	}
	g.log.Info("capabilities dropped after setup", "effective", "none", "no_new_privs", true)
}
