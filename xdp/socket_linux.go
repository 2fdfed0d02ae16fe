//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Errors of the socket's life.
var (
	// ErrClosed is returned by calls on a closed Socket, and by a Receive
	// that was blocked (or spinning) when Close was called.
	ErrClosed = errors.New("xdp: socket closed")
	// ErrNoTx is returned by Transmit on a socket opened without TX ring.
	ErrNoTx = errors.New("xdp: socket has no TX ring")
	// ErrPayloadSize is returned by Transmit for an empty payload or one
	// larger than a frame; the payloads before it are queued.
	ErrPayloadSize = errors.New("xdp: payload size outside 1..FrameSize")
	// ErrTimeout is returned by FlushTx when the kernel has not completed
	// every queued frame in time.
	ErrTimeout = errors.New("xdp: timeout")
)

// Meta is the metadata the XDP program wrote in front of a frame.
type Meta struct {
	// RxNs is bpf_ktime_get_ns at XDP entry: CLOCK_MONOTONIC nanoseconds.
	RxNs uint64
	// OK says the metadata carried our magic: RxNs is meaningful. False
	// when the program could not stamp the frame (bpf_xdp_adjust_meta
	// refused) or the frame was redirected by someone else's program.
	OK bool
	// What the program parsed (0 when OK is false or it handed nothing
	// over): the offsets in Data of the UDP payload (its length is the
	// UDP header's, right before it) and of the IP source address, IPv6
	// or IPv4 by V6. The program checked every header these point into.
	PayloadOff uint16
	SrcOff     uint8
	V6         bool
}

// Frame is one received packet: a view into the UMEM, not a copy.
//
// Lifetime: Data is valid from the Receive that returned it until the
// Release that gives the frame back, and not one instruction longer — after
// Release the kernel may write the next packet into the same memory at any
// time. Nothing derived from Data (sub-slices, strings made with
// unsafe.String, gjson results over it) may outlive the Release. Data's
// capacity equals its length, so an append copies instead of writing into
// the neighbouring frame. A view stays valid across Close until Released:
// the UMEM is unmapped only when Close has run and every frame handed out
// has been Released.
type Frame struct {
	// Data is the packet from its Ethernet header on.
	Data []byte
	// Meta is the XDP metadata, copied out of the headroom.
	Meta Meta
	// Addr is the UMEM address of Data[0] (the RX descriptor's address);
	// Release uses it to find the frame.
	Addr uint64
}

// Stats are the socket's counters: the kernel's (XDP_STATISTICS) and ours.
// Every field counts up from Open.
type Stats struct {
	// RxDropped: packets the kernel dropped for want of a fill-ring frame
	// or because they did not fit a frame (Config.MaxPacket).
	RxDropped uint64
	// RxInvalidDescs, TxInvalidDescs: bad descriptors we gave the kernel
	// (should stay 0).
	RxInvalidDescs uint64
	TxInvalidDescs uint64
	// RxRingFull: packets dropped because the RX ring was full (the
	// worker does not keep up).
	RxRingFull uint64
	// RxFillRingEmptyDescs: times the kernel found the fill ring empty.
	RxFillRingEmptyDescs uint64
	// TxRingEmptyDescs: times the kernel found the TX ring empty.
	TxRingEmptyDescs uint64

	// Received frames handed out by Receive; Released frames given back.
	// Received - Released is what the caller holds.
	Received uint64
	Released uint64
	// Polls: poll(2) sleeps of Receive on an empty RX ring.
	Polls uint64
	// Wakeups: recvfrom(2) kicks because the fill ring flag asked
	// (XDP_RING_NEED_WAKEUP).
	Wakeups uint64
	// BadReleases: frames passed to Release that were not held by the
	// caller (released twice, or an address that is not an RX frame);
	// they were ignored.
	BadReleases uint64
	// BadDescs: RX descriptors pointing outside the RX frames or at a
	// frame the kernel did not own; skipped. A kernel bug: should stay 0.
	BadDescs uint64
	// TxQueued frames put on the TX ring; TxCompleted frames the kernel
	// gave back through the completion ring; TxKicks sendto(2) calls.
	TxQueued    uint64
	TxCompleted uint64
	TxKicks     uint64
}

