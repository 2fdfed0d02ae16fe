//go:build linux

package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/xgate/xgate/gateway/config"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/baseline"
	"github.com/xgate/xgate/tools/loadgen"
	"github.com/xgate/xgate/xdp"
)

// The modes of a bench that are not the gateway: yardsticks for --compare.
const (
	// ModeBaseline is the plain Go server of tools/baseline (encoding/json).
	ModeBaseline = "baseline"
	// ModeGJSON is the same server reading the JSON with gjson.
	ModeGJSON = "gjson"
	// ModeRawSock is count-only recvmmsg receivers, one per worker CPU
	// (WorkerCPUs) in one SO_REUSEPORT group with the gateway's receive
	// buffer, behind the gateway's XDP program in socket mode.
	ModeRawSock = "rawsock"
	// ModeRawXSK is a count-only AF_XDP receiver per RX queue behind the
	// gateway's XDP program in afxdp mode: frames counted and released.
	ModeRawXSK = "rawxsk"
)

// AllModes are every mode a bench can run.
var AllModes = []string{string(config.ModeAFXDP), string(config.ModeSocket), string(config.ModePlain), ModeBaseline, ModeGJSON, ModeRawSock, ModeRawXSK}

// tally is where the datagrams of a window went, by the Report's keys.
type tally struct {
	XDPDrops, NotOurs, SocketDrops, RingDrops, DecodeErrors, Decided uint64
	// Busy is the gateway workers' busy time, summed (0: not measured).
	Busy time.Duration
}

func (t tally) accounted() uint64 {
	return t.XDPDrops + t.NotOurs + t.SocketDrops + t.RingDrops + t.DecodeErrors + t.Decided
}

// target is what a bench runs the load against.
type target interface {
	tally() (tally, error)
	latency() [gateway.LatencyBuckets]uint64 // zero if not measured
}

type gatewayTarget struct{ g *gateway.Gateway }

func (t gatewayTarget) tally() (tally, error) {
	s, err := t.g.Stats()
	// Busy: the workers' CPU time on their batches (preemption left out).
	var busy time.Duration
	for _, b := range s.WorkerBusyCPU {
		busy += b
	}
	// The gateway's identity by datagrams, folded into the bench's columns:
	// the AF_XDP losses (bad frames, queues without a socket) with the
	// ring drops, the stack's drops after XDP with the socket drops.
	return tally{XDPDrops: s.XDPDrops, NotOurs: s.NotForUs - min(s.NotForUs, s.Reassembled),
		SocketDrops: s.SocketDrops + s.KernelDrops, RingDrops: s.RingDrops + s.BadFrames + s.NoSocket,
		DecodeErrors: s.Rejected, Decided: s.Decided, Busy: busy}, err
}

func (t gatewayTarget) latency() [gateway.LatencyBuckets]uint64 { return t.g.Latency() }

// baselineTarget: the plain server; decided is what went through its rules.
type baselineTarget struct{ s *baseline.Server }

func (t baselineTarget) tally() (tally, error) {
	s, err := t.s.Stats()
	return tally{SocketDrops: s.SocketDrops, DecodeErrors: s.DecodeErrors, Decided: s.Decided}, err
}

func (baselineTarget) latency() (h [gateway.LatencyBuckets]uint64) { return h }

// startBaseline runs a baseline server (listen: baseline.Listen or
// ListenGJSON) in h, one socket per CPU, with a pass-through XDP program
// on h's veth (veth drops XDP-redirected frames when its receiving end has
// no program).
func startBaseline(h *testenv.Host, listen func(addr string, n, rcvbuf int) (*baseline.Server, error)) (target, func() error, error) {
	var s *baseline.Server
	if err := h.Do(func() error {
		var err error
		s, err = listen(fmt.Sprintf(":%d", Port), runtime.NumCPU(), 4<<20)
		return err
	}); err != nil {
		return nil, nil, err
	}
	rcv, err := loadgen.AttachPass(h)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	s.Serve()
	return baselineTarget{s}, func() error { return errors.Join(s.Close(), rcv.Close()) }, nil
}

// xdpProg is the gateway's XDP program loaded and attached on its own, for
// the count-only receivers; its counters are classified as the gateway's.
type xdpProg struct {
	x    *bpf.XDP
	lnk  link.Link
	base bpf.Counters
}

func attachXDP(h *testenv.Host, mode bpf.Delivery) (*xdpProg, error) {
	x, err := bpf.LoadXDP(bpf.Options{Queues: max(1, h.Queues), ListenPorts: []uint16{Port},
		Config: bpf.Config{Deliver: mode, PayloadCheck: true, CostSampleN: bpf.DefaultCostSampleN}})
	if err != nil {
		return nil, err
	}
	p := &xdpProg{x: x}
	if p.base, err = x.ReadCounters(); err != nil {
		x.Close()
		return nil, err
	}
	if err := h.Do(func() error {
		var err error
		p.lnk, err = x.Attach(h.Ifindex, link.XDPDriverMode)
		return err
	}); err != nil {
		x.Close()
		return nil, fmt.Errorf("bench: attach xdp to %s: %w", h.Link, err)
	}
	return p, nil
}

// counts adds the program's drops and not-ours packets to t.
func (p *xdpProg) counts(t *tally) error {
	c, err := p.x.ReadCounters()
	if err != nil {
		return err
	}
	for r := range c {
		c[r].Packets -= p.base[r].Packets
	}
	split := c.Split()
	t.NotOurs += split.NotForUs
	t.XDPDrops += split.Dropped
	return nil
}

func (p *xdpProg) close() error { return errors.Join(p.lnk.Close(), p.x.Close()) }

// pin locks the calling goroutine to an OS thread on cpu (best effort).
func pin(cpu int) {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	_ = unix.SchedSetaffinity(0, &set)
}

