package gateway

import (
	"encoding/binary"
	"net/netip"
)

// udpPayload finds the UDP payload and source address of an Ethernet
// frame as the XDP program passed it to AF_XDP: Ethernet, up to two VLAN
// tags, IPv4 (with options) or IPv6 (no extension headers: the program
// passes those to the stack), UDP. ok is false for anything else; the
// program only redirects frames it parsed, so that means a program and
// gateway out of step, and the worker counts it.
//
// The payload is a view into frame and is cut to the UDP length, so
// Ethernet padding of short frames is not taken for data.
func udpPayload(frame []byte) (payload []byte, src netip.Addr, ok bool) {
	const eth = 14
	if len(frame) < eth {
		return nil, src, false
	}
	off := 12
	proto := binary.BigEndian.Uint16(frame[off:])
	off += 2
	for tags := 0; (proto == 0x8100 || proto == 0x88a8) && tags < 2; tags++ {
		if len(frame) < off+4 {
			return nil, src, false
		}
		proto = binary.BigEndian.Uint16(frame[off+2:])
		off += 4
	}
	var l4 int
	switch proto {
	case 0x0800:
		if len(frame) < off+20 || frame[off]>>4 != 4 {
			return nil, src, false
		}
		ihl := int(frame[off]&0x0f) * 4
		if ihl < 20 || len(frame) < off+ihl || frame[off+9] != 17 {
			return nil, src, false
		}
		if binary.BigEndian.Uint16(frame[off+6:])&0x3fff != 0 { // MF or offset: a fragment
			return nil, src, false
		}
		src = netip.AddrFrom4([4]byte(frame[off+12 : off+16]))
		l4 = off + ihl
	case 0x86dd:
		if len(frame) < off+40 || frame[off]>>4 != 6 || frame[off+6] != 17 {
			return nil, src, false
		}
		src = netip.AddrFrom16([16]byte(frame[off+8 : off+24])).Unmap()
		l4 = off + 40
	default:
		return nil, src, false
	}
	if len(frame) < l4+8 {
		return nil, src, false
	}
	ulen := int(binary.BigEndian.Uint16(frame[l4+4:]))
	if ulen < 8 || l4+ulen > len(frame) {
		return nil, src, false
	}
	return frame[l4+8 : l4+ulen], src, true
}
