package bpf

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/xgate/xgate/packet"

	"github.com/cilium/ebpf"
	"github.com/xgate/xgate/testenv"
	"golang.org/x/sys/unix"
)

// A minimal AF_XDP socket for the tests: one UMEM of xgFrames frames, fill
// and RX rings, bound in copy mode to queue 0 of a veth in a test namespace.
// Just enough to put a real socket into the XSKMAP and to read what a
// live-frames test run redirects into it; the real rings live in xdp/.

// BPF_F_TEST_XDP_LIVE_FRAMES (uapi linux/bpf.h).
const xgTestXDPLiveFrames = 1 << 1

const (
	xgFrames    = 16
	xgFrameSize = 4096
)

type xgRing struct {
	mem      []byte
	producer *uint32
	consumer *uint32
	descs    unsafe.Pointer
	mask     uint32
}

type xgXSKSock struct {
	fd   int
	umem []byte
	fill xgRing
	rx   xgRing
}

// xgXSK builds a veth pair and an AF_XDP socket on queue 0 of its B end;
// everything is removed when the test ends.
func xgXSK(t *testing.T) (*testenv.Host, int) {
	s, h := xgXSKRings(t)
	return h, s.fd
}

func xgXSKRings(t *testing.T) (*xgXSKSock, *testenv.Host) {
	t.Helper()
	pair := testenv.New(t, testenv.Options{RxQueues: 2})
	h := pair.B

	fd, err := h.Socket(unix.AF_XDP, unix.SOCK_RAW, 0)
	if err != nil {
		t.Skipf("AF_XDP socket: %v", err)
	}
	s := &xgXSKSock{fd: fd}
	t.Cleanup(func() { s.close() })

	s.umem, err = unix.Mmap(-1, 0, xgFrames*xgFrameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	xgNoErr(t, err)
	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(&s.umem[0]))),
		Len:  uint64(len(s.umem)),
		Size: xgFrameSize,
	}
	xgNoErr(t, xgSetsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)))
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING} {
		xgNoErr(t, unix.SetsockoptInt(fd, unix.SOL_XDP, opt, xgFrames))
	}

	var off unix.XDPMmapOffsets
	size := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&size)), 0); e != 0 {
		t.Fatalf("XDP_MMAP_OFFSETS: %v", e)
	}
	if size != uint32(unsafe.Sizeof(off)) {
		t.Fatalf("XDP_MMAP_OFFSETS: %d bytes, want %d", size, unsafe.Sizeof(off))
	}
	s.fill = xgMapRing(t, fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, 8)
	s.rx = xgMapRing(t, fd, unix.XDP_PGOFF_RX_RING, off.Rx, int(unsafe.Sizeof(unix.XDPDesc{})))

	// Give the kernel every frame to receive into.
	for i := uint32(0); i < xgFrames; i++ {
		*(*uint64)(unsafe.Add(s.fill.descs, uintptr(i)*8)) = uint64(i) * xgFrameSize
	}
	atomic.StoreUint32(s.fill.producer, xgFrames)

	sa := &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(h.Ifindex), QueueID: 0}
	if err := unix.Bind(fd, sa); err != nil {
		t.Skipf("bind AF_XDP socket to %s queue 0: %v", h.Link, err)
	}
	return s, h
}

func xgMapRing(t *testing.T, fd int, pgoff int64, off unix.XDPRingOffset, descSize int) xgRing {
	t.Helper()
	mem, err := unix.Mmap(fd, pgoff, int(off.Desc)+xgFrames*descSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	xgNoErr(t, err)
	base := unsafe.Pointer(&mem[0])
	return xgRing{
		mem:      mem,
		producer: (*uint32)(unsafe.Add(base, off.Producer)),
		consumer: (*uint32)(unsafe.Add(base, off.Consumer)),
		descs:    unsafe.Add(base, off.Desc),
		mask:     xgFrames - 1,
	}
}

func xgSetsockopt(fd, opt int, p unsafe.Pointer, n uintptr) error {
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), n, 0); e != 0 {
		return e
	}
	return nil
}

// recv waits up to timeout for one RX descriptor and returns the frame's
// bytes from address - metaLen on.
func (s *xgXSKSock) recv(timeout time.Duration, metaLen int) ([]byte, bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		cons := atomic.LoadUint32(s.rx.consumer)
		if atomic.LoadUint32(s.rx.producer) != cons {
			d := (*unix.XDPDesc)(unsafe.Add(s.rx.descs, uintptr(cons&s.rx.mask)*unsafe.Sizeof(unix.XDPDesc{})))
			start := int(d.Addr) - metaLen
			frame := append([]byte(nil), s.umem[start:int(d.Addr)+int(d.Len)]...)
			atomic.StoreUint32(s.rx.consumer, cons+1)
			return frame, true
		}
		time.Sleep(time.Millisecond)
	}
	return nil, false
}

func (s *xgXSKSock) close() {
	for _, m := range [][]byte{s.fill.mem, s.rx.mem} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	if s.fd >= 0 {
		unix.Close(s.fd)
	}
	if s.umem != nil {
		unix.Munmap(s.umem)
	}
}

// TestXDPAFXDPLive runs the program in live-frames mode
// (BPF_F_TEST_XDP_LIVE_FRAMES): the redirect really happens, and the frame
// arrives in the AF_XDP socket's RX ring with our metadata in front of it.
func TestXDPAFXDPLive(t *testing.T) {
	xgNeedRoot(t)
	s, h := xgXSKRings(t)
	x := xgLoad(t, Options{Config: Config{Deliver: DeliverXSK}, Queues: 4})
	xgNoErr(t, x.RegisterXSK(0, s.fd))
	pkt := packet.Frame{Src: xgSrc4, Dst: xgDst4, Payload: xgJSON}.Bytes()

	before := xgCounters(t, x)
	var t0, t1 uint64
	err := h.Do(func() error {
		t0 = Ktime()
		_, err := x.Program().Run(&ebpf.RunOptions{
			Data:    pkt,
			Context: xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(h.Ifindex)},
			Flags:   xgTestXDPLiveFrames,
			Repeat:  1,
		})
		t1 = Ktime()
		return err
	})
	if err != nil {
		if perr := Probe(FeatLiveFrames); perr != nil {
			t.Skipf("%s refused by this kernel: %v", FeatLiveFrames, perr)
		}
		t.Fatalf("live-frames test run: %v", err)
	}
	xgAssertDeltas(t, before, xgCounters(t, x), map[Reason]uint64{ReasonRedirect: 1}, len(pkt))

	// As metadata the stamp lies in front of the descriptor's address; as
	// a prefix header it is the start of the frame.
	metaLen := binary.Size(XdpXgateMeta{})
	ahead := metaLen
	if stamp, _ := x.Stamp(); stamp == StampPrefix {
		ahead = 0
	}
	frame, ok := s.recv(2*time.Second, ahead)
	if !ok {
		t.Fatal("no frame in the AF_XDP RX ring after a live redirect")
	}
	xgCheckMeta(t, frame, metaLen, pkt, t0, t1)
}
