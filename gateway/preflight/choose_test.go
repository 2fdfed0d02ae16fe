package preflight

import (
	"strings"
	"testing"

	"github.com/xgate/xgate/gateway/config"
)

// TestChoosePathWithoutBPF: the choices that need no look at the host —
// mode plain, and mode auto without an interface — take plain sockets and
// say why; only the strict modes count as configured paths.
func TestChoosePathWithoutBPF(t *testing.T) {
	c := config.Default()
	c.Mode = config.ModePlain
	if p, why, err := ChoosePath(c); err != nil || p != config.ModePlain || !strings.Contains(why, "configured (mode: plain)") {
		t.Errorf("plain: %q %q %v", p, why, err)
	}
	c.Mode, c.Interface = config.ModeAuto, ""
	if p, why, err := ChoosePath(c); err != nil || p != config.ModePlain || !strings.Contains(why, "no interface configured") {
		t.Errorf("auto without an interface: %q %q %v", p, why, err)
	}
	if p := PathProblems(c, config.ModePlain); p != nil {
		t.Errorf("plain has problems %q", p)
	}
	for mode, want := range map[config.Mode]config.Mode{config.ModeAFXDP: config.ModeAFXDP,
		config.ModeSocket: config.ModeSocket, config.ModeAuto: "", config.ModePlain: ""} {
		if got := ConfiguredPath(mode); got != want {
			t.Errorf("ConfiguredPath(%s) = %q, want %q", mode, got, want)
		}
	}
}
