//go:build linux

// The UMEM and the four ring mappings of one open attempt: the setup owns
// every resource from the moment it exists, and rollback releases them in
// reverse when the attempt fails, so a failed Open leaves nothing behind.

package xdp

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setup is one open attempt: the AF_XDP socket, the resources made so far
// (undo, in order) and the ring mappings a Socket will own on success.
type setup struct {
	fd    int
	undo  []func()
	rings [][]byte
	wrap  func(what string, err error) error
}

func (st *setup) push(f func()) { st.undo = append(st.undo, f) }

// rollback releases what the attempt made, last first.
func (st *setup) rollback() {
	for i := len(st.undo) - 1; i >= 0; i-- {
		st.undo[i]()
	}
}

// registerUMEM maps the UMEM and registers it with the socket.
//
// The UMEM: anonymous, hence page aligned, RX frames then TX frames. It
// lives outside the Go heap, so the collector neither moves nor frees it;
// the kernel pins its pages at XDP_UMEM_REG until the socket is released,
// and we unmap it only when no view can be alive (see Socket.umemRefs).
func (st *setup) registerUMEM(cfg Config) ([]byte, error) {
	umemLen := (uint64(cfg.Frames) + uint64(cfg.TxFrames)) * uint64(cfg.FrameSize)
	umem, err := unix.Mmap(-1, 0, int(umemLen), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, st.wrap("mmap umem", err)
	}
	st.push(func() { unix.Munmap(umem) })
	if cfg.PlaceNUMA {
		if err := mbindPreferred(umem, cfg.NUMANode); err != nil {
			return nil, st.wrap(fmt.Sprintf("mbind umem to NUMA node %d", cfg.NUMANode), err)
		}
	}
	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&umem[0]))),
		Len:      umemLen,
		Size:     cfg.FrameSize,
		Headroom: cfg.Headroom,
	}
	if err := setsockopt(st.fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) {
			return nil, st.wrap(fmt.Sprintf("XDP_UMEM_REG of %d bytes (pinned: needs CAP_IPC_LOCK or RLIMIT_MEMLOCK that large)", umemLen), err)
		}
		return nil, st.wrap("XDP_UMEM_REG", err)
	}
	return umem, nil
}

// mapRings sizes the fill, completion, RX and TX rings (a size of 0 leaves
// a ring out) and maps them.
func (st *setup) mapRings(cfg Config) (fill, comp, rx, tx ring, err error) {
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
		if err := unix.SetsockoptInt(st.fd, unix.SOL_XDP, r.opt, int(r.size)); err != nil {
			return fill, comp, rx, tx, st.wrap(fmt.Sprintf("ring size (opt %d)", r.opt), err)
		}
	}

	var off unix.XDPMmapOffsets
	optlen := uint32(unsafe.Sizeof(off))
	if err := getsockopt(st.fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), &optlen); err != nil {
		return fill, comp, rx, tx, st.wrap("XDP_MMAP_OFFSETS", err)
	}
	// The length tells the layout: older kernels answer without the flags
	// offsets, which need_wakeup cannot do without.
	if optlen != uint32(unsafe.Sizeof(off)) {
		return fill, comp, rx, tx, st.wrap("XDP_MMAP_OFFSETS",
			fmt.Errorf("%d bytes, want %d (kernel too old: needs ring flags, Linux >= 5.4)", optlen, unsafe.Sizeof(off)))
	}
	if fill, err = st.mapRing("fill", unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, cfg.FillSize, addrSize); err != nil {
		return
	}
	if comp, err = st.mapRing("completion", unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, cfg.CompletionSize, addrSize); err != nil {
		return
	}
	if rx, err = st.mapRing("rx", unix.XDP_PGOFF_RX_RING, off.Rx, cfg.RxSize, descSize); err != nil {
		return
	}
	tx, err = st.mapRing("tx", unix.XDP_PGOFF_TX_RING, off.Tx, cfg.TxSize, descSize)
	return
}

// mapRing maps one ring (nothing for 0 entries) and points a ring at its
// producer, consumer, flags and descriptors.
func (st *setup) mapRing(name string, pgoff int64, o unix.XDPRingOffset, entries uint32, entSize int) (ring, error) {
	if entries == 0 {
		return ring{}, nil
	}
	mem, err := unix.Mmap(st.fd, pgoff, int(o.Desc)+int(entries)*entSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return ring{}, st.wrap("mmap "+name+" ring", err)
	}
	st.push(func() { unix.Munmap(mem) })
	st.rings = append(st.rings, mem)
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
