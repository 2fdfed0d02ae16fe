package gateway

import (
	"fmt"
	"math/bits"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpSocket is one UDP socket of a socket group (or the single socket of
// plain mode). Only its worker reads from it.
type udpSocket struct {
	fd   int
	addr netip.AddrPort

	// Receive → verdict sampling (startLatency; off while every is 0).
	// every..pending belong to the worker that owns the socket (set
	// before it starts, then touched only by recv); latency and noStamp
	// are atomics that Latency and metrics read.
	every     int           // sampling period in datagrams; 0: off
	until     int           // datagrams left before the next sampled batch
	pick      uint32        // xorshift32 state: which datagram of a batch is sampled
	stamp     unix.Timespec // SIOCGSTAMPNS result (a field: no allocation per sample)
	pending   int64         // receive time (realtime ns) of the sampled datagram of the last batch; 0: none
	latency   [LatencyBuckets]atomic.Uint64
	latencyNs atomic.Uint64 // sum of the samples in latency, ns (the histogram's exact _sum)
	noStamp   atomic.Uint64 // sampled datagrams without a receive timestamp
}

// openUDP opens a UDP socket bound to addr. With reuseport it joins the
// SO_REUSEPORT group of that address. rcvbuf > 0 sizes the receive buffer
// (SO_RCVBUFFORCE as root, SO_RCVBUF otherwise, which the kernel caps at
// net.core.rmem_max). The drop count is read with SO_MEMINFO (drops), not
// SO_RXQ_OVFL: that would cost a control message per datagram.
func openUDP(addr netip.AddrPort, reuseport bool, rcvbuf int, timeout time.Duration) (*udpSocket, error) {
	domain := unix.AF_INET
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	fail := func(what string, err error) (*udpSocket, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("udp %s: %s: %w", addr, what, err)
	}
	if reuseport {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("SO_REUSEPORT", err)
		}
	}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
				return fail("SO_RCVBUF", err)
			}
		}
	}
	if timeout > 0 {
		tv := unix.NsecToTimeval(int64(timeout))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fail("SO_RCVTIMEO", err)
		}
	}
	var sa unix.Sockaddr
	if domain == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().Unmap().As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	}
	// Datagrams the kernel reassembled from fragments carry their largest
	// fragment's size as a control message (none otherwise): the XDP
	// program counted their fragments as ipv4_fragment, so the accounting
	// needs them as a term of their own (Stats.Reassembled).
	if domain == unix.AF_INET {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVFRAGSIZE, 1); err != nil {
			return fail("IP_RECVFRAGSIZE", err)
		}
	} else if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVFRAGSIZE, 1); err != nil {
		return fail("IPV6_RECVFRAGSIZE", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	return &udpSocket{fd: fd, addr: addr}, nil
}

func (s *udpSocket) close() error { return unix.Close(s.fd) }

// skMeminfoDrops is SK_MEMINFO_DROPS, the index of sk_drops in the u32
// array SO_MEMINFO returns (include/uapi/linux/sock_diag.h).
const skMeminfoDrops = 8

// drops reads the socket's drop counter (sk_drops: receive buffer full and
// the like) now. (SO_RXQ_OVFL would report the same counter, but only with
// the next datagram, and at the price of a control message per datagram.)
func (s *udpSocket) drops() (uint64, error) {
	var info [16]uint32
	l := uint32(unsafe.Sizeof(info))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("SO_MEMINFO on %s: %w", s.addr, errno)
	}
	if l < (skMeminfoDrops+1)*4 {
		return 0, fmt.Errorf("SO_MEMINFO on %s: %d bytes, too short", s.addr, l)
	}
	return uint64(info[skMeminfoDrops]), nil
}

// setTimeout sets how long one recvmmsg waits (SO_RCVTIMEO); 0 waits
// until a datagram arrives or shutdown.
func (s *udpSocket) setTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(int64(d))
	return unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
}

// shutdown wakes a worker blocked in recvmmsg on this socket.
func (s *udpSocket) shutdown() { _ = unix.Shutdown(s.fd, unix.SHUT_RD) }

