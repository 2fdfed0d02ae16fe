// Package packettest is the packet fixture table of xgate, Katran style:
// each row a frame — valid, odd-but-valid, hostile at each layer, several
// events in one datagram, every drop class — with the exact outcome it
// must have. One table drives the XDP program's BPF_PROG_RUN tests
// (package bpf), the Go frame parser's tests (package packet) and the
// live accounting tests that send every row into a running gateway.
package packettest

import (
	"bytes"
	"net/netip"

	"github.com/xgate/xgate/packet"
)

// The fixtures' policy: what the XDP program is told before the rows run.
const (
	Port      = 9000 // the one listened port
	OtherPort = 9001
	VLAN      = 100 // the one served VLAN ID
	OtherVLAN = 200
)

// Addresses of the fixtures (benchmarking ranges, RFC 2544 / RFC 5180).
var (
	Src4 = netip.MustParseAddr("198.18.0.1")
	Dst4 = netip.MustParseAddr("198.18.0.2")
	Src6 = netip.MustParseAddr("2001:2::1")
	Dst6 = netip.MustParseAddr("2001:2::2")
)

// Event is a valid event of the default schema.
var Event = []byte(`{"event_id":"e-1","user_id":"u-1","amount":1.5,"event_type":"click"}`)

// Class groups the rows for the counts in the notes.
type Class string

const (
	Valid   Class = "valid"
	Odd     Class = "odd-but-valid"
	Hostile Class = "hostile"
	Policy  Class = "not ours by policy"
)

// Fixture is one row.
type Fixture struct {
	Name  string
	Class Class
	Frame packet.Frame
	// XDP is the name of the XDP program's terminal reason for the frame
	// under the fixtures' policy (Port listened, VLAN served, IPv6 served)
	// in socket mode: survivors are "pass_socket". Reason names are those
	// of bpf.Reason.String().
	XDP string
	// Parse is what packet.ParseUDP says.
	Parse packet.Outcome
	// Events is how many events a decoded datagram holds (survivors only).
	Events int
}

// Bytes builds the row's frame.
func (f Fixture) Bytes() []byte { return f.Frame.Bytes() }

// ByName returns the row called name; it panics on a name not in the table
// (a test's typo).
func ByName(name string) Fixture {
	for _, f := range Fixtures {
		if f.Name == name {
			return f
		}
	}
	panic("packettest: no fixture " + name)
}

func v4(mod func(*packet.Frame)) packet.Frame {
	f := packet.Frame{Src: Src4, Dst: Dst4, DstPort: Port, Payload: Event, Checksum: true}
	if mod != nil {
		mod(&f)
	}
	return f
}

func v6(mod func(*packet.Frame)) packet.Frame {
	f := packet.Frame{Src: Src6, Dst: Dst6, DstPort: Port, Payload: Event, UDPChecksum6: true}
	if mod != nil {
		mod(&f)
	}
	return f
}

// Tags returns VLAN tags with the VIDs vids, outermost first: 802.1Q,
// or 802.1ad for the outer tag of a stack.
func Tags(vids ...uint16) []packet.VLAN {
	var out []packet.VLAN
	for i, v := range vids {
		tpid := uint16(packet.EtherType8021Q)
		if i == 0 && len(vids) > 1 {
			tpid = packet.EtherType8021AD
		}
		out = append(out, packet.VLAN{TPID: tpid, VID: v})
	}
	return out
}

