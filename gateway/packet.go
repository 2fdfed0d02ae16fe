package gateway

import (
	"encoding/binary"
	"net/netip"

	"github.com/xgate/xgate/xdp"

	"github.com/xgate/xgate/packet"
)

// udpPayload finds the UDP payload and source address and port of a frame the XDP
// program redirected to AF_XDP, with the repository's one parser (package
// packet), which makes the program's checks step by step. ok is false for
// anything else; the program only redirects frames that pass those checks,
// so that means a program and gateway out of step, and the worker counts
// it. The payload is a view into frame, cut to the UDP length.
func udpPayload(frame []byte) (payload []byte, src netip.AddrPort, ok bool) {
	d, o := packet.ParseUDP(frame)
	return d.Payload, netip.AddrPortFrom(d.Src, d.SrcPort), o == packet.UDP
}

// handedPayload is udpPayload without parsing: the XDP program handed the
// payload and source offsets over in the frame's stamp (xdp.Meta). The
// offsets are checked against the frame, so a stamp out of step with the
// frame (another program's, or a bug) falls back to parsing rather than
// reading out of bounds.
func handedPayload(frame []byte, m *xdp.Meta) (payload []byte, src netip.AddrPort, ok bool) {
	off, so := int(m.PayloadOff), int(m.SrcOff)
	if !m.OK || off < 8 || off > len(frame) {
		return udpPayload(frame)
	}
	udp := frame[off-8 : off]
	end := off - 8 + int(binary.BigEndian.Uint16(udp[4:6])) // UDP length
	port := binary.BigEndian.Uint16(udp[0:2])
	switch {
	case end < off || end > len(frame):
		return udpPayload(frame)
	case m.V6 && so+16 <= off-8:
		return frame[off:end:end], netip.AddrPortFrom(netip.AddrFrom16([16]byte(frame[so:so+16])), port), true
	case !m.V6 && so+4 <= off-8:
		return frame[off:end:end], netip.AddrPortFrom(netip.AddrFrom4([4]byte(frame[so:so+4])), port), true
	}
	return udpPayload(frame)
}