// Ownership of an RX frame. Each RX frame is, at any time, in exactly one
// place, and state[frame] says which:
//
//	frameFree    on our free stack (s.free), waiting for room in the fill ring
//	frameKernel  in the fill ring, in the kernel, or in the RX ring not yet peeked
//	frameUser    handed out by Receive, not yet given back by Release
//
// Transitions: free -> kernel (refill, Release), kernel -> user (Receive),
// user -> kernel or free (Release). The kernel only puts into the RX ring
// frames it took from the fill ring, and we put a frame into the fill ring
// only on a transition into frameKernel, so a frame address is never in
// the fill ring twice and never handed out twice. Receive and Release check
// the state they expect and count a mismatch (BadDescs, BadReleases)
// instead of acting on it, so a caller's double Release cannot hand the
// same memory to two packets.
const (
	frameFree uint8 = iota
	frameKernel
	frameUser
)

// closedBit in Socket.refs marks the socket closed; the bits below count
// the calls in flight.
const closedBit = 1 << 62

// Socket is one AF_XDP socket bound to one RX queue, with its own UMEM.
//
// Concurrency:
//   - Receive and Release are the worker's: one goroutine at a time (or
//     external synchronization). They own the fill and RX rings, the free
//     stack and the frame states.
//   - Transmit and FlushTx: one goroutine at a time, possibly another one
//     than the worker's. They own the TX and completion rings and the TX
//     frame pool, which share nothing with the RX side.
//   - FD, Mode, Queue, Stats, Wake and Close: any goroutine, any time.
//
// Close is safe while another goroutine is blocked in Receive: every call
// that touches the mappings or the descriptor holds a reference (refs), Close
// marks the socket closed so no new call starts, wakes a poller through
// the eventfd in its poll set, waits until the references drop to zero,
// and only then unmaps the rings and closes the descriptors.
type Socket struct {
	fd, efd int
	ifindex int
	queue   int
	mode    BindMode
	// needWakeup: bound with XDP_USE_NEED_WAKEUP; system calls to kick
	// the kernel are made only when a ring's flag asks.
	needWakeup bool
	cfg        Config

	umem       []byte
	unmapUmem  func()
	frameShift uint
	frameMask  uint64 // FrameSize - 1: offset of an address in its frame
	rxEnd      uint64 // RX frames are [0, rxEnd), TX frames [rxEnd, len(umem))

	fill, comp, rx, tx ring

	// Worker state (Receive, Release).
	free    []uint64 // frameFree addresses; cap Frames, never reallocated
	state   []uint8  // per RX frame
	pollFds [2]unix.PollFd
	pollTs  unix.Timespec

	// TX state (Transmit, FlushTx).
	txFree []uint64 // TX frames not in the kernel; cap TxFrames
	txBusy []bool   // per TX frame: on the TX ring or not yet completed

	refs      atomic.Int64
	idle      chan struct{} // closed when closed and refs reach 0
	done      chan struct{} // closed when Close has taken the final stats
	closeOnce sync.Once
	closeErr  error
	final     Stats
	// umemRefs is 1 (the socket's) plus the frames the caller holds;
	// whoever drops it to 0 (Close or a Release after Close) unmaps the
	// UMEM, so no view is unmapped under the caller's feet.
	umemRefs atomic.Int64
	rings    [][]byte // ring mappings, unmapped by Close

	received, released, polls, wakeups atomic.Uint64
	badReleases, badDescs              atomic.Uint64
	txQueued, txCompleted, txKicks     atomic.Uint64
}