// Fixtures is the table.
var Fixtures = []Fixture{
	// Valid.
	{Name: "v4", Class: Valid, Frame: v4(nil), XDP: "pass_socket", Parse: packet.UDP, Events: 1},
	{Name: "v6", Class: Valid, Frame: v6(nil), XDP: "pass_socket", Parse: packet.UDP, Events: 1},
	{Name: "v4 on the served VLAN", Class: Valid, Frame: v4(func(f *packet.Frame) { f.VLANs = Tags(VLAN) }),
		XDP: "pass_socket", Parse: packet.UDP, Events: 1},
	{Name: "v6 on the served VLAN", Class: Valid, Frame: v6(func(f *packet.Frame) { f.VLANs = Tags(VLAN) }),
		XDP: "pass_socket", Parse: packet.UDP, Events: 1},
	{Name: "v4 802.1ad+802.1Q, served outer VLAN", Class: Valid, Frame: v4(func(f *packet.Frame) { f.VLANs = Tags(VLAN, 7) }),
		XDP: "pass_socket", Parse: packet.UDP, Events: 1},
	{Name: "three events in one datagram", Class: Valid,
		Frame: v4(func(f *packet.Frame) { f.Payload = bytes.Join([][]byte{Event, Event, Event}, []byte("\n")) }),
		XDP:   "pass_socket", Parse: packet.UDP, Events: 3},

	// Odd but valid.
	{Name: "IPv4 options", Class: Odd, Frame: v4(func(f *packet.Frame) { f.Options = []byte{1, 1, 1, 0, 1, 1, 1, 0} }),
		XDP: "pass_socket", Parse: packet.UDP, Events: 1},
	{Name: "DF set", Class: Odd, Frame: v4(func(f *packet.Frame) { f.Frag = packet.IPv4DF }),
		XDP: "pass_socket", Parse: packet.UDP, Events: 1},
	{Name: "Ethernet padding after a short datagram", Class: Odd,
		Frame: v4(func(f *packet.Frame) { f.Payload = []byte(`{"a":1}`); f.Pad = 12 }),
		XDP:   "pass_socket", Parse: packet.UDP, Events: 1},
	{Name: "UDP length shorter than the IP payload", Class: Odd,
		Frame: v4(func(f *packet.Frame) {
			f.Payload = append([]byte(`{"a":1}`), "trailer"...)
			f.UDPLen = packet.UDPLen + 7
		}),
		XDP: "pass_socket", Parse: packet.UDP, Events: 1},
	{Name: "TTL 1", Class: Odd, Frame: v4(func(f *packet.Frame) { f.TTL = 1 }),
		XDP: "pass_socket", Parse: packet.UDP, Events: 1},

	// Hostile, layer by layer.
	{Name: "truncated VLAN tag", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.VLANs = Tags(VLAN); f.Truncate = 16 }),
		XDP: "malformed_vlan", Parse: packet.MalformedVLAN},
	{Name: "truncated inner VLAN tag", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.VLANs = Tags(VLAN, 7); f.Truncate = 20 }),
		XDP: "malformed_vlan", Parse: packet.MalformedVLAN},
	{Name: "three VLAN tags", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.VLANs = Tags(VLAN, 7, 8) }),
		XDP: "vlan_too_deep", Parse: packet.VLANTooDeep},
	{Name: "truncated IPv4 header", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.Truncate = 14 + 10 }),
		XDP: "malformed_ipv4", Parse: packet.MalformedIPv4},
	{Name: "IPv4 IHL < 5", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.IHL = 4 }),
		XDP: "malformed_ipv4", Parse: packet.MalformedIPv4},
	{Name: "IPv4 options beyond the frame", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.IHL = 15; f.Payload = nil }),
		XDP: "malformed_ipv4", Parse: packet.MalformedIPv4},
	{Name: "IPv4 ethertype, version 6", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.IPVersion = 6 }),
		XDP: "malformed_ipv4", Parse: packet.MalformedIPv4},
	{Name: "IPv4 total length beyond the frame", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.IPLen = 1400 }),
		XDP: "malformed_ipv4", Parse: packet.MalformedIPv4},
	{Name: "IPv4 total length below the header", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.IPLen = 12 }),
		XDP: "malformed_ipv4", Parse: packet.MalformedIPv4},
	{Name: "IPv4 total length cuts the UDP header", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.IPLen = packet.IPv4Len + 4 }),
		XDP: "malformed_udp", Parse: packet.MalformedUDP},
	{Name: "truncated UDP header", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.Truncate = packet.HeaderLen - 1; f.IPLen = 27 }),
		XDP: "malformed_udp", Parse: packet.MalformedUDP},
	{Name: "UDP length < 8", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.UDPLen = 7 }),
		XDP: "malformed_udp", Parse: packet.MalformedUDP},
	{Name: "UDP length beyond the IP payload", Class: Hostile, Frame: v4(func(f *packet.Frame) { f.UDPLen = 600 }),
		XDP: "malformed_udp", Parse: packet.MalformedUDP},
	{Name: "UDP length beyond the IP payload, padded frame", Class: Hostile,
		Frame: v4(func(f *packet.Frame) { f.UDPLen = packet.UDPLen + len(Event) + 8; f.Pad = 16 }),
		XDP:   "malformed_udp", Parse: packet.MalformedUDP},
	{Name: "truncated IPv6 header", Class: Hostile, Frame: v6(func(f *packet.Frame) { f.Truncate = 14 + 39 }),
		XDP: "malformed_ipv6", Parse: packet.MalformedIPv6},
	{Name: "IPv6 ethertype, version 4", Class: Hostile, Frame: v6(func(f *packet.Frame) { f.IPVersion = 4 }),
		XDP: "malformed_ipv6", Parse: packet.MalformedIPv6},
	{Name: "IPv6 payload length beyond the frame", Class: Hostile, Frame: v6(func(f *packet.Frame) { f.IPLen = 1000 }),
		XDP: "malformed_ipv6", Parse: packet.MalformedIPv6},
	{Name: "IPv6 UDP length beyond the payload", Class: Hostile, Frame: v6(func(f *packet.Frame) { f.UDPLen = 500 }),
		XDP: "malformed_udp", Parse: packet.MalformedUDP},

	// Not ours: other protocols, fragments, extension headers.
	{Name: "ARP", Class: Policy, Frame: packet.Frame{EtherType: packet.EtherTypeARP}, XDP: "not_ip", Parse: packet.NotIP},
	{Name: "TCP SYN", Class: Policy, Frame: v4(func(f *packet.Frame) { f.Proto = packet.ProtoTCP }), XDP: "not_udp", Parse: packet.NotUDP},
	{Name: "ICMPv6", Class: Policy, Frame: v6(func(f *packet.Frame) { f.Proto = packet.ProtoICMP6 }), XDP: "not_udp", Parse: packet.NotUDP},
	{Name: "IPv4 first fragment", Class: Policy, Frame: v4(func(f *packet.Frame) { f.Frag = packet.IPv4MF }),
		XDP: "ipv4_fragment", Parse: packet.Fragment},
	{Name: "IPv4 later fragment", Class: Policy, Frame: v4(func(f *packet.Frame) { f.Frag = 185; f.NoL4 = true; f.IPLen = 0 }),
		XDP: "ipv4_fragment", Parse: packet.Fragment},
	{Name: "IPv6 hop-by-hop", Class: Policy, Frame: v6(func(f *packet.Frame) { f.HasV6Ext = true; f.V6Ext = 0 }),
		XDP: "ipv6_ext_hdr", Parse: packet.IPv6ExtHdr},
	{Name: "IPv6 fragment header", Class: Policy, Frame: v6(func(f *packet.Frame) { f.HasV6Ext = true; f.V6Ext = 44 }),
		XDP: "ipv6_ext_hdr", Parse: packet.IPv6ExtHdr},
	{Name: "another port", Class: Policy, Frame: v4(func(f *packet.Frame) { f.DstPort = OtherPort }),
		XDP: "port_not_listened", Parse: packet.UDP, Events: 1},
	{Name: "another port on another VLAN", Class: Policy, Frame: v4(func(f *packet.Frame) { f.DstPort = OtherPort; f.VLANs = Tags(OtherVLAN) }),
		XDP: "port_not_listened", Parse: packet.UDP, Events: 1},
	{Name: "our port on a VLAN not served", Class: Policy, Frame: v4(func(f *packet.Frame) { f.VLANs = Tags(OtherVLAN) }),
		XDP: "vlan_not_served", Parse: packet.UDP, Events: 1},
	{Name: "our port, VLAN not served behind a served inner tag", Class: Policy, Frame: v6(func(f *packet.Frame) { f.VLANs = Tags(OtherVLAN, VLAN) }),
		XDP: "vlan_not_served", Parse: packet.UDP, Events: 1},
}

// ByClass counts the rows per class.
func ByClass() map[Class]int {
	m := map[Class]int{}
	for _, f := range Fixtures {
		m[f.Class]++
	}
	return m
}
