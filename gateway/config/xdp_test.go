package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine/lists"
)

func TestConfigListenVLANs(t *testing.T) {
	c, err := Parse("v.yaml", []byte("listen: {ports: [9000], vlans: [100, 4094]}\n"))
	if err != nil || len(c.Listen.VLANs) != 2 || c.Listen.AnyVLAN {
		t.Fatalf("vlans [100, 4094]: %+v, %v", c.Listen, err)
	}
	if b := c.XDPConfig(ModeSocket); len(b.VLANs) != 2 || !b.NoIPv6 {
		t.Errorf("xdp config %+v: want the VLANs and no IPv6 (IPv4 sockets)", b)
	}
	c, err = Parse("v.yaml", []byte("listen: {ports: [9000], vlans: any, address: \"::\"}\n"))
	if err != nil || !c.Listen.AnyVLAN {
		t.Fatalf("vlans any: %+v, %v", c.Listen, err)
	}
	if b := c.XDPConfig(ModeSocket); !b.AnyVLAN || b.NoIPv6 {
		t.Errorf("xdp config %+v: want any VLAN and IPv6 served (\"::\")", b)
	}
	if b := c.XDPConfig(ModeAFXDP); b.NoIPv6 {
		t.Error("afxdp serves IPv6 whatever the address")
	}
	_, err = Parse("v.yaml", []byte("listen:\n  ports: [9000]\n  vlans: [100, 5000]\n"))
	if err == nil || !strings.Contains(err.Error(), "v.yaml:3") || !strings.Contains(err.Error(), "5000") {
		t.Errorf("VLAN 5000: %v", err)
	}
}

// TestConfigListenAddressXDP: listen.address reaches the XDP program on
// every path ("" is the zero address: any); on the socket path it also
// says whether the sockets serve IPv6.
func TestConfigListenAddressXDP(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		want   netip.Addr
		noIPv6 bool // socket path
	}{
		{"", netip.Addr{}, true},
		{"0.0.0.0", netip.IPv4Unspecified(), true},
		{"::", netip.IPv6Unspecified(), false},
		{"198.18.0.2", netip.MustParseAddr("198.18.0.2"), true},
		{"::ffff:198.18.0.2", netip.MustParseAddr("::ffff:198.18.0.2"), true},
		{"2001:2::2", netip.MustParseAddr("2001:2::2"), false},
	} {
		c, err := Parse("a.yaml", []byte(fmt.Sprintf("listen: {ports: [9000], address: %q}\n", tc.addr)))
		if err != nil {
			t.Fatalf("address %q: %v", tc.addr, err)
		}
		for _, m := range []Mode{ModeAFXDP, ModeSocket, ModePlain} {
			b := c.XDPConfig(m)
			if b.Address != tc.want {
				t.Errorf("address %q, %s: program's address %v, want %v", tc.addr, m, b.Address, tc.want)
			}
			if want := tc.noIPv6 && m != ModeAFXDP; b.NoIPv6 != want {
				t.Errorf("address %q, %s: NoIPv6 %v, want %v", tc.addr, m, b.NoIPv6, want)
			}
		}
	}
}

// TestXDPBurstDefault: xdp.rate_limit without a burst gives a bucket of one
// second's worth, as documented, not of one packet.
func TestXDPBurstDefault(t *testing.T) {
	cfg, err := Parse("b.yaml", []byte("listen: {ports: [9000]}\nxdp: {rate_limit: {rate: 100/s}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b := cfg.XDPConfig(ModeSocket); b.BucketRate != 100 || b.BucketBurst != 100 {
		t.Errorf("rate %d burst %d, want 100 and 100", b.BucketRate, b.BucketBurst)
	}
	cfg.XDP.RateLimit.Burst = 5
	if b := cfg.XDPConfig(ModeSocket); b.BucketBurst != 5 {
		t.Errorf("burst %d, want the configured 5", b.BucketBurst)
	}
}

// TestCIDRLists: the XDP program's lists in order, named, each prefix once
// per action (a later list of the same action leaves it out).
func TestCIDRLists(t *testing.T) {
	c := Default()
	c.XDP.NeverBlock = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	c.XDP.NeverBlockLists = []string{"partners"}
	c.XDP.DropLists = []string{"bad"}
	data := map[string]string{"partners": "10.0.0.0/8\n192.0.2.0/24\n", "bad": "10.0.0.0/8\n"}
	got := c.CIDRLists(func(name string) *lists.ListData {
		d, err := lists.ParseList(lists.ListCIDR, lists.FormatLines, []byte(data[name]), lists.ListLimits{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
	var text []string
	for _, l := range got {
		text = append(text, fmt.Sprintf("%s/%v:%v", l.Name, l.Action, l.Prefixes))
	}
	want := []string{
		fmt.Sprintf("never_block/%v:[10.0.0.0/8]", bpf.CIDRNeverBlock),
		fmt.Sprintf("drop/%v:[]", bpf.CIDRDrop),
		fmt.Sprintf("partners/%v:[192.0.2.0/24]", bpf.CIDRNeverBlock),
		fmt.Sprintf("bad/%v:[10.0.0.0/8]", bpf.CIDRDrop),
	}
	if !slices.Equal(text, want) {
		t.Errorf("got %q\nwant %q", text, want)
	}
}