// Open creates an AF_XDP socket with its UMEM and rings and binds it to
// queue of the interface ifindex. The socket is created in the network
// namespace of the calling thread (run Open inside the namespace, e.g. in
// testenv's Host.Do); everything after that works from any thread.
//
// The config is validated before any system call. With BindAuto the bind
// tries zero-copy and falls back to copy mode; Mode says which it got.
// EBUSY (the queue still holds a socket that was just closed) is retried
// with backoff for Config.BusyRetry. On error nothing is left behind.
//
// The caller registers FD in the XDP program's XSKMAP under queue; closing
// the socket removes it from the map (the kernel does so on release).
func Open(ifindex, queue int, cfg Config) (*Socket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if ifindex <= 0 {
		return nil, &ConfigError{Field: "ifindex", Value: ifindex, Reason: "must be positive"}
	}
	if queue < 0 || queue > math.MaxUint32 {
		return nil, &ConfigError{Field: "queue", Value: queue, Reason: "out of range"}
	}
	deadline := time.Now().Add(cfg.BusyRetry)
	delay := time.Millisecond
	for {
		s, err := openMode(ifindex, queue, cfg)
		if err == nil || !errors.Is(err, unix.EBUSY) || cfg.BusyRetry < 0 || time.Now().After(deadline) {
			return s, err
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}

func openMode(ifindex, queue int, cfg Config) (*Socket, error) {
	switch cfg.Bind {
	case BindCopy:
		return open(ifindex, queue, cfg, unix.XDP_COPY)
	case BindZeroCopy:
		return open(ifindex, queue, cfg, unix.XDP_ZEROCOPY)
	}
	// A failed bind leaves nothing on the queue; the copy attempt starts
	// over with a fresh socket and UMEM rather than rebinding this one.
	s, zerr := open(ifindex, queue, cfg, unix.XDP_ZEROCOPY)
	if zerr == nil || errors.Is(zerr, unix.EBUSY) {
		return s, zerr
	}
	s, cerr := open(ifindex, queue, cfg, unix.XDP_COPY)
	if cerr != nil {
		return nil, fmt.Errorf("%w (zero-copy attempt: %v)", cerr, zerr)
	}
	return s, nil
}

// open makes one attempt with the given bind flag. Every resource goes on
// the undo stack as soon as it exists; an error unwinds the stack in
// reverse.
func open(ifindex, queue int, cfg Config, bindFlag uint16) (_ *Socket, err error) {
	st := &setup{wrap: func(what string, e error) error {
		return fmt.Errorf("xdp: %s (ifindex %d queue %d): %w", what, ifindex, queue, e)
	}}
	defer func() {
		if err != nil {
			st.rollback()
		}
	}()

	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return nil, st.wrap("socket (AF_XDP needs CAP_NET_RAW)", err)
	}
	if err != nil {
		return nil, st.wrap("socket", err)
	}
	st.fd = fd
	st.push(func() { unix.Close(fd) })
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, st.wrap("eventfd", err)
	}
	st.push(func() { unix.Close(efd) })

	umem, err := st.registerUMEM(cfg)
	if err != nil {
		return nil, err
	}
	fill, comp, rx, tx, err := st.mapRings(cfg)
	if err != nil {
		return nil, err
	}

	s := newSocket(cfg, umem, fill, comp, rx, tx)
	s.fd, s.efd = fd, efd
	s.ifindex, s.queue = ifindex, queue
	s.rings = st.rings
	s.unmapUmem = func() { unix.Munmap(umem) }
	s.pollFds = [2]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}

	flags := bindFlag
	if !cfg.NoNeedWakeup {
		flags |= unix.XDP_USE_NEED_WAKEUP
	}
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	if err := unix.Bind(fd, sa); err != nil {
		mode := "copy"
		if bindFlag == unix.XDP_ZEROCOPY {
			mode = "zero-copy"
		}
		return nil, st.wrap("bind "+mode, err)
	}
	s.needWakeup = !cfg.NoNeedWakeup
	s.mode = BindCopy
	if bindFlag == unix.XDP_ZEROCOPY {
		s.mode = BindZeroCopy
	}
	// XDP_OPTIONS tells what the kernel really did.
	if opts, err := unix.GetsockoptInt(fd, unix.SOL_XDP, unix.XDP_OPTIONS); err == nil {
		if opts&unix.XDP_OPTIONS_ZEROCOPY != 0 {
			s.mode = BindZeroCopy
		} else {
			s.mode = BindCopy
		}
	}
	return s, nil
}

