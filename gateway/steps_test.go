package gateway

import (
	"strings"
	"testing"

	"github.com/xgate/xgate/gateway/config"
)

func TestConfigListenVLANs(t *testing.T) {
	c, err := config.Parse("v.yaml", []byte("listen: {ports: [9000], vlans: [100, 4094]}\n"))
	if err != nil || len(c.Listen.VLANs) != 2 || c.Listen.AnyVLAN {
		t.Fatalf("vlans [100, 4094]: %+v, %v", c.Listen, err)
	}
	if b := xdpConfig(c, config.ModeSocket); len(b.VLANs) != 2 || !b.NoIPv6 {
		t.Errorf("xdp config %+v: want the VLANs and no IPv6 (IPv4 sockets)", b)
	}
	c, err = config.Parse("v.yaml", []byte("listen: {ports: [9000], vlans: any, address: \"::\"}\n"))
	if err != nil || !c.Listen.AnyVLAN {
		t.Fatalf("vlans any: %+v, %v", c.Listen, err)
	}
	if b := xdpConfig(c, config.ModeSocket); !b.AnyVLAN || b.NoIPv6 {
		t.Errorf("xdp config %+v: want any VLAN and IPv6 served (\"::\")", b)
	}
	if b := xdpConfig(c, config.ModeAFXDP); b.NoIPv6 {
		t.Error("afxdp serves IPv6 whatever the address")
	}
	_, err = config.Parse("v.yaml", []byte("listen:\n  ports: [9000]\n  vlans: [100, 5000]\n"))
	if err == nil || !strings.Contains(err.Error(), "v.yaml:3") || !strings.Contains(err.Error(), "5000") {
		t.Errorf("VLAN 5000: %v", err)
	}
}