// rawSock: count-only recvmmsg receivers, laid out as the gateway's
// socket-mode workers are in a bench (one per WorkerCPUs CPU).
type rawSock struct {
	prog    *xdpProg
	fds     []int
	counted []atomic.Uint64
	stop    atomic.Bool
	wg      sync.WaitGroup
}

func startRawSock(h *testenv.Host) (target, func() error, error) {
	prog, err := attachXDP(h, bpf.DeliverStack)
	if err != nil {
		return nil, nil, err
	}
	cpus := WorkerCPUs()
	n := len(cpus)
	r := &rawSock{prog: prog, counted: make([]atomic.Uint64, n)}
	closeAll := func() error {
		r.stop.Store(true)
		r.wg.Wait()
		var errs []error
		for _, fd := range r.fds {
			errs = append(errs, unix.Close(fd))
		}
		return errors.Join(append(errs, prog.close())...)
	}
	if err := h.Do(func() error {
		for i := 0; i < n; i++ {
			fd, err := openUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), Port))
			if err != nil {
				return err
			}
			r.fds = append(r.fds, fd)
		}
		return nil
	}); err != nil {
		return nil, nil, errors.Join(err, closeAll())
	}
	for i, fd := range r.fds {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			pin(cpus[i])
			r.recvLoop(fd, &r.counted[i])
		}()
	}
	return r, closeAll, nil
}

func openUDP(addr netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, err
	}
	tv := unix.NsecToTimeval(int64(20 * time.Millisecond))
	err = errors.Join(
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1),
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, config.DefaultSocketRcvBuf),
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv),
	)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()})
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bench: rawsock socket: %w", err)
	}
	return fd, nil
}

const rawBatch = 64

func (r *rawSock) recvLoop(fd int, counted *atomic.Uint64) {
	hdrs := make([]unix.Mmsghdr, rawBatch)
	iovs := make([]unix.Iovec, rawBatch)
	slab := make([]byte, rawBatch*2048)
	for i := range hdrs {
		iovs[i] = unix.Iovec{Base: &slab[i*2048]}
		iovs[i].SetLen(2048)
		hdrs[i].Hdr.Iov = &iovs[i]
		hdrs[i].Hdr.Iovlen = 1
	}
	var total uint64
	for !r.stop.Load() {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])),
			rawBatch, unix.MSG_WAITFORONE, 0, 0)
		if errno != 0 {
			continue // EAGAIN (timeout), EINTR
		}
		total += uint64(n)
		counted.Store(total)
	}
}

func (r *rawSock) tally() (tally, error) {
	var t tally
	for i, fd := range r.fds {
		d, err := baseline.FDDrops(fd)
		if err != nil {
			return t, err
		}
		t.SocketDrops += d
		t.Decided += r.counted[i].Load()
	}
	return t, r.prog.counts(&t)
}

func (*rawSock) latency() (h [gateway.LatencyBuckets]uint64) { return h }

// rawXSK: count-only AF_XDP receivers, one per queue.
type rawXSK struct {
	prog    *xdpProg
	socks   []*xdp.Socket
	counted []atomic.Uint64
	stop    atomic.Bool
	wg      sync.WaitGroup
}

func startRawXSK(h *testenv.Host) (target, func() error, error) {
	prog, err := attachXDP(h, bpf.DeliverXSK)
	if err != nil {
		return nil, nil, err
	}
	queues := max(1, h.Queues)
	r := &rawXSK{prog: prog, counted: make([]atomic.Uint64, queues)}
	closeAll := func() error {
		r.stop.Store(true)
		r.wg.Wait()
		var errs []error
		for _, s := range r.socks {
			errs = append(errs, s.Close())
		}
		return errors.Join(append(errs, prog.close())...)
	}
	// The gateway's defaults (examples/xgate.yaml afxdp:, and its 50 µs
	// spin before a sleep).
	stamp, _ := prog.x.Stamp()
	cfg := xdp.Config{FrameSize: 4096, Frames: 8192, FillSize: 4096, RxSize: 4096,
		Spin: config.DefaultRxSpin, PollTimeout: 20 * time.Millisecond, PrefixStamp: stamp == bpf.StampPrefix}
	if err := h.Do(func() error {
		for q := 0; q < queues; q++ {
			s, err := xdp.Open(h.Ifindex, q, cfg)
			if err != nil {
				return fmt.Errorf("bench: rawxsk queue %d: %w", q, err)
			}
			r.socks = append(r.socks, s)
			if err := prog.x.RegisterXSK(uint32(q), s.FD()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, nil, errors.Join(err, closeAll())
	}
	cpus := WorkerCPUs()
	for q, s := range r.socks {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			pin(cpus[q%len(cpus)])
			r.recvLoop(s, &r.counted[q])
		}()
	}
	return r, closeAll, nil
}

func (r *rawXSK) recvLoop(s *xdp.Socket, counted *atomic.Uint64) {
	frames := make([]xdp.Frame, rawBatch)
	var total uint64
	for !r.stop.Load() {
		n, err := s.Receive(frames)
		if err != nil {
			if errors.Is(err, xdp.ErrTimeout) {
				continue
			}
			return
		}
		s.Release(frames[:n])
		total += uint64(n)
		counted.Store(total)
	}
}

func (r *rawXSK) tally() (tally, error) {
	var t tally
	for q, s := range r.socks {
		st, err := s.Stats()
		if err != nil {
			return t, err
		}
		t.RingDrops += st.RxDropped + st.RxRingFull
		t.Decided += r.counted[q].Load()
	}
	return t, r.prog.counts(&t)
}

func (*rawXSK) latency() (h [gateway.LatencyBuckets]uint64) { return h }
