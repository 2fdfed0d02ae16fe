// Package packet is the one Ethernet/VLAN/IPv4/IPv6/UDP codec of xgate:
// Frame builds frames (valid ones for the generator, and hostile ones for
// the tests: every field a broken frame gets wrong can be set), and
// ParseUDP finds the UDP datagram in a frame the way the XDP program
// (bpf/xdp.c) does, so the worker and the program agree on every frame.
// It imports nothing of ours; ParseUDP allocates nothing.
package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Ethertypes, IP protocols and header sizes.
const (
	EtherTypeIPv4   = 0x0800
	EtherTypeIPv6   = 0x86DD
	EtherTypeARP    = 0x0806
	EtherType8021Q  = 0x8100
	EtherType8021AD = 0x88A8

	ProtoTCP   = 6
	ProtoUDP   = 17
	ProtoICMP6 = 58

	EthLen  = 14
	VLANLen = 4
	IPv4Len = 20
	IPv6Len = 40
	UDPLen  = 8
	// HeaderLen is Ethernet + IPv4 without options + UDP: the headers of
	// a plain generated frame.
	HeaderLen = EthLen + IPv4Len + UDPLen

	// MaxVLANs is how many VLAN tags the program parses (802.1ad outer,
	// 802.1Q inner); a frame with more is not ours (VLANTooDeep).
	MaxVLANs = 2
)

// IPv4 flags and fragment offset (host order of the 16-bit field).
const (
	IPv4DF         = 0x4000
	IPv4MF         = 0x2000
	IPv4OffsetMask = 0x1FFF
)

