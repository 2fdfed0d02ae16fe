//go:build linux

package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Socket opens a socket inside the host's namespace. The fd is close-on-exec
// and belongs to the caller.
func (h *Host) Socket(domain, typ, proto int) (int, error) {
	fd := -1
	err := h.Do(func() error {
		var err error
		fd, err = unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("socket in %s: %w", h.NS, err)
	}
	return fd, nil
}

// ListenUDP opens a UDP socket in the host's namespace bound to addr:port
// (addr may be h.Addr, h.Addr6 or an unspecified address; port 0 picks
// one). setup, if not nil, runs on the fd before bind (SO_RCVBUF,
// SO_REUSEPORT, SO_TIMESTAMPNS…). It returns the fd and the bound port.
func (h *Host) ListenUDP(addr netip.Addr, port uint16, setup func(fd int) error) (int, uint16, error) {
	domain := unix.AF_INET
	if addr.Is6() {
		domain = unix.AF_INET6
	}
	fd, err := h.Socket(domain, unix.SOCK_DGRAM, unix.IPPROTO_UDP)
	if err != nil {
		return -1, 0, err
	}
	if setup != nil {
		if err := setup(fd); err != nil {
			unix.Close(fd)
			return -1, 0, fmt.Errorf("socket setup: %w", err)
		}
	}
	if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(addr, port))); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("bind %s:%d in %s: %w", addr, port, h.NS, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("getsockname: %w", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		port = uint16(sa.Port)
	case *unix.SockaddrInet6:
		port = uint16(sa.Port)
	}
	return fd, port, nil
}

// DialUDP opens a UDP socket in the host's namespace connected to dst, for
// repeated unix.Write calls.
func (h *Host) DialUDP(dst netip.AddrPort) (int, error) {
	domain := unix.AF_INET
	if dst.Addr().Is6() {
		domain = unix.AF_INET6
	}
	fd, err := h.Socket(domain, unix.SOCK_DGRAM, unix.IPPROTO_UDP)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, sockaddr(dst)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s from %s: %w", dst, h.NS, err)
	}
	return fd, nil
}

// SendUDP sends payload count times from the host to dst through one
// blocking connected socket and returns how many datagrams the kernel
// accepted. ECONNREFUSED from an earlier ICMP error is not counted as a
// failure of the next send; ENOBUFS is retried a bounded number of times.
func (h *Host) SendUDP(dst netip.AddrPort, payload []byte, count int) (int, error) {
	fd, err := h.DialUDP(dst)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	sent, retries := 0, 0
	for sent < count {
		_, err := unix.Write(fd, payload)
		switch {
		case err == nil:
			sent++
		case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.EINTR):
			// Retry this one.
		case errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN):
			if retries++; retries > 1000 {
				return sent, fmt.Errorf("send to %s: %w", dst, err)
			}
			time.Sleep(100 * time.Microsecond)
		default:
			return sent, fmt.Errorf("send to %s: %w", dst, err)
		}
	}
	return sent, nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// ReadProcNet reads /proc/net/<name> as the host's namespace sees it
// (through /proc/thread-self/net on a thread inside the namespace).
func (h *Host) ReadProcNet(name string) ([]byte, error) {
	var b []byte
	err := h.Do(func() error {
		var err error
		b, err = os.ReadFile("/proc/thread-self/net/" + name)
		return err
	})
	return b, err
}

// SNMP returns the counters of /proc/net/snmp (and snmp6) in the host's
// namespace keyed "Udp.RcvbufErrors", "Ip.InReceives", "Udp6InDatagrams"…
func (h *Host) SNMP() (map[string]uint64, error) {
	out := make(map[string]uint64)
	b, err := h.ReadProcNet("snmp")
	if err != nil {
		return nil, err
	}
	// Pairs of lines: "Udp: InDatagrams NoPorts …" then "Udp: 12 0 …".
	var head []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		if head == nil || head[0] != f[0] {
			head = f
			continue
		}
		proto := strings.TrimSuffix(f[0], ":")
		for i := 1; i < len(f) && i < len(head); i++ {
			if v, err := strconv.ParseInt(f[i], 10, 64); err == nil {
				out[proto+"."+head[i]] = uint64(v)
			}
		}
		head = nil
	}
	if b6, err := h.ReadProcNet("snmp6"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b6))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 {
				if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
					out[f[0]] = v
				}
			}
		}
	}
	return out, nil
}
