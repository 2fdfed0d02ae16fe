//go:build linux

// The RX side of a Socket: the RX ring, which the kernel produces into
// and Receive consumes (one release store per batch), and the frame views
// handed out from it with their stamps. Only the worker that owns the
// socket calls Receive; Frame documents how long a view lives.

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Receive waits for frames and fills batch with up to len(batch) of them,
// returning how many. The frames are views into the UMEM (see Frame for
// their lifetime); give each back with Release once done with it. Frames
// not released keep the kernel from using them: if the caller holds them
// all, the kernel drops (and counts) what arrives.
//
// With the RX ring empty, Receive sleeps in poll(2) (POLLIN on the socket
// and the close eventfd), after spinning for Config.Spin, or spins with
// Config.BusyPoll, until frames arrive, Config.PollTimeout passes (then it
// returns 0, nil), Wake is called (0, nil) or the socket is closed
// (ErrClosed). EINTR is retried.
//
// The worker's goroutine only: see Socket.
func (s *Socket) Receive(batch []Frame) (int, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	if !s.enter() {
		return 0, ErrClosed
	}
	defer s.leave()
	want := uint32(min(len(batch), math.MaxUint32))
	var deadline, spinEnd time.Time
	spinning := s.cfg.BusyPoll || s.cfg.Spin > 0 // until the spin is over
	for turn := 0; ; turn++ {
		if n := s.take(batch, want); n > 0 {
			return n, nil
		}
		// Empty: give the kernel every frame we can before waiting.
		s.refill()
		if s.closing() {
			return 0, ErrClosed
		}
		// The clock: read on the first empty turn, then, while spinning,
		// every spinClockTurns turns only (a turn without it costs a few
		// ns; a clock read can cost more than the rest of the turn), and
		// after every poll.
		if (s.cfg.PollTimeout > 0 || spinning) && (!spinning || turn%spinClockTurns == 0) {
			now := time.Now()
			if s.cfg.PollTimeout > 0 {
				if deadline.IsZero() {
					deadline = now.Add(s.cfg.PollTimeout)
				} else if !now.Before(deadline) {
					return 0, nil
				}
			}
			if spinning && !s.cfg.BusyPoll {
				if spinEnd.IsZero() {
					spinEnd = now.Add(s.cfg.Spin)
				} else if !now.Before(spinEnd) {
					spinning = false
				}
			}
		}
		if s.cfg.BusyPoll {
			// Nobody else wakes the driver while we spin: kick it if
			// the fill ring asks (zero-copy; never in copy mode).
			s.wakeFill()
			if turn%256 == 255 {
				runtime.Gosched()
			}
			continue
		}
		if spinning {
			// Spin a while before sleeping. No Gosched here: the worker
			// is locked to its thread, and a locked goroutine that
			// yields hands its P away and parks the thread until
			// another thread schedules it back — two wakeups, more than
			// the sleep this spin avoids. The runtime still preempts
			// the loop when it must (asynchronous preemption).
			s.wakeFill()
			continue
		}
		if err := s.poll(deadline); err != nil {
			if err == errWoken {
				return 0, nil
			}
			return 0, err
		}
	}
}

// errWoken: poll returned for a Wake.
var errWoken = errors.New("xdp: woken")

// Wake makes the Receive sleeping in poll(2) return (0, nil) at once; if
// none sleeps, the next one to poll returns so without sleeping (a wake is
// never lost, and wakes before one poll count as one). With
// SetPollTimeout(0) it is how another goroutine gets an idle worker out of
// Receive without closing the socket (e.g. to stop). It does not end a
// spin or a busy poll; those look at the ring and return on their own.
// Any goroutine; ErrClosed after Close.
func (s *Socket) Wake() error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	for {
		_, err := unix.Write(s.efd, one[:])
		switch err {
		case nil, unix.EAGAIN: // EAGAIN: the counter is saturated, readable anyway
			return nil
		case unix.EINTR:
			continue
		default:
			return fmt.Errorf("xdp: wake: %w", err)
		}
	}
}

