//go:build linux

// The TX side of a Socket: Transmit copies payloads into TX frames (a pool
// apart from the RX frames) and produces them on the TX ring; reap
// consumes the completion ring, where the kernel returns sent frames, and
// frees them. One goroutine at a time.

package xdp

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Transmit copies each payload (a whole frame, from the Ethernet header
// on) into a TX frame, queues them on the TX ring in one batch and kicks
// the kernel if the TX ring asks for it. It first reaps the completion
// ring to recycle TX frames. It returns how many payloads were queued, in
// order: fewer than len(payloads) when TX frames or ring slots ran out
// (try again later) or at a payload of the wrong size (ErrPayloadSize).
// The payloads are not referenced after Transmit returns.
//
// One goroutine at a time: see Socket.
func (s *Socket) Transmit(payloads [][]byte) (int, error) {
	if s.tx.descs == nil {
		return 0, ErrNoTx
	}
	if len(payloads) == 0 {
		return 0, nil
	}
	if !s.enter() {
		return 0, ErrClosed
	}
	defer s.leave()
	s.reap()
	n := min(len(payloads), len(s.txFree))
	var err error
	for k := 0; k < n; k++ {
		if l := len(payloads[k]); l == 0 || l > int(s.cfg.FrameSize) {
			err = fmt.Errorf("%w: payload %d is %d bytes, frame %d", ErrPayloadSize, k, l, s.cfg.FrameSize)
			n = k
			break
		}
	}
	idx, got := s.tx.reserve(uint32(n))
	for i := uint32(0); i < got; i++ {
		a := s.txFree[len(s.txFree)-1]
		s.txFree = s.txFree[:len(s.txFree)-1]
		s.txBusy[(a-s.rxEnd)>>s.frameShift] = true
		p := payloads[i]
		copy(s.umem[a:a+uint64(len(p))], p)
		*s.tx.desc(idx + i) = desc{Addr: a, Len: uint32(len(p))}
	}
	if got > 0 {
		s.tx.submit()
		s.txQueued.Add(uint64(got))
	}
	if kerr := s.kickTx(); kerr != nil && err == nil {
		err = kerr
	}
	return int(got), err
}

// reap takes the completion ring's addresses back onto the TX free stack.
func (s *Socket) reap() {
	out := uint32(cap(s.txFree) - len(s.txFree))
	if out == 0 {
		return
	}
	idx, n := s.comp.peek(out)
	if n == 0 {
		return
	}
	for i := uint32(0); i < n; i++ {
		a := *s.comp.addr(idx + i) &^ s.frameMask
		if a < s.rxEnd || a >= uint64(len(s.umem)) || !s.txBusy[(a-s.rxEnd)>>s.frameShift] {
			s.badDescs.Add(1)
			continue
		}
		s.txBusy[(a-s.rxEnd)>>s.frameShift] = false
		s.txFree = append(s.txFree, a)
	}
	s.comp.release()
	s.txCompleted.Add(uint64(n))
}

// kickTxBudget bounds the sendto calls of one kick: in copy mode the kernel
// sends at most 32 frames per call and answers EAGAIN while more remain.
const kickTxBudget = 16

// kickTx tells the kernel there is TX work, when it asks for it (always, in
// copy mode). EAGAIN, EBUSY, ENOBUFS and ENETDOWN are transient: the frames
// stay queued for the next kick.
func (s *Socket) kickTx() error {
	if s.fd < 0 || (s.needWakeup && !s.tx.needsWakeup()) {
		return nil
	}
	for budget := kickTxBudget; budget > 0; {
		s.txKicks.Add(1)
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0, unix.EBUSY, unix.ENOBUFS, unix.ENETDOWN:
			return nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			budget--
			continue
		}
		return fmt.Errorf("xdp: tx kick: %w", e)
	}
	return nil
}

// FlushTx kicks the kernel and reaps completions until every queued TX
// frame has completed, or timeout passes (ErrTimeout).
//
// One goroutine at a time, with Transmit: see Socket.
func (s *Socket) FlushTx(timeout time.Duration) error {
	if s.tx.descs == nil {
		return ErrNoTx
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	deadline := time.Now().Add(timeout)
	for {
		s.reap()
		if len(s.txFree) == cap(s.txFree) {
			return nil
		}
		if s.closing() {
			return ErrClosed
		}
		if err := s.kickTx(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("xdp: flush tx: %d frames outstanding: %w", cap(s.txFree)-len(s.txFree), ErrTimeout)
		}
		time.Sleep(20 * time.Microsecond)
	}
}
