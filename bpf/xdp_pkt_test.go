package bpf

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// Hand-built packets for the XDP fixtures (no gopacket). Checksums are left
// zero: the program does not verify them.

const (
	xgEthIPv4    = 0x0800
	xgEthIPv6    = 0x86DD
	xgEthARP     = 0x0806
	xgEth8021Q   = 0x8100
	xgEth8021AD  = 0x88A8
	xgProtoTCP   = 6
	xgProtoUDP   = 17
	xgProtoICMP6 = 58
)

var (
	xgSrc4   = netip.MustParseAddr("198.18.0.1")
	xgDst4   = netip.MustParseAddr("198.18.0.2")
	xgOther4 = netip.MustParseAddr("198.18.0.9")
	xgSrc6   = netip.MustParseAddr("2001:2::1")
	xgDst6   = netip.MustParseAddr("2001:2::2")
)

// xgPacket describes an Ethernet frame to build.
type xgPacket struct {
	vlans    []uint16 // TPIDs, outer first (each tag gets VID 100+i)
	ethType  uint16   // 0: from the L3 (IPv4/IPv6)
	src, dst netip.Addr
	proto    uint8  // 0: UDP
	ihl      int    // IPv4 header words; 0: 5 + len(options)/4
	version  int    // IP version field; 0: from the address family
	options  []byte // IPv4 options (multiple of 4)
	fragOff  uint16 // IPv4 flags+offset field, host order (0x2000 = MF)
	v6Ext    uint8  // IPv6: an extension header of this type before L4…
	hasV6Ext bool   // …when set (type 0 is hop-by-hop)
	sport    uint16 // default 40000
	dport    uint16 // default 9000
	udpLen   int    // UDP length field; 0: correct; -1 writes 0
	payload  []byte
	truncate int // keep only this many bytes (0: all)
	noL4     bool
}

func (p xgPacket) bytes() []byte {
	b := make([]byte, 0, 128)
	b = append(b, 0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1) // dst, src MAC
	l3 := p.ethType
	if l3 == 0 {
		l3 = xgEthIPv4
		if p.src.Is6() && !p.src.Is4In6() {
			l3 = xgEthIPv6
		}
	}
	for i, tpid := range p.vlans {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, uint16(100+i)) // TCI of the next tag
	}
	b = binary.BigEndian.AppendUint16(b, l3)

	proto := p.proto
	if proto == 0 {
		proto = xgProtoUDP
	}
	var l4 []byte
	if !p.noL4 {
		l4 = p.l4(proto)
	}

	switch l3 {
	case xgEthIPv4:
		ihl := p.ihl
		if ihl == 0 {
			ihl = 5 + len(p.options)/4
		}
		ver := p.version
		if ver == 0 {
			ver = 4
		}
		total := 20 + len(p.options) + len(l4)
		b = append(b, byte(ver<<4|ihl&0xf), 0)
		b = binary.BigEndian.AppendUint16(b, uint16(total))
		b = append(b, 0x12, 0x34) // id
		b = binary.BigEndian.AppendUint16(b, p.fragOff)
		b = append(b, 64, proto, 0, 0) // ttl, proto, checksum
		s, d := p.src.As4(), p.dst.As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
		b = append(b, p.options...)
	case xgEthIPv6:
		ver := p.version
		if ver == 0 {
			ver = 6
		}
		next := proto
		var ext []byte
		if p.hasV6Ext {
			// 8-byte extension header: next header, length 0, padding.
			next = p.v6Ext
			ext = []byte{proto, 0, 1, 4, 0, 0, 0, 0}
		}
		b = append(b, byte(ver<<4), 0, 0, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(len(ext)+len(l4)))
		b = append(b, next, 64)
		s, d := p.src.As16(), p.dst.As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
		b = append(b, ext...)
	case xgEthARP:
		b = append(b, make([]byte, 28)...)
	}
	b = append(b, l4...)
	if p.truncate > 0 && p.truncate < len(b) {
		b = b[:p.truncate]
	}
	return b
}

func (p xgPacket) l4(proto uint8) []byte {
	sport, dport := p.sport, p.dport
	if sport == 0 {
		sport = 40000
	}
	if dport == 0 {
		dport = 9000
	}
	switch proto {
	case xgProtoUDP:
		n := 8 + len(p.payload)
		switch {
		case p.udpLen > 0:
			n = p.udpLen
		case p.udpLen < 0:
			n = 0
		}
		b := binary.BigEndian.AppendUint16(nil, sport)
		b = binary.BigEndian.AppendUint16(b, dport)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		b = append(b, 0, 0)
		return append(b, p.payload...)
	case xgProtoTCP:
		b := binary.BigEndian.AppendUint16(nil, sport)
		b = binary.BigEndian.AppendUint16(b, dport)
		b = append(b, make([]byte, 16)...)
		b[12] = 5 << 4
		return b
	default:
		return make([]byte, 8)
	}
}

var xgJSON = []byte(`{"event_id":"e-1","user_id":"u-1","amount":1.5}`)

// xdpMD mirrors struct xdp_md, the context of an XDP test run.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// xgNeedRoot skips the test unless it runs as root.
func xgNeedRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (CAP_BPF, CAP_NET_ADMIN): run `go test` as root, as CI does")
	}
}

// xgLoad loads the XDP program for a test, skipping when the kernel lacks a
// feature, and closes it at the end.
func xgLoad(tb testing.TB, opts Options) *XDP {
	tb.Helper()
	xgNeedRoot(tb)
	if opts.ListenPorts == nil {
		opts.ListenPorts = []uint16{9000}
	}
	x, err := LoadXDP(opts)
	if errors.Is(err, ErrNotSupported) {
		tb.Skipf("kernel lacks a feature: %v", err)
	}
	if err != nil {
		tb.Fatalf("LoadXDP: %+v", err)
	}
	tb.Cleanup(func() {
		if err := x.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return x
}

// xgRun runs pkt once through the program with an XDP context on lo's
// queue 0 and returns verdict, output data and output context.
func xgRun(tb testing.TB, prog *ebpf.Program, pkt []byte, ifindex, queue uint32) (uint32, []byte, xdpMD) {
	tb.Helper()
	var out xdpMD
	opts := ebpf.RunOptions{
		Data:       pkt,
		DataOut:    make([]byte, len(pkt)+256),
		Context:    xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: ifindex, RxQueueIndex: queue},
		ContextOut: &out,
	}
	ret, err := prog.Run(&opts)
	if err != nil {
		tb.Fatalf("test run: %v", err)
	}
	return ret, opts.DataOut, out
}

func xgCounters(tb testing.TB, x *XDP) Counters {
	tb.Helper()
	c, err := x.ReadCounters()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// xgAssertDeltas checks the packet delta of every reason and event against
// want (absent = 0), and that bytes moved with the packets.
func xgAssertDeltas(tb testing.TB, before, after Counters, want map[Reason]uint64, pktLen int) {
	tb.Helper()
	for r := Reason(0); r < ReasonMax; r++ {
		got := after[r].Packets - before[r].Packets
		if got != want[r] {
			tb.Errorf("counter %v: %d packets, want %d", r, got, want[r])
		}
		gotBytes := after[r].Bytes - before[r].Bytes
		wantBytes := want[r] * uint64(pktLen)
		if r == EventBucketCASRetry {
			wantBytes = 0
		}
		if pktLen > 0 && gotBytes != wantBytes {
			tb.Errorf("counter %v: %d bytes, want %d", r, gotBytes, wantBytes)
		}
	}
}