// SetPollTimeout sets Config.PollTimeout for the following Receive calls:
// a worker can wait with a short timeout while traffic flows and without
// one (0: until frames, Wake or Close) once it is idle. The worker's
// goroutine only, as Receive.
func (s *Socket) SetPollTimeout(d time.Duration) { s.cfg.PollTimeout = max(d, 0) }

// spinClockTurns is how many turns of Receive's spin pass between clock
// reads: a spin ends at most that many turns after Config.Spin or
// PollTimeout has passed — well under a µs, a turn being a handful of
// atomic loads — so the spin stays Config.Spin long.
const spinClockTurns = 64

// take moves up to want RX descriptors into batch as frames, releases them
// from the RX ring in one store and tops up the fill ring.
func (s *Socket) take(batch []Frame, want uint32) int {
	idx, n := s.rx.peek(want)
	if n == 0 {
		return 0
	}
	out := 0
	for i := uint32(0); i < n; i++ {
		// Copy the descriptor out: once released the kernel reuses the slot.
		d := *s.rx.desc(idx + i)
		if !s.view(&batch[out], d) {
			s.badDescs.Add(1)
			continue
		}
		out++
	}
	s.rx.release()
	if out > 0 {
		s.umemRefs.Add(int64(out))
		s.received.Add(uint64(out))
	}
	if len(s.free) > 0 {
		s.refill()
	}
	return out
}

// view fills f for descriptor d after checking that d lies inside one RX
// frame that the kernel owned, and moves that frame to the caller.
func (s *Socket) view(f *Frame, d desc) bool {
	if d.Addr >= s.rxEnd || (d.Addr&s.frameMask)+uint64(d.Len) > s.frameMask+1 {
		return false
	}
	i := d.Addr >> s.frameShift
	if s.state[i] != frameKernel {
		return false
	}
	s.state[i] = frameUser
	start, end := d.Addr, d.Addr+uint64(d.Len)
	if s.cfg.PrefixStamp {
		f.Meta, start = s.prefix(start, end)
	} else {
		f.Meta = s.meta(d.Addr)
	}
	f.Data = s.umem[start:end:end]
	f.Addr = d.Addr
	return true
}

// meta reads the metadata at addr - MetaSize. It lies in the kernel's
// XDP_PACKET_HEADROOM of the same frame, so it is ours to read while the
// frame is. The magic is cleared after reading: a later packet in this
// frame that the program could not stamp must not show this stamp.
func (s *Socket) meta(addr uint64) Meta {
	if addr&s.frameMask < MetaSize {
		return Meta{}
	}
	m := s.umem[addr-MetaSize : addr]
	if binary.NativeEndian.Uint32(m[8:12]) != MetaMagic {
		return Meta{}
	}
	binary.NativeEndian.PutUint32(m[8:12], 0)
	return readMeta(m)
}

// readMeta decodes struct xgate_meta (its magic checked by the caller).
func readMeta(m []byte) Meta {
	return Meta{RxNs: binary.NativeEndian.Uint64(m[0:8]), OK: true,
		PayloadOff: binary.NativeEndian.Uint16(m[12:14]), SrcOff: m[14], V6: m[15]&metaV6 != 0}
}

// prefix reads the stamp header at the start of the frame [start, end)
// (Config.PrefixStamp) and returns it with the packet's start behind it.
// The program prefixes every frame it redirects (it drops one it cannot
// prefix), so a frame without our magic came from someone else's program:
// it is handed out whole, without a stamp. The header is rewritten by the
// program for every packet, so nothing needs clearing.
func (s *Socket) prefix(start, end uint64) (Meta, uint64) {
	if end-start < MetaSize {
		return Meta{}, start
	}
	m := s.umem[start : start+MetaSize]
	if binary.NativeEndian.Uint32(m[8:12]) != MetaMagic {
		return Meta{}, start
	}
	return readMeta(m), start + MetaSize
}
