package gateway

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
)

// TestGatewayListenAddress runs the gateway with listen.address set to the
// test host's address on a host that has a second address, and sends
// events to our port at both: those to listen.address are decided, those
// to the second address are not for us, and the identity holds. afxdp: the
// XDP program passes them to the stack as not_our_address (before, it
// redirected them to the workers, which decided them). socket: the
// sockets' bind leaves them to the stack, which drops them (no socket),
// counted by the kfree_skb probe.
func TestGatewayListenAddress(t *testing.T) {
	for _, mode := range []string{"afxdp", "socket"} {
		t.Run(mode, func(t *testing.T) { runListenAddress(t, mode) })
	}
}

func runListenAddress(t *testing.T, mode string) {
	pair := testenv.New(t, testenv.Options{RxQueues: 2})
	second := addSecondAddress(t, pair)
	cfg := itConfig(t, pair.B.Link, mode, filepath.Join(t.TempDir(), "passed.ndjson"))
	cfg.Listen.Address = pair.B.Addr.String()
	g, stop := startGateway(t, pair.B, cfg)
	waitReady(t, g)
	if p, _ := g.Path(); string(p) != mode {
		t.Skipf("path %s, not %s, on this host", p, mode)
	}

	const perDst = 100
	for i := range perDst {
		for _, dst := range []netip.Addr{pair.B.Addr, second} {
			ev := fmt.Sprintf(`{"event_id":"a%d","user_id":"u%d","amount":5,"event_type":"click"}`, i, i%7)
			if _, err := pair.A.SendUDP(netip.AddrPortFrom(dst, itPort), []byte(ev), 1); err != nil {
				t.Fatalf("send to %v: %v", dst, err)
			}
		}
	}
	for deadline := time.Now().Add(10 * time.Second); g.Engine().Stats().Events < perDst; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events to the listen address decided after 10s", g.Engine().Stats().Events, perDst)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // one to the second address would come in now
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	st, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if n := g.Engine().Stats().Events; n != perDst {
		t.Errorf("%d events decided, want the %d sent to %v: the second address's were taken", n, perDst, pair.B.Addr)
	}
	notOurs := st.XDP[bpf.ReasonNotOurAddress].Packets
	switch mode {
	case "afxdp":
		if notOurs != perDst {
			t.Errorf("not_our_address %d, want the %d sent to %v", notOurs, perDst, second)
		}
	case "socket":
		if !st.KernelDropsKnown {
			t.Skip("no kfree_skb probe: the socket path's identity cannot be read")
		}
		if notOurs != 0 || st.KernelDrops != perDst {
			t.Errorf("not_our_address %d, kernel drops %d: want 0 and the %d sent to %v", notOurs, st.KernelDrops, perDst, second)
		}
	}
	if st.Unaccounted() != 0 {
		t.Errorf("unaccounted %d: seen %d, xdp dropped %d, not for us %d, survivors %d, kernel drops %d, decided %d",
			st.Unaccounted(), st.Seen(), st.XDPDrops, st.NotForUs, st.Survivors, st.KernelDrops, st.Decided)
	}
}

// addSecondAddress gives the test host B a second IPv4 address (a /32 on
// its veth, B's address in the other half of 198.18.0.0/15, outside the
// pair's /30) and A a route to it through B. Both live in the pair's namespaces and go with
// them.
func addSecondAddress(t *testing.T, pair *testenv.Pair) netip.Addr {
	t.Helper()
	b := pair.B.Addr.As4()
	b[1] ^= 1 // the pair's /30 is in one half, the address in the other
	second := netip.AddrFrom4(b)
	host := &net.IPNet{IP: second.AsSlice(), Mask: net.CIDRMask(32, 32)}
	if err := pair.B.Do(func() error {
		l, err := netlink.LinkByName(pair.B.Link)
		if err != nil {
			return err
		}
		return netlink.AddrAdd(l, &netlink.Addr{IPNet: host})
	}); err != nil {
		t.Fatalf("second address %v on %s: %v", second, pair.B.Link, err)
	}
	if err := pair.A.Do(func() error {
		l, err := netlink.LinkByName(pair.A.Link)
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: host, Gw: pair.B.Addr.AsSlice()})
	}); err != nil {
		t.Fatalf("route to %v via %v: %v", second, pair.B.Addr, err)
	}
	return second
}
