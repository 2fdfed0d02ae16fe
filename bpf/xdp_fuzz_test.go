package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/xgate/xgate/packet"
	"github.com/xgate/xgate/packet/packettest"
)

// fuzzSeeds are frames the fixture table leaves out, for FuzzXDP to start
// from: frames cut at every layer boundary, each ethertype on a bare
// Ethernet header, IPv6 at the edges of its lengths and behind VLANs, the
// extension headers the program passes, and payloads at the edges of the
// payload check (blanks, '{' past the datagram, empty datagrams).
func fuzzSeeds() [][]byte {
	v4 := func(mod func(*packet.Frame)) []byte {
		f := packet.Frame{Src: packettest.Src4, Dst: packettest.Dst4, DstPort: packettest.Port, Payload: packettest.Event, Checksum: true}
		if mod != nil {
			mod(&f)
		}
		return f.Bytes()
	}
	v6 := func(mod func(*packet.Frame)) []byte {
		f := packet.Frame{Src: packettest.Src6, Dst: packettest.Dst6, DstPort: packettest.Port, Payload: packettest.Event, UDPChecksum6: true}
		if mod != nil {
			mod(&f)
		}
		return f.Bytes()
	}
	var seeds [][]byte
	// An Ethernet header alone, for each ethertype the program looks at.
	for _, et := range []uint16{0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806, 0x0000, 0xffff} {
		eth := v4(nil)[:packet.EthLen]
		seeds = append(seeds, append(eth[:12:12], byte(et>>8), byte(et)))
	}
	full4, full6 := v4(nil), v6(nil)
	for _, n := range []int{packet.EthLen + 1, packet.EthLen + 19, packet.EthLen + 20, packet.EthLen + 27, packet.EthLen + 28} {
		seeds = append(seeds, full4[:n])
	}
	for _, n := range []int{packet.EthLen + 1, packet.EthLen + 39, packet.EthLen + 40, packet.EthLen + 47, packet.EthLen + 48} {
		seeds = append(seeds, full6[:n])
	}
	seeds = append(seeds,
		// IPv6 behind VLANs, and the lengths at their edges.
		v6(func(f *packet.Frame) { f.VLANs = packettest.Tags(5) }),
		v6(func(f *packet.Frame) { f.VLANs = packettest.Tags(5, 6) }),
		v6(func(f *packet.Frame) { f.VLANs = packettest.Tags(5, 6, 7) }),
		v6(func(f *packet.Frame) { f.VLANs = packettest.Tags(5); f.Truncate = packet.EthLen + 4 + 20 }),
		v6(func(f *packet.Frame) { f.IPLen = 4 }),
		v6(func(f *packet.Frame) { f.IPLen = 8; f.UDPLen = 8 }),
		v6(func(f *packet.Frame) { f.UDPLen = 7 }),
		v6(func(f *packet.Frame) { f.UDPLen = -1 }),
		v6(func(f *packet.Frame) { f.Pad = 20 }),
		v6(func(f *packet.Frame) { f.HasV6Ext = true; f.V6Ext = 43 }),
		v6(func(f *packet.Frame) { f.HasV6Ext = true; f.V6Ext = 60 }),
		v6(func(f *packet.Frame) { f.HasV6Ext = true; f.V6Ext = 59 }),
		v6(func(f *packet.Frame) { f.DstPort = packettest.OtherPort }),
		// IPv4 corners.
		v4(func(f *packet.Frame) { f.UDPLen = -1 }),
		v4(func(f *packet.Frame) { f.Frag = packet.IPv4DF | packet.IPv4MF }),
		v4(func(f *packet.Frame) { f.Frag = 1 }),
		v4(func(f *packet.Frame) { f.Options = bytes.Repeat([]byte{1}, 40) }),
		v4(func(f *packet.Frame) { f.VLANs = packettest.Tags(5); f.Proto = packet.ProtoTCP }),
		v4(func(f *packet.Frame) { f.Payload = bytes.Repeat([]byte("x"), 1472) }),
		// The payload check: blanks before '{', too many blanks, nothing
		// but blanks, an empty datagram, and a '{' that lies after the
		// datagram (in bytes the IP length holds and the UDP length does
		// not, or in Ethernet padding): not the datagram's.
		v4(func(f *packet.Frame) { f.Payload = []byte(" \t\r\n{}") }),
		v4(func(f *packet.Frame) { f.Payload = append(bytes.Repeat([]byte(" "), 16), '{', '}') }),
		v4(func(f *packet.Frame) { f.Payload = append(bytes.Repeat([]byte(" "), 15), '{', '}') }),
		v4(func(f *packet.Frame) { f.Payload = []byte("   ") }),
		v4(func(f *packet.Frame) { f.Payload = []byte("[1]") }),
		v4(func(f *packet.Frame) { f.Payload = nil }),
		v4(func(f *packet.Frame) { f.Payload = []byte(`{"a":1}`); f.UDPLen = packet.UDPLen }),
		v4(func(f *packet.Frame) { f.Payload = []byte(` {"a":1}`); f.UDPLen = packet.UDPLen + 1 }),
		v6(func(f *packet.Frame) { f.Payload = []byte(`{"a":1}`); f.UDPLen = packet.UDPLen }),
	)
	// Padding that starts with '{' after an empty datagram.
	pad := v4(func(f *packet.Frame) { f.Payload = nil; f.Pad = 10 })
	pad[len(pad)-10] = '{'
	return append(seeds, pad)
}

