package preflight

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"
)

func capsOf(cs ...host.Capability) host.CapSet {
	var s host.CapSet
	for _, c := range cs {
		s |= 1 << c
	}
	return s
}

// TestCapSteps: each path asks for exactly its steps' capabilities, and
// removing any one of them is an error that names it and its step.
func TestCapSteps(t *testing.T) {
	cfg := config.Default()
	cfg.Workers.RealtimePriority = 0
	want := map[config.Mode][]host.Capability{
		config.ModeAFXDP:  {host.CapBPF, host.CapPerfmon, host.CapNetAdmin, host.CapNetRaw},
		config.ModeSocket: {host.CapBPF, host.CapPerfmon, host.CapNetAdmin},
		config.ModePlain:  {},
	}
	for path, caps := range want {
		steps := CapSteps(cfg, path)
		var union host.CapSet
		for _, s := range steps {
			if !s.Optional {
				union |= capsOf(s.Caps...)
			}
		}
		if union != capsOf(caps...) {
			t.Errorf("%s: required %v, want %v", path, union.Names(), capsOf(caps...).Names())
		}
		if err, warn := host.CheckCaps(steps, capsOf(caps...)|capsOf(host.CapPerfmon, host.CapBPF)); err != nil || len(warn) > 0 {
			t.Errorf("%s with every capability: %v %v", path, err, warn)
		}
		for _, c := range caps {
			err, _ := host.CheckCaps(steps, capsOf(caps...)&^capsOf(c))
			var ce *host.CapabilityError
			if !errors.As(err, &ce) || !errors.Is(err, os.ErrPermission) {
				t.Fatalf("%s without %v: %v, want a *host.CapabilityError", path, c, err)
			}
			if !strings.Contains(err.Error(), c.String()+" (to ") {
				t.Errorf("%s without %v: %q does not name it", path, c, err)
			}
			if len(ce.Missing) == 0 || ce.Missing[0].Cap != c {
				t.Errorf("%s without %v: missing %v", path, c, ce.Missing)
			}
		}
	}
	// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as in the kernel.
	if err, _ := host.CheckCaps(CapSteps(cfg, config.ModeAFXDP), capsOf(host.CapSysAdmin, host.CapNetAdmin, host.CapNetRaw)); err != nil {
		t.Errorf("CAP_SYS_ADMIN for CAP_BPF and CAP_PERFMON: %v", err)
	}
	// The probes are optional: a warning naming the capability, no error.
	err, warn := host.CheckCaps(CapSteps(cfg, config.ModePlain), 0)
	if err != nil || len(warn) != 1 || !strings.Contains(warn[0], "CAP_BPF and CAP_PERFMON") {
		t.Errorf("plain without capabilities: %v, warnings %q", err, warn)
	}
	cfg.Probes.Enabled = false
	if err, warn := host.CheckCaps(CapSteps(cfg, config.ModePlain), 0); err != nil || len(warn) != 0 {
		t.Errorf("plain without probes: %v %q", err, warn)
	}
	// SCHED_FIFO beyond RLIMIT_RTPRIO needs CAP_SYS_NICE.
	cfg.Workers.RealtimePriority = int(min(host.RtprioLimit()+1, host.MaxRealtimePriority))
	if host.RtprioLimit() < uint64(cfg.Workers.RealtimePriority) {
		err, _ := host.CheckCaps(CapSteps(cfg, config.ModePlain), 0)
		if err == nil || !strings.Contains(err.Error(), "CAP_SYS_NICE (to make the workers SCHED_FIFO)") {
			t.Errorf("realtime without CAP_SYS_NICE: %v", err)
		}
	}
}

func TestCapSetNames(t *testing.T) {
	if got := strings.Join(capsOf(host.CapNetAdmin, host.CapBPF).Names(), " "); got != "CAP_NET_ADMIN CAP_BPF" {
		t.Errorf("names %q", got)
	}
	if n := host.CapSet(0).Names(); len(n) != 0 {
		t.Errorf("empty set names %v", n)
	}
}
