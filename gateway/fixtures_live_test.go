package gateway

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/metrics"
	"github.com/xgate/xgate/packet"
	"github.com/xgate/xgate/packet/packettest"
	"github.com/xgate/xgate/testenv"
)

// TestFixturesLive sends every row of the shared packet table, as raw
// frames, into a running gateway in each mode and checks, row by row,
// the XDP outcome (afxdp, socket) and, at the end, that the identity
// balances: every frame in exactly one term, unaccounted 0.
func TestFixturesLive(t *testing.T) {
	for _, mode := range []config.Mode{config.ModeAFXDP, config.ModeSocket, config.ModePlain} {
		t.Run(mode.String(), func(t *testing.T) { runFixturesLive(t, mode) })
	}
}

// liveOutcome is the XDP reason a row must land in on mode's path: the
// table's, with survivors redirected on the afxdp path; on the socket
// path (IPv4 sockets, no VLAN device on the host, so no VLAN served) IPv6
// and tagged datagrams to our port are not served.
func liveOutcome(fx packettest.Fixture, mode config.Mode) string {
	r := fx.XDP
	toUs := fx.Parse == packet.UDP && fx.Frame.DstPort == packettest.Port
	if mode == config.ModeSocket && toUs {
		switch {
		case len(fx.Frame.VLANs) > 0:
			return "vlan_not_served"
		case fx.Frame.Src.Is6():
			return "ipv6_not_served"
		}
	}
	if r == "pass_socket" && mode == config.ModeAFXDP {
		return "redirect"
	}
	return r
}

func runFixturesLive(t *testing.T, mode config.Mode) {
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	a, b := pair.A, pair.B
	yml := "interface: " + b.Link + "\nmode: " + mode.String() + "\n" +
		"listen: {ports: [9000], vlans: [100]}\nhttp: {listen: \"\"}\n"
	if mode == config.ModeSocket {
		yml = "interface: " + b.Link + "\nmode: socket\nlisten: {ports: [9000]}\nhttp: {listen: \"\"}\n"
	}
	if mode == config.ModePlain {
		yml = "mode: plain\nlisten: {ports: [9000], address: " + b.Addr.String() + "}\nhttp: {listen: \"\"}\n"
	}
	cfg, err := config.Parse("live.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pin.Path = ""
	g, stop := startGateway(t, b, cfg)

	fd, err := a.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: a.Ifindex, Halen: 6}
	copy(to.Addr[:], b.MAC)

	var sent, plainWant uint64
	for _, fx := range packettest.Fixtures {
		f := fx.Frame
		f.SrcMAC, f.DstMAC = a.MAC, b.MAC
		if f.Src.Is4() {
			f.Src, f.Dst = a.Addr, b.Addr
		}
		frame := f.Bytes()
		before, err := g.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Sendto(fd, frame, 0, to); err != nil {
			t.Fatalf("%s: send: %v", fx.Name, err)
		}
		sent++
		if mode == config.ModePlain {
			if fx.XDP == "pass_socket" && f.Src.Is4() && len(f.VLANs) == 0 {
				plainWant++
			}
			continue
		}
		want := liveOutcome(fx, mode)
		var got string
		for deadline := time.Now().Add(2 * time.Second); got == "" && time.Now().Before(deadline); {
			s, _ := g.Stats()
			for r := bpf.Reason(0); r < bpf.ReasonTerminal; r++ {
				if s.XDP[r].Packets > before.XDP[r].Packets {
					got = r.String()
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		if got != want {
			t.Errorf("%s: XDP outcome %q, want %q", fx.Name, got, want)
		}
	}

	// Everything handed up is decided (or counted) before the stop.
	deadline := time.Now().Add(3 * time.Second)
	for {
		s, _ := g.Stats()
		if mode == config.ModePlain && s.Datagrams >= plainWant || mode != config.ModePlain && s.Unaccounted() == 0 ||
			time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	acc := metrics.AccountingOf(&s)
	t.Logf("%s: sent %d frames: %+v", mode, sent, acc)
	if acc.Unaccounted != 0 {
		t.Errorf("unaccounted %d: %+v", acc.Unaccounted, acc)
	}
	if mode == config.ModePlain {
		if s.Datagrams != plainWant {
			t.Errorf("plain: %d datagrams reached the sockets, want %d", s.Datagrams, plainWant)
		}
		return
	}
	if s.XDPSeen != sent {
		t.Errorf("XDP saw %d frames, %d sent", s.XDPSeen, sent)
	}
	// Each row's events beside the identity: a datagram of three events
	// decided as one datagram and three events.
	var events uint64
	for _, fx := range packettest.Fixtures {
		if o := liveOutcome(fx, mode); o == "redirect" || o == "pass_socket" {
			events += uint64(fx.Events)
		}
	}
	if got := s.Engine.Events + s.Engine.DecodeErrorTotal(); got != events {
		t.Errorf("events decided or rejected %d, want %d", got, events)
	}

}