// mmsgBatch is the reusable receive state of one worker: one buffer slab,
// one iovec and one address per message. Nothing is allocated per
// datagram, and no control messages are asked for: the drop count comes
// from SO_MEMINFO, and receive timestamps are read by the latency probe's
// filter in the kernel and, for a sampled datagram, with SIOCGSTAMPNS
// (startLatency), not per datagram here.
//
// Lifetime: datagram i lives in bufs[i][:lens[i]] until the next recv on
// this batch; the engine's views into it die with the batch.
type mmsgBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	ctrl  [][mmsgCtrl]byte // room for the reassembly control message
	bufs  [][]byte
	lens  []int
	// reassembled counts the datagrams of the last recv that came with a
	// control message: the kernel reassembled them from fragments.
	reassembled int
	// used is how many headers the last recv handed to the kernel and got
	// back filled: only their lengths and flags need resetting before the
	// next; the pointers (name, iovec, control) are set once by newBatch
	// and never written by the kernel.
	used int
}

// mmsgCtrl is the control space per message: one cmsg with an int
// (IP_RECVFRAGSIZE), with room to spare.
const mmsgCtrl = 64

func newBatch(n, bufSize int) *mmsgBatch {
	b := &mmsgBatch{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		ctrl:  make([][mmsgCtrl]byte, n),
		bufs:  make([][]byte, n),
		lens:  make([]int, n),
	}
	slab := make([]byte, n*bufSize)
	for i := range b.bufs {
		b.bufs[i] = slab[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
		b.iovs[i] = unix.Iovec{Base: &b.bufs[i][0]}
		b.iovs[i].SetLen(bufSize)
		h := &b.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.iovs[i]
		h.Iovlen = 1
		h.Control = &b.ctrl[i][0]
	}
	b.used = n
	b.reset()
	return b
}

// reset readies the headers the last recv used for the next: the kernel
// wrote their name and control lengths, flags and message lengths.
func (b *mmsgBatch) reset() {
	for i := range b.used {
		h := &b.hdrs[i].Hdr
		h.Namelen = uint32(unsafe.Sizeof(b.names[i]))
		h.SetControllen(mmsgCtrl)
		h.Flags = 0
	}
	b.used = 0
}

// recv fills the batch with up to len(hdrs) datagrams: it blocks until at
// least one arrives (or the socket's receive timeout passes: then 0, nil),
// then takes what is already queued (MSG_WAITFORONE). With sampling on
// (startLatency) it first records the receive → verdict time of the
// previous batch's sampled datagram: recv is called again only once that
// batch is decided.
func (s *udpSocket) recv(b *mmsgBatch) (int, error) {
	if s.pending != 0 {
		s.recordLatency()
	}
	b.reset()
	var (
		n   int
		err error
	)
	if s.every > 0 && s.until <= 0 {
		n, err = s.recvSampled(b)
		s.until = s.every
	} else {
		n, err = s.recvmmsg(b.hdrs, unix.MSG_WAITFORONE)
		s.until -= n
	}
	// The kernel fills the headers in order, so the first n are the ones
	// to reset (a split sampled receive fills [0, j) and then [j, n));
	// the first always, should a failed call have written to it.
	b.used = max(n, 1)
	b.reassembled = 0
	for i := 0; i < n; i++ {
		b.lens[i] = int(b.hdrs[i].Len)
		// Only IP(V6)_RECVFRAGSIZE is asked for, and the kernel adds it
		// only to a reassembled datagram: any control data means one.
		if b.hdrs[i].Hdr.Controllen != 0 {
			b.reassembled++
		}
	}
	return n, err
}

// recvmmsg receives into hdrs; a receive timeout (or, with MSG_DONTWAIT,
// an empty queue) is 0, nil.
func (s *udpSocket) recvmmsg(hdrs []unix.Mmsghdr, flags int) (int, error) {
	for {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&hdrs[0])),
			uintptr(len(hdrs)), uintptr(flags), 0, 0)
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		default:
			return 0, fmt.Errorf("recvmmsg on %s: %w", s.addr, errno)
		}
	}
}