// newSocket sets up the user-space side over rings and a UMEM that exist
// already (mapped from the kernel by open, or in Go memory for tests) and
// gives the kernel its first fill-ring batch. fd and efd start at -1: no
// system call is made on them.
func newSocket(cfg Config, umem []byte, fill, comp, rx, tx ring) *Socket {
	shift := uint(bits.TrailingZeros32(cfg.FrameSize))
	s := &Socket{
		fd: -1, efd: -1, queue: -1,
		cfg:        cfg,
		umem:       umem,
		frameShift: shift,
		frameMask:  uint64(cfg.FrameSize) - 1,
		rxEnd:      uint64(cfg.Frames) << shift,
		fill:       fill, comp: comp, rx: rx, tx: tx,
		free:   make([]uint64, 0, cfg.Frames),
		state:  make([]uint8, cfg.Frames),
		txFree: make([]uint64, 0, cfg.TxFrames),
		txBusy: make([]bool, cfg.TxFrames),
		idle:   make(chan struct{}),
		done:   make(chan struct{}),
		mode:   BindCopy,
	}
	s.umemRefs.Store(1)
	s.pollFds = [2]unix.PollFd{{Fd: -1}, {Fd: -1}}
	s.fill.initProducer()
	s.rx.initConsumer()
	if s.tx.descs != nil {
		s.tx.initProducer()
	}
	s.comp.initConsumer()
	// Every RX frame starts free, pushed so that the lowest address pops
	// first; TX frames likewise on their own stack.
	for i := cfg.Frames; i > 0; i-- {
		s.free = append(s.free, uint64(i-1)<<shift)
	}
	for i := cfg.TxFrames; i > 0; i-- {
		s.txFree = append(s.txFree, s.rxEnd+uint64(i-1)<<shift)
	}
	s.refill()
	return s
}

// FD is the socket's descriptor, for the XSKMAP. Valid until Close.
func (s *Socket) FD() int { return s.fd }

// Mode says whether the socket is bound in copy or zero-copy mode.
func (s *Socket) Mode() BindMode { return s.mode }

// Queue is the RX queue the socket is bound to.
func (s *Socket) Queue() int { return s.queue }

// Config is the socket's configuration, defaults filled in.
func (s *Socket) Config() Config { return s.cfg }