// Default addresses of built frames: locally administered MACs, the
// benchmarking range 198.18.0.0/15 and 2001:2::/48 (RFC 5180).
var (
	DefaultSrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	DefaultDstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// Frame describes an Ethernet frame to build. The zero value of every
// field means "correct": a Frame with Src, Dst and a Payload builds a
// valid Ethernet/IPv4 (or IPv6)/UDP frame.
type Frame struct {
	SrcMAC, DstMAC net.HardwareAddr // default DefaultSrcMAC, DefaultDstMAC
	// VLANs are the tags, outer first.
	VLANs []VLAN
	// EtherType of the L3 header; 0: from Src (IPv4 or IPv6).
	EtherType uint16
	Src, Dst  netip.Addr
	// Proto is the IP protocol; 0: UDP.
	Proto uint8
	// IPVersion overrides the version field (0: from the ethertype).
	IPVersion int
	// IHL overrides the IPv4 header length in 32-bit words (0: 5 +
	// len(Options)/4).
	IHL     int
	Options []byte // IPv4 options, a multiple of 4 bytes
	ID      uint16 // IPv4 identification
	// Frag is the IPv4 flags and fragment offset field (IPv4DF, IPv4MF,
	// offset in 8-byte units). Default 0 (DF clear, not a fragment).
	Frag uint16
	TTL  uint8 // default 64
	// IPLen overrides the IPv4 total length or the IPv6 payload length
	// (0: correct).
	IPLen int
	// V6Ext, when HasV6Ext, puts an 8-byte extension header of that type
	// (0 = hop-by-hop, 44 = fragment, …) between IPv6 and L4.
	V6Ext    uint8
	HasV6Ext bool
	// SrcPort default 40000, DstPort default 9000.
	SrcPort, DstPort uint16
	// UDPLen overrides the UDP length field: > 0 that value, < 0 zero,
	// 0 correct.
	UDPLen int
	// NoL4 leaves the L4 header and payload out (a later fragment).
	NoL4    bool
	Payload []byte
	// Checksum fills in the IPv4 header checksum (the UDP checksum stays
	// 0, which IPv4 allows and IPv6 receivers reject; see UDPChecksum6).
	Checksum bool
	// UDPChecksum6 fills in the UDP checksum of an IPv6 frame (mandatory
	// there: the stack drops IPv6 UDP with checksum 0).
	UDPChecksum6 bool
	// Truncate keeps only this many bytes of the frame (0: all).
	Truncate int
	// Pad appends zero bytes after the datagram (Ethernet padding).
	Pad int
}

// VLAN is one tag: its TPID (EtherType8021Q or EtherType8021AD) and VLAN ID.
type VLAN struct {
	TPID uint16
	VID  uint16
}

// Append appends the frame to buf. It fails only for what cannot be
// written at all (addresses of the wrong family, a payload over 64 KiB).
func (f Frame) Append(buf []byte) ([]byte, error) {
	smac, dmac := f.SrcMAC, f.DstMAC
	if smac == nil {
		smac = DefaultSrcMAC
	}
	if dmac == nil {
		dmac = DefaultDstMAC
	}
	if len(smac) != 6 || len(dmac) != 6 {
		return buf, errors.New("packet: MAC addresses must be 6 bytes")
	}
	l3 := f.EtherType
	if l3 == 0 {
		l3 = EtherTypeIPv4
		if f.Src.Is6() && !f.Src.Is4In6() {
			l3 = EtherTypeIPv6
		}
	}
	start := len(buf)
	buf = append(buf, dmac...)
	buf = append(buf, smac...)
	for _, v := range f.VLANs {
		buf = binary.BigEndian.AppendUint16(buf, v.TPID)
		buf = binary.BigEndian.AppendUint16(buf, v.VID&0x0FFF) // PCP 0, DEI 0
	}
	buf = binary.BigEndian.AppendUint16(buf, l3)

	proto := f.Proto
	if proto == 0 {
		proto = ProtoUDP
	}
	l4len := 0
	if !f.NoL4 {
		l4len = f.l4Len(proto)
	}
	if l4len > 0xffff-IPv4Len-len(f.Options) {
		return buf[:start], fmt.Errorf("packet: payload of %d bytes does not fit a datagram", len(f.Payload))
	}
	ttl := f.TTL
	if ttl == 0 {
		ttl = 64
	}
	var pseudo []byte // IPv6 pseudo-header for the UDP checksum
	switch l3 {
	case EtherTypeIPv4:
		if !f.Src.Unmap().Is4() || !f.Dst.Unmap().Is4() {
			return buf[:start], fmt.Errorf("packet: IPv4 frame needs IPv4 addresses, got %v → %v", f.Src, f.Dst)
		}
		ihl := f.IHL
		if ihl == 0 {
			ihl = 5 + len(f.Options)/4
		}
		ver := f.IPVersion
		if ver == 0 {
			ver = 4
		}
		total := IPv4Len + len(f.Options) + l4len
		if f.IPLen != 0 {
			total = f.IPLen
		}
		ip := len(buf)
		buf = append(buf, byte(ver<<4|ihl&0xf), 0)
		buf = binary.BigEndian.AppendUint16(buf, uint16(total))
		buf = binary.BigEndian.AppendUint16(buf, f.ID)
		buf = binary.BigEndian.AppendUint16(buf, f.Frag)
		buf = append(buf, ttl, proto, 0, 0)
		s, d := f.Src.Unmap().As4(), f.Dst.Unmap().As4()
		buf = append(buf, s[:]...)
		buf = append(buf, d[:]...)
		buf = append(buf, f.Options...)
		if f.Checksum {
			// Over the whole header, options included.
			binary.BigEndian.PutUint16(buf[ip+10:], Checksum(buf[ip:ip+IPv4Len+len(f.Options)]))
		}
	case EtherTypeIPv6:
		if !f.Src.Is6() || !f.Dst.Is6() {
			return buf[:start], fmt.Errorf("packet: IPv6 frame needs IPv6 addresses, got %v → %v", f.Src, f.Dst)
		}
		ver := f.IPVersion
		if ver == 0 {
			ver = 6
		}
		next := proto
		var ext []byte
		if f.HasV6Ext {
			next = f.V6Ext
			ext = []byte{proto, 0, 1, 4, 0, 0, 0, 0} // next header, length 0, PadN
		}
		plen := len(ext) + l4len
		if f.IPLen != 0 {
			plen = f.IPLen
		}
		buf = append(buf, byte(ver<<4), 0, 0, 0)
		buf = binary.BigEndian.AppendUint16(buf, uint16(plen))
		buf = append(buf, next, ttl)
		s, d := f.Src.As16(), f.Dst.As16()
		buf = append(buf, s[:]...)
		buf = append(buf, d[:]...)
		buf = append(buf, ext...)
		if f.UDPChecksum6 && proto == ProtoUDP && !f.HasV6Ext {
			pseudo = make([]byte, 0, 40)
			pseudo = append(pseudo, s[:]...)
			pseudo = append(pseudo, d[:]...)
			pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(l4len))
			pseudo = append(pseudo, 0, 0, 0, ProtoUDP)
		}
	case EtherTypeARP:
		buf = append(buf, make([]byte, 28)...)
	}
	if !f.NoL4 {
		l4 := len(buf)
		buf = f.appendL4(buf, proto)
		if pseudo != nil {
			sum := checksumAdd(checksumAdd(0, pseudo), buf[l4:])
			c := ^fold(sum)
			if c == 0 {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(buf[l4+6:], c)
		}
	}
	buf = append(buf, make([]byte, f.Pad)...)
	if f.Truncate > 0 && start+f.Truncate < len(buf) {
		buf = buf[:start+f.Truncate]
	}
	return buf, nil
}

// Bytes is Append to a new slice; it panics on what Append refuses (for
// tests and fixtures, whose frames are literals).
func (f Frame) Bytes() []byte {
	b, err := f.Append(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func (f Frame) ports() (uint16, uint16) {
	sport, dport := f.SrcPort, f.DstPort
	if sport == 0 {
		sport = 40000
	}
	if dport == 0 {
		dport = 9000
	}
	return sport, dport
}

func (f Frame) l4Len(proto uint8) int {
	switch proto {
	case ProtoUDP:
		return UDPLen + len(f.Payload)
	case ProtoTCP:
		return 20
	}
	return 8
}

func (f Frame) appendL4(buf []byte, proto uint8) []byte {
	sport, dport := f.ports()
	switch proto {
	case ProtoUDP:
		n := UDPLen + len(f.Payload)
		switch {
		case f.UDPLen > 0:
			n = f.UDPLen
		case f.UDPLen < 0:
			n = 0
		}
		buf = binary.BigEndian.AppendUint16(buf, sport)
		buf = binary.BigEndian.AppendUint16(buf, dport)
		buf = binary.BigEndian.AppendUint16(buf, uint16(n))
		buf = append(buf, 0, 0)
		return append(buf, f.Payload...)
	case ProtoTCP:
		buf = binary.BigEndian.AppendUint16(buf, sport)
		buf = binary.BigEndian.AppendUint16(buf, dport)
		tcp := len(buf)
		buf = append(buf, make([]byte, 16)...)
		buf[tcp+8] = 5 << 4 // data offset
		buf[tcp+9] = 0x02   // SYN
		return buf
	}
	return append(buf, make([]byte, 8)...)
}

// Checksum is the Internet checksum (RFC 1071) of b. Over an IPv4 header
// whose checksum field holds the right value it is 0.
func Checksum(b []byte) uint16 { return ^fold(checksumAdd(0, b)) }

func checksumAdd(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
