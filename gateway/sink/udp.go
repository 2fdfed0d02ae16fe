package sink

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpBatch is how many datagrams one sendmmsg call sends at most.
const udpBatch = 64

// udpKeys are the keys only udp sinks have.
var udpKeys = []typeKey{
	{"address", "only udp sinks have an address", func(sp *Spec) bool { return sp.Address != "" }},
}

// checkUDP checks the address's form; whether the host resolves is seen
// at New.
func checkUDP(sp *Spec, _ func(string) bool) (key, msg string) {
	if sp.Address == "" {
		return "address", "missing: a udp sink sends to host:port"
	}
	if _, port, err := net.SplitHostPort(sp.Address); err != nil || port == "" || port == "0" {
		return "address", fmt.Sprintf("%q: want host:port", sp.Address)
	}
	return "", ""
}

// udpOutput forwards each record as one datagram over a connected UDP
// socket, up to udpBatch datagrams per sendmmsg(2) call, straight from the
// slab (the iovecs point into it; the writer owns the slab until write
// returns).
//
// Send errors (ECONNREFUSED after an ICMP port unreachable, ENOBUFS,
// EMSGSIZE…) fail the one datagram the kernel reports them for: it is
// counted in Errors and Failed, never fatal, and the batch goes on with the
// next. A send waits (in the runtime poller) only while the socket's send
// buffer is full, which is the backpressure that makes slabs run out.
//
// Concurrency: write and finish run on the sink's writer goroutine; abort
// (Close after its deadline) closes the socket, which the poller allows
// concurrently with a waiting send: the send then fails with ErrClosed.
type udpOutput struct {
	sk   *sink
	conn *net.UDPConn
	raw  syscall.RawConn
	iov  [udpBatch]unix.Iovec
	msgs [udpBatch]unix.Mmsghdr
	// send is the RawConn.Write callback, made once so that write does not
	// allocate a closure per call; it reads its input from n and leaves its
	// result in sent and errno.
	send  func(fd uintptr) bool
	n     int
	sent  int
	errno syscall.Errno
}

var _ sinkOutput = (*udpOutput)(nil)

func dialUDPOutput(sk *sink, sp Spec) (*udpOutput, error) {
	raddr, err := net.ResolveUDPAddr("udp", sp.Address)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w (want host:port)", sp.Address, err)
	}
	if raddr.Port == 0 {
		return nil, fmt.Errorf("%q: want a port other than 0", sp.Address)
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, fmt.Errorf("udp socket to %s: %w", raddr, err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("udp socket to %s: %w", raddr, err)
	}
	o := &udpOutput{sk: sk, conn: conn, raw: raw}
	for i := range o.msgs {
		o.msgs[i].Hdr.Iov = &o.iov[i]
		o.msgs[i].Hdr.Iovlen = 1
	}
	o.send = o.sendmmsg
	return o, nil
}

// sendmmsg sends msgs[:n] on the non-blocking socket; false asks the poller
// to wait until the socket is writable and call again.
func (o *udpOutput) sendmmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&o.msgs[0])), uintptr(o.n), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		o.sent, o.errno = int(r), e
		return true
	}
}

func (o *udpOutput) write(sl *slab) {
	cnt := &o.sk.cnt
	for i := 0; i < len(sl.ends); {
		o.n = min(udpBatch, len(sl.ends)-i)
		from := 0
		if i > 0 {
			from = int(sl.ends[i-1])
		}
		for j := range o.n {
			end := int(sl.ends[i+j])
			o.iov[j].Base = nil
			if end > from {
				o.iov[j].Base = &sl.buf[from]
			}
			o.iov[j].SetLen(end - from)
			from = end
		}
		o.sent, o.errno = 0, 0
		if err := o.raw.Write(o.send); err != nil { // closed by abort
			cnt.errors.Add(1)
			cnt.failed.Add(uint64(len(sl.ends) - i))
			return
		}
		if o.errno != 0 { // the first datagram failed; go on after it
			cnt.errors.Add(1)
			cnt.failed.Add(1)
			i++
			continue
		}
		var bytes uint64
		for j := range o.sent {
			bytes += uint64(o.iov[j].Len)
		}
		cnt.records.Add(uint64(o.sent))
		cnt.bytes.Add(bytes)
		i += o.sent
	}
}

func (o *udpOutput) afterRound(int64)    {}
func (o *udpOutput) idle(int64)          {}
func (o *udpOutput) tick() time.Duration { return 0 }

func (o *udpOutput) finish() error {
	if err := o.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func (o *udpOutput) abort() { o.conn.Close() }