// enter takes a reference for a call that touches the mappings or the
// descriptor; false once the socket is closed.
func (s *Socket) enter() bool {
	for {
		v := s.refs.Load()
		if v&closedBit != 0 {
			return false
		}
		if s.refs.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// leave drops the reference; the last one out of a closed socket lets
// Close proceed.
func (s *Socket) leave() {
	if s.refs.Add(-1) == closedBit {
		close(s.idle)
	}
}

func (s *Socket) closing() bool { return s.refs.Load()&closedBit != 0 }

// Stats returns the kernel's XDP_STATISTICS and our counters. After Close
// the kernel's are those Close read last; ours keep counting (Releases
// after Close).
func (s *Socket) Stats() (Stats, error) {
	if !s.enter() {
		<-s.done
		st := s.final
		s.ourStats(&st)
		return st, nil
	}
	defer s.leave()
	var st Stats
	err := s.kernelStats(&st)
	s.ourStats(&st)
	return st, err
}

func (s *Socket) kernelStats(st *Stats) error {
	if s.fd < 0 {
		return nil
	}
	var ks unix.XDPStatistics
	l := uint32(unsafe.Sizeof(ks))
	if err := getsockopt(s.fd, unix.XDP_STATISTICS, unsafe.Pointer(&ks), &l); err != nil {
		return fmt.Errorf("xdp: XDP_STATISTICS: %w", err)
	}
	// Kernels before 5.9 answer the first three fields only (24 bytes).
	if l != uint32(unsafe.Sizeof(ks)) && l != 24 {
		return fmt.Errorf("xdp: XDP_STATISTICS: %d bytes, want %d or 24", l, unsafe.Sizeof(ks))
	}
	st.RxDropped = ks.Rx_dropped
	st.RxInvalidDescs = ks.Rx_invalid_descs
	st.TxInvalidDescs = ks.Tx_invalid_descs
	st.RxRingFull = ks.Rx_ring_full
	st.RxFillRingEmptyDescs = ks.Rx_fill_ring_empty_descs
	st.TxRingEmptyDescs = ks.Tx_ring_empty_descs
	return nil
}

func (s *Socket) ourStats(st *Stats) {
	st.Received = s.received.Load()
	st.Released = s.released.Load()
	st.Polls = s.polls.Load()
	st.Wakeups = s.wakeups.Load()
	st.BadReleases = s.badReleases.Load()
	st.BadDescs = s.badDescs.Load()
	st.TxQueued = s.txQueued.Load()
	st.TxCompleted = s.txCompleted.Load()
	st.TxKicks = s.txKicks.Load()
}

// Close closes the socket: a Receive blocked in poll or spinning returns
// ErrClosed, Close waits for every call in flight to leave (they are all
// bounded once the socket is marked closed), reads the final Stats, then
// unmaps the rings and closes the descriptors. The UMEM is unmapped now if
// the caller holds no frame, else by the Release of the last one. Closing
// the descriptor removes the socket from any XSKMAP. Close is idempotent;
// later calls return the first one's error.
func (s *Socket) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Socket) close() error {
	for {
		v := s.refs.Load()
		if s.refs.CompareAndSwap(v, v|closedBit) {
			if v == 0 {
				close(s.idle)
			}
			break
		}
	}
	var errs []error
	if s.efd >= 0 {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		for {
			_, err := unix.Write(s.efd, one[:])
			if err != unix.EINTR {
				// EAGAIN only if the counter is saturated: readable anyway.
				if err != nil && err != unix.EAGAIN {
					errs = append(errs, fmt.Errorf("xdp: wake poller: %w", err))
				}
				break
			}
		}
	}
	<-s.idle
	// No call is in flight and none can start: the rings, the descriptor
	// and the stacks are ours alone from here.
	if err := s.kernelStats(&s.final); err != nil {
		errs = append(errs, err)
	}
	s.ourStats(&s.final)
	close(s.done)
	for _, m := range s.rings {
		if err := unix.Munmap(m); err != nil {
			errs = append(errs, fmt.Errorf("xdp: munmap ring: %w", err))
		}
	}
	for _, fd := range []int{s.fd, s.efd} {
		if fd >= 0 {
			if err := unix.Close(fd); err != nil {
				errs = append(errs, fmt.Errorf("xdp: close: %w", err))
			}
		}
	}
	if s.umemRefs.Add(-1) == 0 && s.unmapUmem != nil {
		s.unmapUmem()
	}
	return errors.Join(errs...)
}

func setsockopt(fd, opt int, p unsafe.Pointer, n uintptr) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), n, 0)
		if e != unix.EINTR {
			if e != 0 {
				return e
			}
			return nil
		}
	}
}

func getsockopt(fd, opt int, p unsafe.Pointer, n *uint32) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(n)), 0)
		if e != unix.EINTR {
			if e != 0 {
				return e
			}
			return nil
		}
	}
}

// maxNUMANodes bounds Config.NUMANode (the kernel's MAX_NUMNODES is at most
// 1024).
const maxNUMANodes = 1024

// mpolPreferred is MPOL_PREFERRED (include/uapi/linux/mempolicy.h): take
// pages from the node, from others only when it has none free.
const mpolPreferred = 1

// mbindPreferred sets the memory policy of mem to prefer node. It must run
// before the pages are first touched (XDP_UMEM_REG pins them).
func mbindPreferred(mem []byte, node int) error {
	var mask [maxNUMANodes / 64]uint64
	mask[node/64] = 1 << (node % 64)
	// maxnode counts bits plus one: the kernel reads maxnode-1 bits.
	_, _, errno := unix.Syscall6(unix.SYS_MBIND, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)),
		mpolPreferred, uintptr(unsafe.Pointer(&mask[0])), uintptr(len(mask)*64+1), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
