package packet

import (
	"encoding/binary"
	"net/netip"
)

// Outcome is what ParseUDP found in a frame. The names are those of the
// XDP program's terminal reasons for the same frame (enum xgate_reason in
// bpf/xgate.h), so a fixture can hold both to one expectation.
type Outcome uint8

const (
	// UDP: a whole UDP datagram (Datagram is valid).
	UDP Outcome = iota
	// Not ours to parse (the program passes these to the stack).
	NotIP       // ethertype neither IPv4 nor IPv6
	VLANTooDeep // more than MaxVLANs tags
	NotUDP      // IP, but not UDP
	Fragment    // IPv4 fragment (first or later)
	IPv6ExtHdr  // IPv6 extension header before L4
	// Malformed: truncated or impossible headers (the program drops these).
	MalformedEth
	MalformedVLAN
	MalformedIPv4 // truncated, version != 4, IHL < 5, total length outside the frame
	MalformedIPv6 // truncated, version != 6, payload length outside the frame
	MalformedUDP  // truncated, UDP length < 8 or beyond the IP payload
)

var outcomeNames = [...]string{
	UDP: "udp", NotIP: "not_ip", VLANTooDeep: "vlan_too_deep", NotUDP: "not_udp",
	Fragment: "ipv4_fragment", IPv6ExtHdr: "ipv6_ext_hdr",
	MalformedEth: "malformed_eth", MalformedVLAN: "malformed_vlan", MalformedIPv4: "malformed_ipv4",
	MalformedIPv6: "malformed_ipv6", MalformedUDP: "malformed_udp",
}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome?"
}

// Malformed says whether the program drops frames of this outcome as
// malformed.
func (o Outcome) Malformed() bool { return o >= MalformedEth }

// Datagram is what ParseUDP found in a frame with outcome UDP. Payload is
// a view into the frame (no copy): valid as long as the frame is.
type Datagram struct {
	Src, Dst         netip.Addr // IPv4 addresses are plain IPv4 (not v4-mapped)
	SrcPort, DstPort uint16
	// VLANs is the number of tags; OuterVID the VLAN ID of the outer one.
	VLANs    int
	OuterVID uint16
	// PayloadOff is the offset of Payload in the frame.
	PayloadOff int
	Payload    []byte
}

// ParseUDP finds the UDP datagram of an Ethernet frame: Ethernet, up to
// MaxVLANs tags, IPv4 (with options, not a fragment) or IPv6 (without
// extension headers), UDP. The IP length fields must lie inside the frame
// and the UDP length inside the IP payload; the payload is cut to the UDP
// length, so Ethernet padding is not taken for data. These are the
// checks of the XDP program, step by step: a frame the program redirects
// parses here as UDP. It allocates nothing.
func ParseUDP(frame []byte) (d Datagram, o Outcome) {
	if len(frame) < EthLen {
		return d, MalformedEth
	}
	off := 12
	proto := binary.BigEndian.Uint16(frame[off:])
	off += 2
	for proto == EtherType8021Q || proto == EtherType8021AD {
		if d.VLANs == MaxVLANs {
			return d, VLANTooDeep
		}
		if len(frame) < off+VLANLen {
			return d, MalformedVLAN
		}
		if d.VLANs == 0 {
			d.OuterVID = binary.BigEndian.Uint16(frame[off:]) & 0x0FFF
		}
		proto = binary.BigEndian.Uint16(frame[off+2:])
		off += VLANLen
		d.VLANs++
	}
	var l4, ipEnd int
	switch proto {
	case EtherTypeIPv4:
		if len(frame) < off+IPv4Len || frame[off]>>4 != 4 {
			return d, MalformedIPv4
		}
		ihl := int(frame[off]&0x0f) * 4
		if ihl < IPv4Len || len(frame) < off+ihl {
			return d, MalformedIPv4
		}
		total := int(binary.BigEndian.Uint16(frame[off+2:]))
		if total < ihl || off+total > len(frame) {
			return d, MalformedIPv4
		}
		if binary.BigEndian.Uint16(frame[off+6:])&(IPv4MF|IPv4OffsetMask) != 0 {
			return d, Fragment
		}
		if frame[off+9] != ProtoUDP {
			return d, NotUDP
		}
		d.Src = netip.AddrFrom4([4]byte(frame[off+12 : off+16]))
		d.Dst = netip.AddrFrom4([4]byte(frame[off+16 : off+20]))
		l4, ipEnd = off+ihl, off+total
	case EtherTypeIPv6:
		if len(frame) < off+IPv6Len || frame[off]>>4 != 6 {
			return d, MalformedIPv6
		}
		plen := int(binary.BigEndian.Uint16(frame[off+4:]))
		if off+IPv6Len+plen > len(frame) {
			return d, MalformedIPv6
		}
		switch next := frame[off+6]; next {
		case ProtoUDP:
		case 0, 43, 44, 51, 60, 135, 139, 140:
			return d, IPv6ExtHdr
		default:
			return d, NotUDP
		}
		d.Src = netip.AddrFrom16([16]byte(frame[off+8 : off+24])).Unmap()
		d.Dst = netip.AddrFrom16([16]byte(frame[off+24 : off+40])).Unmap()
		l4, ipEnd = off+IPv6Len, off+IPv6Len+plen
	default:
		return d, NotIP
	}
	if ipEnd < l4+UDPLen {
		return d, MalformedUDP
	}
	ulen := int(binary.BigEndian.Uint16(frame[l4+4:]))
	if ulen < UDPLen || l4+ulen > ipEnd {
		return d, MalformedUDP
	}
	d.SrcPort = binary.BigEndian.Uint16(frame[l4:])
	d.DstPort = binary.BigEndian.Uint16(frame[l4+2:])
	d.PayloadOff = l4 + UDPLen
	d.Payload = frame[l4+UDPLen : l4+ulen : l4+ulen]
	return d, UDP
}