// payloadIsJSON is the program's payload check on the datagram's payload:
// its first non-blank byte, within the first 16, is '{'.
func payloadIsJSON(p []byte) bool {
	for i := 0; i < len(p) && i < 16; i++ {
		switch p[i] {
		case '{':
			return true
		case ' ', '\t', '\r', '\n':
		default:
			return false
		}
	}
	return false
}

// FuzzXDP runs arbitrary frames through the XDP program (BPF_PROG_RUN),
// configured as the daemon's defaults do (payload check on, every VLAN
// served), and holds it to four things: each frame moves exactly one
// terminal reason, the verdict agrees with that reason's fate, the program
// and the Go parser (package packet, which the workers use) stop at the
// same layer for the same reason (not_ip, vlan_too_deep, not_udp,
// ipv4_fragment, ipv6_ext_hdr, malformed_*), and of a datagram the parser
// finds, the program passes one to our port exactly when its payload (the
// datagram's, not what follows it) passes the payload check, and one to
// another port as port_not_listened. Two more programs with listen.address
// set (IPv4, IPv6) must decide each frame alike, except that a datagram
// that reaches the policy is not_our_address unless it is to that address,
// in that family. Run it with
//
//	go test ./bpf/ -run '^$' -fuzz FuzzXDP -fuzztime 60s
//
// (as root); the seeds and the corpus under testdata/fuzz run as ordinary
// cases.
func FuzzXDP(f *testing.F) {
	for _, fx := range packettest.Fixtures {
		f.Add(fx.Bytes())
	}
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	x := xgLoad(f, Options{ListenPorts: []uint16{packettest.Port}, Config: Config{AnyVLAN: true, PayloadCheck: true}})
	// The same policy with listen.address set, one program per family.
	addrs := []netip.Addr{packettest.Dst4, packettest.Dst6}
	var at []*XDP
	for _, a := range addrs {
		at = append(at, xgLoad(f, Options{ListenPorts: []uint16{packettest.Port},
			Config: Config{AnyVLAN: true, PayloadCheck: true, Address: a}}))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < packet.EthLen {
			return // BPF_PROG_RUN refuses less than an Ethernet header
		}
		if len(frame) > 4000 {
			frame = frame[:4000]
		}
		reason := fuzzRun(t, x, frame)
		d, o := packet.ParseUDP(frame)
		switch {
		case o != packet.UDP:
			if o.String() != reason.String() {
				t.Fatalf("parser %v, program %v: % x", o, reason, frame)
			}
		case d.DstPort != packettest.Port:
			if reason != ReasonPortNotListened {
				t.Fatalf("parser finds a datagram to port %d, program says %v: % x", d.DstPort, reason, frame)
			}
		case multicast(d.Dst): // no group joined here
			if reason != ReasonGroupNotJoined {
				t.Fatalf("parser finds a datagram to our port and group %v, program says %v: % x", d.Dst, reason, frame)
			}
		case payloadIsJSON(d.Payload):
			if reason != ReasonPassSocket {
				t.Fatalf("parser finds a JSON datagram to our port, program says %v: % x", reason, frame)
			}
		default:
			if reason != ReasonPayloadNotJSON {
				t.Fatalf("parser finds a datagram to our port with payload %q, program says %v: % x", d.Payload, reason, frame)
			}
		}
		// With an address, a frame decides as without one up to the
		// address check, which only datagrams the policy would judge reach
		// (pass_socket or payload_not_json here): those to another address,
		// or of the other family, are not_our_address.
		for i, y := range at {
			want := reason
			if reason == ReasonPassSocket || reason == ReasonPayloadNotJSON {
				addr := addrs[i]
				v4 := binary.BigEndian.Uint16(frame[packet.EthLen-2+4*d.VLANs:]) == packet.EtherTypeIPv4
				if d.Dst != addr || v4 != addr.Is4() {
					want = ReasonNotOurAddress
				}
			}
			if got := fuzzRun(t, y, frame); got != want {
				t.Fatalf("listen.address %v: program says %v, want %v (%v without the address): % x", addrs[i], got, want, reason, frame)
			}
		}
	})
}

// multicast is the program's test of a destination: 224.0.0.0/4 in an IPv4
// header, ff00::/8 in an IPv6 one (a v4-mapped IPv6 address is no group).
func multicast(dst netip.Addr) bool {
	b := dst.As16()
	if dst.Is4() {
		return b[12]&0xf0 == 0xe0
	}
	return b[0] == 0xff
}

// fuzzRun runs frame through x once and returns the one terminal reason
// that moved, holding the verdict to that reason's fate.
func fuzzRun(t *testing.T, x *XDP, frame []byte) Reason {
	t.Helper()
	before := xgCounters(t, x)
	verdict, _, _ := xgRun(t, x.Program(), frame, xgLoIfindex, 0)
	after := xgCounters(t, x)
	var reason Reason
	moved := 0
	for r := Reason(0); r < ReasonTerminal; r++ {
		if after[r].Packets != before[r].Packets {
			moved++
			reason = r
		}
	}
	if moved != 1 {
		t.Fatalf("%d terminal reasons moved for one frame % x", moved, frame)
	}
	wantVerdict := uint32(xgPass)
	if reason.Fate() == FateDropped {
		wantVerdict = xgDrop
	}
	if verdict != wantVerdict {
		t.Fatalf("reason %v with verdict %d", reason, verdict)
	}
	return reason
}
