package gateway

import (
	"net/netip"

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
