//go:build linux

package demo

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"github.com/xgate/xgate/packet"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/gen"
	"github.com/xgate/xgate/tools/loadgen"
)

// packetSender writes whole Ethernet frames out of a test host's veth
// through an AF_PACKET socket, so that every frame carries a source address
// of its own: thousands of clients and a flooding source from one host, at
// the cost of a syscall per batch (the live-frames generator of
// tools/loadgen would spin a core to pace a rate this low). The qdisc is
// bypassed (PACKET_QDISC_BYPASS): a frame the veth cannot take fails the
// send with ENOBUFS and is tried again, instead of being dropped out of
// sight in a queue, so the count of frames sent is exact. It is not safe
// for concurrent use.
type packetSender struct {
	fd   int
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

// senderBatch is the frames per sendmmsg.
const senderBatch = 64

func newPacketSender(h *testenv.Host) (*packetSender, error) {
	fd, err := h.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return nil, fmt.Errorf("demo: packet socket: %w", err)
	}
	// Protocol 0: the socket takes no packets in, it only sends.
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: h.Ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("demo: bind packet socket to %s: %w", h.Link, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("demo: packet socket: qdisc bypass: %w", err)
	}
	p := &packetSender{fd: fd, hdrs: make([]unix.Mmsghdr, senderBatch), iovs: make([]unix.Iovec, senderBatch)}
	for i := range p.hdrs {
		p.hdrs[i].Hdr.Iov = &p.iovs[i]
		p.hdrs[i].Hdr.SetIovlen(1)
	}
	return p, nil
}

func (p *packetSender) close() error { return unix.Close(p.fd) }

// send writes frames (at most senderBatch, none empty) and returns how
// many went out, in order. A full veth ring (ENOBUFS, EAGAIN) is waited
// out for up to a second; any other error ends the send.
func (p *packetSender) send(frames [][]byte) (int, error) {
	done := 0
	waited := time.Duration(0)
	for done < len(frames) {
		k := min(len(frames)-done, len(p.hdrs))
		for i := range k {
			f := frames[done+i]
			p.iovs[i].Base = &f[0]
			p.iovs[i].SetLen(len(f))
		}
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd), uintptr(unsafe.Pointer(&p.hdrs[0])), uintptr(k), 0, 0, 0)
		runtime.KeepAlive(frames)
		switch {
		case errno == 0:
			done += int(n)
			waited = 0
		case errno == unix.EINTR:
		case (errno == unix.ENOBUFS || errno == unix.EAGAIN) && waited < time.Second:
			time.Sleep(50 * time.Microsecond)
			waited += 50 * time.Microsecond
		default:
			return done, fmt.Errorf("demo: send frames: %w", errno)
		}
	}
	return done, nil
}

// frameKind is what a client frame carries.
type frameKind uint8

const (
	kindEvent     frameKind = iota // an event of the mix (maybe malformed JSON)
	kindNotJSON                    // a payload that is not JSON: dropped in XDP
	kindOtherPort                  // an event to a port that is not ours: passed to the stack
)

// Shares of the client frames that are not events for us.
const (
	notJSONShare   = 0.005
	otherPortShare = 0.005
	// clientAddrs is the number of client source addresses: at the
	// default rate each sends a few events a second, far under the
	// flood-source rule's limit.
	clientAddrs = 4096
)

// notJSON are payloads of the wrong protocol on our port: what scanners
// and misconfigured clients send.
var notJSON = [][]byte{
	[]byte("GET / HTTP/1.1\r\nHost: gateway\r\n\r\n"),
	[]byte("SSH-2.0-OpenSSH_9.2p1\r\n"),
	{0x16, 0x03, 0x01, 0x00, 0x2e, 0x01, 0x00, 0x00, 0x2a, 0x03, 0x03}, // a TLS ClientHello's start
}

// frameMix builds the frames of the test hosts' traffic. It is not safe
// for concurrent use.
type frameMix struct {
	events, flood   *gen.Generator
	rng             *rand.Rand
	clients         []netip.Addr
	floodSrc        netip.Addr
	spec            packet.Frame
	port, otherPort uint16
	payload         []byte
}

func newFrameMix(from, to *testenv.Host, port, otherPort uint16) (*frameMix, error) {
	events, err := gen.New(eventMix(1))
	if err != nil {
		return nil, err
	}
	flood, err := gen.New(eventMix(2))
	if err != nil {
		return nil, err
	}
	m := &frameMix{events: events, flood: flood, rng: rand.New(rand.NewPCG(3, 4)), port: port, otherPort: otherPort,
		spec: packet.Frame{SrcMAC: from.MAC, DstMAC: to.MAC, Dst: to.Addr}}
	if m.clients, err = addrsOutside(netip.AddrFrom4([4]byte{198, 19, 128, 1}), clientAddrs, from.Prefix, to.Prefix); err != nil {
		return nil, err
	}
	floodSrc, err := addrsOutside(netip.AddrFrom4([4]byte{198, 19, 66, 6}), 1, from.Prefix, to.Prefix)
	if err != nil {
		return nil, err
	}
	m.floodSrc = floodSrc[0]
	return m, nil
}

// addrsOutside returns n addresses from first on, skipping the hosts'
// prefixes, within 198.18.0.0/15.
func addrsOutside(first netip.Addr, n int, skip ...netip.Prefix) ([]netip.Addr, error) {
	bench := netip.MustParsePrefix("198.18.0.0/15")
	var out []netip.Addr
	for a := first; len(out) < n; a = a.Next() {
		if !bench.Contains(a) {
			return nil, fmt.Errorf("demo: ran out of source addresses after %d", len(out))
		}
		inHost := false
		for _, p := range skip {
			inHost = inHost || p.Contains(a)
		}
		if !inHost {
			out = append(out, a)
		}
	}
	return out, nil
}

// client appends the next client frame to buf.
func (m *frameMix) client(buf []byte) ([]byte, frameKind, error) {
	kind := kindEvent
	switch x := m.rng.Float64(); {
	case x < notJSONShare:
		kind = kindNotJSON
	case x < notJSONShare+otherPortShare:
		kind = kindOtherPort
	}
	c := m.rng.IntN(len(m.clients))
	s := m.spec
	s.Src, s.SrcPort, s.DstPort = m.clients[c], uint16(32768+c), m.port
	if kind == kindNotJSON {
		s.Payload = notJSON[m.rng.IntN(len(notJSON))]
	} else {
		m.payload, _ = m.events.Append(m.payload[:0])
		s.Payload = m.payload
	}
	if kind == kindOtherPort {
		s.DstPort = m.otherPort
	}
	s.ID = uint16(m.rng.Uint32())
	f, err := loadgen.AppendFrame(buf, s)
	return f, kind, err
}

// floodFrame appends the next frame of the flooding source to buf.
func (m *frameMix) floodFrame(buf []byte) ([]byte, error) {
	m.payload, _ = m.flood.Append(m.payload[:0])
	s := m.spec
	s.Src, s.SrcPort, s.DstPort, s.Payload, s.ID = m.floodSrc, 44444, m.port, m.payload, uint16(m.rng.Uint32())
	return loadgen.AppendFrame(buf, s)
}
