package loadgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Header sizes of the frames the generator builds: Ethernet II, IPv4
// without options, UDP.
const (
	EthLen    = 14
	IPv4Len   = 20
	UDPLen    = 8
	HeaderLen = EthLen + IPv4Len + UDPLen
)

// FrameSpec is one Ethernet/IPv4/UDP datagram.
type FrameSpec struct {
	SrcMAC, DstMAC   net.HardwareAddr
	Src, Dst         netip.Addr // IPv4
	SrcPort, DstPort uint16
	ID               uint16 // IPv4 identification
	Payload          []byte
}

// AppendFrame appends the frame of s to buf: Ethernet II, IPv4 (TTL 64,
// DF, a correct header checksum) and UDP with checksum 0 (allowed for
// IPv4: "no checksum").
func AppendFrame(buf []byte, s FrameSpec) ([]byte, error) {
	if len(s.SrcMAC) != 6 || len(s.DstMAC) != 6 {
		return buf, errors.New("loadgen: frame needs 6-byte MAC addresses")
	}
	if !s.Src.Is4() || !s.Dst.Is4() {
		return buf, fmt.Errorf("loadgen: frame needs IPv4 addresses, got %v → %v", s.Src, s.Dst)
	}
	total := IPv4Len + UDPLen + len(s.Payload)
	if total > 0xffff {
		return buf, fmt.Errorf("loadgen: payload of %d bytes does not fit a datagram", len(s.Payload))
	}
	buf = append(buf, s.DstMAC...)
	buf = append(buf, s.SrcMAC...)
	buf = binary.BigEndian.AppendUint16(buf, 0x0800)

	ip := len(buf)
	buf = append(buf, 0x45, 0) // version 4, IHL 5; DSCP/ECN 0
	buf = binary.BigEndian.AppendUint16(buf, uint16(total))
	buf = binary.BigEndian.AppendUint16(buf, s.ID)
	buf = binary.BigEndian.AppendUint16(buf, 0x4000) // DF, offset 0
	buf = append(buf, 64, 17, 0, 0)                  // TTL, UDP, checksum (below)
	src, dst := s.Src.As4(), s.Dst.As4()
	buf = append(buf, src[:]...)
	buf = append(buf, dst[:]...)
	binary.BigEndian.PutUint16(buf[ip+10:], Checksum(buf[ip:ip+IPv4Len]))

	buf = binary.BigEndian.AppendUint16(buf, s.SrcPort)
	buf = binary.BigEndian.AppendUint16(buf, s.DstPort)
	buf = binary.BigEndian.AppendUint16(buf, uint16(UDPLen+len(s.Payload)))
	buf = binary.BigEndian.AppendUint16(buf, 0)
	return append(buf, s.Payload...), nil
}

// Checksum is the Internet checksum (RFC 1071) of b. Over an IPv4 header
// whose checksum field holds the right value it is 0.
func Checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
