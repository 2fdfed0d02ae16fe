//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/tools/gen"
)

// SocketOptions shape a socket sender: UDP datagrams from Sockets
// connected sockets (distinct source ports), sendmmsg batches.
type SocketOptions struct {
	// NS is the namespace the sockets are made in (0 or netns.None():
	// the caller's).
	NS  netns.NsHandle
	Dst netip.AddrPort
	// Sockets is the number of sockets (and goroutines); default 1.
	Sockets int
	// Batch is the datagrams per sendmmsg; default 64, at most 1024.
	Batch int
	// Payloads is the number of distinct events, sent in turn; default 1024.
	Payloads int
	Events   gen.Config
	// Rate is datagrams per second over all sockets, 0 = as fast as possible.
	Rate float64
	// Count and Duration bound the send; at least one must be set.
	Count    uint64
	Duration time.Duration
	// Progress, if set, is updated with the datagrams sent so far.
	Progress *atomic.Uint64
}

// SocketResult is what a socket send did.
type SocketResult struct {
	Sent    uint64 // datagrams the kernel accepted
	Errors  uint64 // sendmmsg calls that failed (ENOBUFS, ECONNREFUSED, ...)
	Elapsed time.Duration
}

// PPS is the achieved rate.
func (r SocketResult) PPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

// udpSocket makes a UDP socket in ns (on a locked thread that returns to
// its namespace afterwards) and connects it to dst.
func udpSocket(ns netns.NsHandle, dst netip.AddrPort) (int, error) {
	domain := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	if !dst.Addr().Is4() {
		domain = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if ns.IsOpen() && ns != 0 { // the zero handle: the caller's namespace
		orig, err := netns.Get()
		if err != nil {
			return -1, err
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			return -1, fmt.Errorf("enter namespace: %w", err)
		}
		defer func() {
			if err := netns.Set(orig); err != nil {
				panic(fmt.Sprintf("bench: cannot return to the original namespace: %v", err))
			}
		}()
	}
	fd, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %v: %w", dst, err)
	}
	return fd, nil
}

// SendSocket sends with o until Count datagrams are sent, Duration has
// passed or ctx ends. Sent is exact.
func SendSocket(ctx context.Context, o SocketOptions) (SocketResult, error) {
	if o.Count == 0 && o.Duration <= 0 {
		return SocketResult{}, errors.New("bench: unbounded socket send: give a count or a duration")
	}
	if !o.Dst.IsValid() {
		return SocketResult{}, errors.New("bench: socket send needs a destination")
	}
	o.Sockets = max(o.Sockets, 1)
	if o.Batch <= 0 {
		o.Batch = 64
	}
	o.Batch = min(o.Batch, 1024)
	if o.Payloads <= 0 {
		o.Payloads = 1024
	}
	ev, err := gen.New(o.Events)
	if err != nil {
		return SocketResult{}, err
	}
	payloads := make([][]byte, o.Payloads)
	for i := range payloads {
		payloads[i], _ = ev.Append(nil)
	}
	fds := make([]int, 0, o.Sockets)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for range o.Sockets {
		fd, err := udpSocket(o.NS, o.Dst)
		if err != nil {
			return SocketResult{}, fmt.Errorf("bench: socket sender: %w", err)
		}
		fds = append(fds, fd)
	}

	var sent, errs atomic.Uint64
	var left atomic.Int64 // datagrams not yet claimed (Count > 0)
	left.Store(int64(o.Count))
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	perSock := o.Rate / float64(o.Sockets)
	start := time.Now()
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for s, fd := range fds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hdrs := make([]unix.Mmsghdr, o.Batch)
			iovs := make([]unix.Iovec, o.Batch)
			for i := range hdrs {
				hdrs[i].Hdr.Iov = &iovs[i]
				hdrs[i].Hdr.SetIovlen(1)
			}
			next := s // payload index
			var mine uint64
			failures := 0
			for ctx.Err() == nil {
				k := o.Batch
				if o.Count > 0 {
					if n := left.Add(-int64(k)); n < 0 {
						k += int(n)
						if k <= 0 {
							left.Add(int64(o.Batch))
							return
						}
						left.Add(int64(o.Batch - k))
					}
				}
				for i := 0; i < k; i++ {
					p := payloads[next]
					iovs[i].Base = &p[0]
					iovs[i].SetLen(len(p))
					if next++; next == len(payloads) {
						next = 0
					}
				}
				n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(k), 0, 0, 0)
				done := int(n)
				if e != 0 {
					done = 0
					errs.Add(1)
					if failures++; failures > 1000 {
						err := fmt.Errorf("bench: sendmmsg: %w", e)
						firstErr.CompareAndSwap(nil, &err)
						return
					}
					time.Sleep(100 * time.Microsecond)
				}
				if o.Count > 0 && done < k {
					left.Add(int64(k - done))
				}
				mine += uint64(done)
				sent.Add(uint64(done))
				if o.Progress != nil {
					o.Progress.Add(uint64(done))
				}
				if perSock > 0 {
					due := time.Duration(float64(mine) / perSock * 1e9)
					if d := due - time.Since(start); d > 0 {
						time.Sleep(d)
					}
				}
			}
		}()
	}
	wg.Wait()
	res := SocketResult{Sent: sent.Load(), Errors: errs.Load(), Elapsed: time.Since(start)}
	if p := firstErr.Load(); p != nil {
		return res, *p
	}
	return res, nil
}