// recvSampled receives a batch in two parts and reads the receive stamp of
// the last datagram of the first: the kernel keeps only the stamp of the
// newest datagram read (SIOCGSTAMPNS), so the batch is split where the
// sample falls. The split point is pseudo-random, so the samples cover
// every position in a batch, not only its newest (which would bias the
// figures low by up to a batch's queueing spread).
func (s *udpSocket) recvSampled(b *mmsgBatch) (int, error) {
	s.pick ^= s.pick << 13
	s.pick ^= s.pick >> 17
	s.pick ^= s.pick << 5
	j := 1 + int(s.pick%uint32(len(b.hdrs)))
	n, err := s.recvmmsg(b.hdrs[:j], unix.MSG_WAITFORONE)
	if err != nil || n == 0 {
		return n, err
	}
	s.readStamp()
	if n < j || j == len(b.hdrs) {
		return n, nil // the queue is empty, or the batch is full
	}
	// The rest of what is queued, without waiting. An error here is left
	// for the next recv to meet: the datagrams in hand go to the engine.
	m, err := s.recvmmsg(b.hdrs[j:], unix.MSG_DONTWAIT)
	if err != nil {
		return n, nil
	}
	return n + m, nil
}

// realtimeMinNs: receive stamps are CLOCK_REALTIME, past 2001-09-09.
const realtimeMinNs = 1_000_000_000_000_000_000

// readStamp takes the receive stamp of the newest datagram read from the
// socket as the pending sample. Without a stamp on that datagram (host
// receive timestamping off) the kernel answers with the current time and
// remembers it: a stamp not older than the call is no stamp.
func (s *udpSocket) readStamp() {
	before := time.Now().UnixNano()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(s.fd), unix.SIOCGSTAMPNS, uintptr(unsafe.Pointer(&s.stamp)))
	ns := s.stamp.Nano()
	if errno != 0 || ns >= before || ns < realtimeMinNs {
		s.noStamp.Add(1)
		return
	}
	s.pending = ns
}

// recordLatency adds the pending sample's receive → now time to the
// histogram (bucket i: ≤ 2^i µs, as on the afxdp path).
func (s *udpSocket) recordLatency() {
	d := time.Now().UnixNano() - s.pending
	s.pending = 0
	if d < 0 {
		s.noStamp.Add(1) // the realtime clock was stepped back
		return
	}
	b := 0
	if us := (d + 999) / 1000; us > 1 {
		b = min(bits.Len64(uint64(us-1)), LatencyBuckets-1)
	}
	s.latency[b].Add(1)
	s.latencyNs.Add(uint64(d))
}

// startLatency turns on receive → verdict sampling: after every batch that
// completes `every` datagrams since the last sample, one datagram of the
// next batch is timed from its kernel receive stamp (skb->tstamp, taken at
// netif_receive) to the moment its batch is decided. The first SIOCGSTAMPNS
// sets SOCK_TIMESTAMP on the socket: from then on each datagram read costs
// the kernel one store (the socket's last stamp), not a control message,
// and the socket holds the host's receive timestamping on until it closes.
// Call it before the worker starts.
func (s *udpSocket) startLatency(every int) {
	if every < 1 {
		return
	}
	s.every, s.until = every, every
	s.pick = uint32(s.fd)*2654435761 | 1 // any nonzero seed
	// ENOENT (nothing read yet) is expected: the call is for its side effect.
	_, _, _ = unix.Syscall(unix.SYS_IOCTL, uintptr(s.fd), unix.SIOCGSTAMPNS, uintptr(unsafe.Pointer(&s.stamp)))
}

// latencyCounts reads the receive → verdict histogram.
func (s *udpSocket) latencyCounts() (h [LatencyBuckets]uint64) {
	for i := range h {
		h[i] = s.latency[i].Load()
	}
	return h
}

// source returns the sender (address and port) of datagram i.
func (b *mmsgBatch) source(i int) netip.AddrPort {
	raw := &b.names[i]
	switch raw.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(raw.Addr).Unmap(), ntohs(raw.Port))
	}
	return netip.AddrPort{}
}

// ntohs turns a sockaddr's port (network byte order, read as a native
// uint16) into a number.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
