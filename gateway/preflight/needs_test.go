package preflight

import (
	"testing"

	"github.com/xgate/xgate/gateway/config"
)

func TestNeedsFor(t *testing.T) {
	c := config.Default()
	n := NeedsFor(c, false)
	if !n.BPF || !n.NetAdmin || !n.NetRaw || n.Probes || n.PinPath != config.DefaultPinPath || n.UMEMBytes != 8192*4096 {
		t.Errorf("auto: %+v", n)
	}
	c.Mode, c.Queues = config.ModeSocket, 4
	if n := NeedsFor(c, true); n.NetRaw || n.UMEMBytes != 0 || !n.Probes {
		t.Errorf("socket: %+v", n)
	}
	c.Mode = config.ModeAFXDP
	if n := NeedsFor(c, false); n.UMEMBytes != 4*8192*4096 {
		t.Errorf("afxdp, 4 queues: %+v", n)
	}
}
