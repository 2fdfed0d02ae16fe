//go:build linux

// The fill side of a Socket: Release puts frames back on the fill ring,
// which we produce into and the kernel consumes, and keeps every RX frame
// in exactly one place (see the frame states in socket_linux.go); poll
// sleeps until the RX ring has frames or the socket closes. The owning
// worker only.

package xdp

import (
	"errors"
	"fmt"
	"math"
	"time"

	"golang.org/x/sys/unix"
)

// Release gives frames back to the kernel through the fill ring, in one
// batch (one atomic store); those that do not fit wait on the free stack
// for the next refill. Call it only when nothing uses the frames' Data any
// more: from here on the kernel may overwrite them. Release clears the
// Data of the Frames it is given so a stale view in the batch reads as
// empty. Frames not held (released twice, or not from this socket) are
// counted in Stats.BadReleases and ignored.
//
// After Close, Release only drops the caller's hold on the UMEM (the last
// one unmaps it).
//
// The worker's goroutine only: see Socket.
func (s *Socket) Release(frames []Frame) {
	if len(frames) == 0 {
		return
	}
	if !s.enter() {
		s.releaseClosed(frames)
		return
	}
	defer s.leave()
	idx, got := s.fill.reserve(uint32(min(len(frames), math.MaxUint32)))
	w, valid, bad := uint32(0), 0, 0
	for k := range frames {
		a, ok := s.own(frames[k].Addr)
		frames[k].Data = nil
		if !ok {
			bad++
			continue
		}
		valid++
		if w < got {
			s.state[a>>s.frameShift] = frameKernel
			*s.fill.addr(idx + w) = a
			w++
		} else {
			s.state[a>>s.frameShift] = frameFree
			s.free = append(s.free, a)
		}
	}
	s.fill.unreserve(got - w)
	if w > 0 {
		s.fill.submit()
		s.wakeFill()
	}
	s.account(valid, bad)
}

// own checks that addr is in an RX frame the caller holds and returns the
// frame's base address.
func (s *Socket) own(addr uint64) (uint64, bool) {
	if addr >= s.rxEnd {
		return 0, false
	}
	if s.state[addr>>s.frameShift] != frameUser {
		return 0, false
	}
	return addr &^ s.frameMask, true
}

func (s *Socket) releaseClosed(frames []Frame) {
	valid, bad := 0, 0
	for k := range frames {
		a, ok := s.own(frames[k].Addr)
		frames[k].Data = nil
		if !ok {
			bad++
			continue
		}
		valid++
		s.state[a>>s.frameShift] = frameFree
	}
	s.account(valid, bad)
}

func (s *Socket) account(valid, bad int) {
	if bad > 0 {
		s.badReleases.Add(uint64(bad))
	}
	if valid > 0 {
		s.released.Add(uint64(valid))
		if s.umemRefs.Add(-int64(valid)) == 0 && s.unmapUmem != nil {
			s.unmapUmem()
		}
	}
}

// refill moves frames from the free stack into the fill ring: as many as
// fit, in one batch.
func (s *Socket) refill() {
	n := len(s.free)
	if n == 0 {
		return
	}
	idx, got := s.fill.reserve(uint32(min(n, math.MaxUint32)))
	if got == 0 {
		return
	}
	for i := uint32(0); i < got; i++ {
		a := s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		s.state[a>>s.frameShift] = frameKernel
		*s.fill.addr(idx + i) = a
	}
	s.fill.submit()
	s.wakeFill()
}

// wakeFill kicks the kernel after a fill-ring batch when the fill ring's
// need_wakeup flag asks for it (zero-copy drivers set it when they ran dry).
func (s *Socket) wakeFill() {
	if s.fd < 0 || !s.needWakeup || !s.fill.needsWakeup() {
		return
	}
	s.wakeups.Add(1)
	for {
		_, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		if e != unix.EINTR {
			// Any other outcome (0, EAGAIN, EBUSY, ENETDOWN…) is fine: the
			// kick is a hint, and a real failure shows in the next poll.
			return
		}
	}
}

// poll sleeps until the socket is readable, the eventfd fires (Close or
// Wake), or deadline (zero: none). POLLIN only: POLLOUT would report the
// TX ring's free room and make the loop spin. After a Wake (the eventfd
// fired, the socket not closed) it empties the eventfd and returns
// errWoken.
func (s *Socket) poll(deadline time.Time) error {
	var ts *unix.Timespec
	if !deadline.IsZero() {
		s.pollTs = unix.NsecToTimespec(max(int64(time.Until(deadline)), 0))
		ts = &s.pollTs
	}
	s.polls.Add(1)
	s.pollFds[0].Revents, s.pollFds[1].Revents = 0, 0
	_, err := unix.Ppoll(s.pollFds[:], ts, nil)
	switch {
	case err == nil:
	case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
		return nil // the caller looks at the ring and polls again
	default:
		return fmt.Errorf("xdp: poll: %w", err)
	}
	if s.pollFds[1].Revents != 0 {
		// Close sets closedBit before it writes the eventfd, so a poll
		// woken by Close sees it here. A Close that writes between this
		// check and the read below is not lost: its closedBit stops the
		// next Receive at enter.
		if s.closing() {
			return ErrClosed
		}
		var buf [8]byte
		_, _ = unix.Read(s.efd, buf[:]) // EAGAIN: already emptied; the wake stands
		return errWoken
	}
	if r := s.pollFds[0].Revents; r&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
		return fmt.Errorf("xdp: poll: socket revents %#x", r)
	}
	return nil
}
