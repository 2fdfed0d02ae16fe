package gateway

import (
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpSocket is one UDP socket of a socket group (or the single socket of
// plain mode). Only its worker reads from it.
type udpSocket struct {
	fd   int
	addr netip.AddrPort
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

// shutdown wakes a worker blocked in recvmmsg on this socket.
func (s *udpSocket) shutdown() { _ = unix.Shutdown(s.fd, unix.SHUT_RD) }

// mmsgBatch is the reusable receive state of one worker: one buffer slab,
// one iovec and one address per message. Nothing is allocated per
// datagram, and no control messages are asked for: the drop count comes
// from SO_MEMINFO, and the timestamps the latency probe turns on are read
// by its filter in the kernel, not here (without a control buffer the
// kernel skips put_cmsg).
//
// Lifetime: datagram i lives in bufs[i][:lens[i]] until the next recv on
// this batch; the engine's views into it die with the batch.
type mmsgBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	bufs  [][]byte
	lens  []int
}

func newBatch(n, bufSize int) *mmsgBatch {
	b := &mmsgBatch{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		bufs:  make([][]byte, n),
		lens:  make([]int, n),
	}
	slab := make([]byte, n*bufSize)
	for i := range b.bufs {
		b.bufs[i] = slab[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
	}
	return b
}

// recv fills the batch with up to len(hdrs) datagrams: it blocks until at
// least one arrives (or the socket's receive timeout passes: then 0, nil),
// then takes what is already queued (MSG_WAITFORONE).
func (s *udpSocket) recv(b *mmsgBatch) (int, error) {
	for i := range b.hdrs {
		b.iovs[i] = unix.Iovec{Base: &b.bufs[i][0]}
		b.iovs[i].SetLen(len(b.bufs[i]))
		h := &b.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Namelen = uint32(unsafe.Sizeof(b.names[i]))
		h.Iov = &b.iovs[i]
		h.Iovlen = 1
		h.Flags = 0
	}
	for {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&b.hdrs[0])),
			uintptr(len(b.hdrs)), unix.MSG_WAITFORONE, 0, 0)
		switch {
		case errno == 0:
			n := int(r)
			for i := 0; i < n; i++ {
				b.lens[i] = int(b.hdrs[i].Len)
			}
			return n, nil
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			return 0, nil
		default:
			return 0, fmt.Errorf("recvmmsg on %s: %w", s.addr, errno)
		}
	}
}

// source returns the sender of datagram i.
func (b *mmsgBatch) source(i int) netip.Addr {
	raw := &b.names[i]
	switch raw.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		return netip.AddrFrom4(sa.Addr)
	case unix.AF_INET6:
		return netip.AddrFrom16(raw.Addr).Unmap()
	}
	return netip.Addr{}
}
