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
// to the second address are not for us, and the identity holds. In both
// modes the XDP program passes them to the stack as not_our_address
// (before, afxdp redirected them to the workers, which decided them, and
// socket mode passed them as survivors). The stack drops them (no socket
// there), and the kfree_skb probe, which counts drops to listen.address
// only, does not count them again. With another service's socket bound to
// the second address and our port, the stack delivers them to it: they
// are still not_our_address, and no survivor is left undecided.
func TestGatewayListenAddress(t *testing.T) {
	for _, mode := range []string{"afxdp", "socket"} {
		t.Run(mode, func(t *testing.T) { runListenAddress(t, mode, false) })
		t.Run(mode+"_other_service", func(t *testing.T) { runListenAddress(t, mode, true) })
	}
}

func runListenAddress(t *testing.T, mode string, otherService bool) {
	pair := testenv.New(t, testenv.Options{RxQueues: 2})
	second := addSecondAddress(t, pair)
	var other func() int // the other service's datagrams
	if otherService {
		other = listenOtherService(t, pair, netip.AddrPortFrom(second, itPort))
	}
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
	if notOurs := st.XDP[bpf.ReasonNotOurAddress].Packets; notOurs != perDst {
		t.Errorf("not_our_address %d, want the %d sent to %v", notOurs, perDst, second)
	}
	if mode == "socket" {
		if !st.KernelDropsKnown {
			t.Skip("no kfree_skb probe: the socket path's identity cannot be read")
		}
		// The stack dropped the second address's datagrams (no socket
		// there) or gave them to the other service: neither is ours.
		if st.KernelDrops != 0 {
			t.Errorf("kernel drops %d, want 0: the %d sent to %v are not_our_address, not ours to drop", st.KernelDrops, perDst, second)
		}
	}
	if st.Unaccounted() != 0 {
		t.Errorf("unaccounted %d: seen %d, xdp dropped %d, not for us %d, survivors %d, kernel drops %d, decided %d",
			st.Unaccounted(), st.Seen(), st.XDPDrops, st.NotForUs, st.Survivors, st.KernelDrops, st.Decided)
	}
	if other != nil {
		if n := other(); n != perDst {
			t.Errorf("the other service on %v received %d datagrams, want the %d sent to it", second, n, perDst)
		}
	}
}

// listenOtherService binds a UDP socket to at in B's namespace, as another
// service of the host on our port would, and counts what it receives; the
// function returned closes it and says how many it received.
func listenOtherService(t *testing.T, pair *testenv.Pair, at netip.AddrPort) func() int {
	t.Helper()
	var conn *net.UDPConn
	if err := pair.B.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(at))
		return err
	}); err != nil {
		t.Fatalf("other service on %v: %v", at, err)
	}
	n := make(chan int, 1)
	go func() {
		buf := make([]byte, 2048)
		k := 0
		for {
			if _, err := conn.Read(buf); err != nil {
				n <- k
				return
			}
			k++
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return func() int {
		conn.Close()
		return <-n
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
