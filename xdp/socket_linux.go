//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"runtime"
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

// Mode is how a socket is bound: what the kernel actually did.
type Mode int

const (
	// ModeCopy: the kernel copies each frame into the UMEM (XDP_COPY; the
	// only mode veth and drivers without AF_XDP support offer).
	ModeCopy Mode = iota + 1
	// ModeZeroCopy: the driver DMAs straight into the UMEM (XDP_ZEROCOPY).
	ModeZeroCopy
)

func (m Mode) String() string {
	switch m {
	case ModeCopy:
		return "copy"
	case ModeZeroCopy:
		return "zerocopy"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Meta is the metadata the XDP program wrote in front of a frame.
type Meta struct {
	// RxNs is bpf_ktime_get_ns at XDP entry: CLOCK_MONOTONIC nanoseconds.
	RxNs uint64
	// OK says the metadata carried our magic: RxNs is meaningful. False
	// when the program could not stamp the frame (bpf_xdp_adjust_meta
	// refused) or the frame was redirected by someone else's program.
	OK bool
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
//   - FD, Mode, Queue, Stats and Close: any goroutine, any time.
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
	mode    Mode
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
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	wrap := func(what string, e error) error {
		return fmt.Errorf("xdp: %s (ifindex %d queue %d): %w", what, ifindex, queue, e)
	}

	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return nil, wrap("socket (AF_XDP needs CAP_NET_RAW)", err)
	}
	if err != nil {
		return nil, wrap("socket", err)
	}
	undo = append(undo, func() { unix.Close(fd) })
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, wrap("eventfd", err)
	}
	undo = append(undo, func() { unix.Close(efd) })

	// The UMEM: anonymous, hence page aligned, RX frames then TX frames.
	// It lives outside the Go heap, so the collector neither moves nor
	// frees it; the kernel pins its pages at XDP_UMEM_REG until the socket
	// is released, and we unmap it only when no view can be alive (see
	// Socket.umemRefs).
	umemLen := (uint64(cfg.Frames) + uint64(cfg.TxFrames)) * uint64(cfg.FrameSize)
	umem, err := unix.Mmap(-1, 0, int(umemLen), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, wrap("mmap umem", err)
	}
	undo = append(undo, func() { unix.Munmap(umem) })
	if cfg.PlaceNUMA {
		if err := mbindPreferred(umem, cfg.NUMANode); err != nil {
			return nil, wrap(fmt.Sprintf("mbind umem to NUMA node %d", cfg.NUMANode), err)
		}
	}
	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&umem[0]))),
		Len:      umemLen,
		Size:     cfg.FrameSize,
		Headroom: cfg.Headroom,
	}
	if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) {
			return nil, wrap(fmt.Sprintf("XDP_UMEM_REG of %d bytes (pinned: needs CAP_IPC_LOCK or RLIMIT_MEMLOCK that large)", umemLen), err)
		}
		return nil, wrap("XDP_UMEM_REG", err)
	}
	sizes := []struct {
		opt  int
		size uint32
	}{
		{unix.XDP_UMEM_FILL_RING, cfg.FillSize},
		{unix.XDP_UMEM_COMPLETION_RING, cfg.CompletionSize},
		{unix.XDP_RX_RING, cfg.RxSize},
		{unix.XDP_TX_RING, cfg.TxSize},
	}
	for _, r := range sizes {
		if r.size == 0 {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, int(r.size)); err != nil {
			return nil, wrap(fmt.Sprintf("ring size (opt %d)", r.opt), err)
		}
	}

	var off unix.XDPMmapOffsets
	optlen := uint32(unsafe.Sizeof(off))
	if err := getsockopt(fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), &optlen); err != nil {
		return nil, wrap("XDP_MMAP_OFFSETS", err)
	}
	// The length tells the layout: older kernels answer without the flags
	// offsets, which need_wakeup cannot do without.
	if optlen != uint32(unsafe.Sizeof(off)) {
		return nil, wrap("XDP_MMAP_OFFSETS", fmt.Errorf("%d bytes, want %d (kernel too old: needs ring flags, Linux >= 5.4)", optlen, unsafe.Sizeof(off)))
	}

	var rings [][]byte
	mapRing := func(name string, pgoff int64, o unix.XDPRingOffset, entries uint32, entSize int) (ring, error) {
		if entries == 0 {
			return ring{}, nil
		}
		mem, err := unix.Mmap(fd, pgoff, int(o.Desc)+int(entries)*entSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return ring{}, wrap("mmap "+name+" ring", err)
		}
		undo = append(undo, func() { unix.Munmap(mem) })
		rings = append(rings, mem)
		base := unsafe.Pointer(&mem[0])
		return ring{
			producer: (*uint32)(unsafe.Add(base, o.Producer)),
			consumer: (*uint32)(unsafe.Add(base, o.Consumer)),
			flags:    (*uint32)(unsafe.Add(base, o.Flags)),
			descs:    unsafe.Add(base, o.Desc),
			mask:     entries - 1,
			size:     entries,
			mem:      mem,
		}, nil
	}
	fill, err := mapRing("fill", unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, cfg.FillSize, addrSize)
	if err != nil {
		return nil, err
	}
	comp, err := mapRing("completion", unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, cfg.CompletionSize, addrSize)
	if err != nil {
		return nil, err
	}
	rx, err := mapRing("rx", unix.XDP_PGOFF_RX_RING, off.Rx, cfg.RxSize, descSize)
	if err != nil {
		return nil, err
	}
	tx, err := mapRing("tx", unix.XDP_PGOFF_TX_RING, off.Tx, cfg.TxSize, descSize)
	if err != nil {
		return nil, err
	}

	s := newSocket(cfg, umem, fill, comp, rx, tx)
	s.fd, s.efd = fd, efd
	s.ifindex, s.queue = ifindex, queue
	s.rings = rings
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
		return nil, wrap("bind "+mode, err)
	}
	s.needWakeup = !cfg.NoNeedWakeup
	s.mode = ModeCopy
	if bindFlag == unix.XDP_ZEROCOPY {
		s.mode = ModeZeroCopy
	}
	// XDP_OPTIONS tells what the kernel really did.
	if opts, err := unix.GetsockoptInt(fd, unix.SOL_XDP, unix.XDP_OPTIONS); err == nil {
		if opts&unix.XDP_OPTIONS_ZEROCOPY != 0 {
			s.mode = ModeZeroCopy
		} else {
			s.mode = ModeCopy
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
		mode:   ModeCopy,
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
func (s *Socket) Mode() Mode { return s.mode }

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

// Receive waits for frames and fills batch with up to len(batch) of them,
// returning how many. The frames are views into the UMEM (see Frame for
// their lifetime); give each back with Release once done with it. Frames
// not released keep the kernel from using them: if the caller holds them
// all, the kernel drops (and counts) what arrives.
//
// With the RX ring empty, Receive sleeps in poll(2) (POLLIN on the socket
// and the close eventfd), after spinning for Config.Spin, or spins with
// Config.BusyPoll, until frames arrive, Config.PollTimeout passes (then it
// returns 0, nil) or the socket is closed (ErrClosed). EINTR is retried.
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
			return 0, err
		}
	}
}

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
	return Meta{RxNs: binary.NativeEndian.Uint64(m[0:8]), OK: true}
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
	return Meta{RxNs: binary.NativeEndian.Uint64(m[0:8]), OK: true}, start + MetaSize
}

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

// poll sleeps until the socket is readable, the close eventfd fires, or
// deadline (zero: none). POLLIN only: POLLOUT would report the TX ring's
// free room and make the loop spin.
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
		return ErrClosed
	}
	if r := s.pollFds[0].Revents; r&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
		return fmt.Errorf("xdp: poll: socket revents %#x", r)
	}
	return nil
}

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
