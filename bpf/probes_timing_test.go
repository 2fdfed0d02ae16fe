//go:build linux

package bpf

import (
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkProbeSocketPath is what the probes add to the socket receive
// path of a datagram: a round of 64 datagrams sent over loopback and read
// back with recvmmsg on one thread. Loopback runs the receive softirq
// (the stack, the socket filter, the receive timestamp) on the sending
// thread, so that thread's CPU time per datagram is the whole path, the
// kernel's included. Variants: no probes; the probes at their defaults
// (every probe, the filter timing one datagram in DefaultSockSample, host
// receive timestamps on); the same without the timestamps; the
// timestamps alone; the filter timing every datagram.
//
// Host receive timestamping is a host-wide switch: while any socket on the
// host asks for timestamps (another process, another test), the variants
// without them have them too and read alike.
func BenchmarkProbeSocketPath(b *testing.B) {
	for _, c := range []struct {
		name         string
		probes, rxts bool
		sample       int
	}{
		{"none", false, false, 0},
		{"defaults", true, true, 0},
		{"no_rxts", true, false, 0},
		{"rxts_only", false, true, 0},
		{"every", true, true, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			prNeedRoot(b)
			rx, tx := prLoopbackPair(b)
			if c.probes {
				p := prLoad(b, ProbeOptions{SockSample: c.sample, RxTimestamps: c.rxts}, ProbeSockLatency)
				if err := p.AttachSocket(rx); err != nil {
					b.Fatal(err)
				}
			} else if c.rxts {
				ts, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { unix.Close(ts) })
				if err := unix.SetsockoptInt(ts, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
					b.Fatal(err)
				}
			}
			const round = 64
			payload := []byte(`{"event_id":"e-000123","user_id":"u-48213","amount":1234.56,"currency":"USD","event_type":"payment","ts":1732550400123,"ip":"203.0.113.7"}`)
			send := make([]unix.Mmsghdr, round)
			sendIov := unix.Iovec{Base: &payload[0]}
			sendIov.SetLen(len(payload))
			for i := range send {
				send[i].Hdr.Iov, send[i].Hdr.Iovlen = &sendIov, 1
			}
			recv := make([]unix.Mmsghdr, round)
			bufs := make([]byte, round*2048)
			iovs := make([]unix.Iovec, round)
			for i := range recv {
				iovs[i] = unix.Iovec{Base: &bufs[i*2048]}
				iovs[i].SetLen(2048)
				recv[i].Hdr.Iov, recv[i].Hdr.Iovlen = &iovs[i], 1
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			// A warm-up round: the first timestamped packets may arrive
			// before the static key is flipped (from a work queue).
			prRound(b, tx, rx, send, recv)
			b.ReportAllocs()
			var sendNs, recvNs int64
			var datagrams int
			for b.Loop() {
				sendNs += prSend(b, tx, send)
				recvNs += prRecv(b, rx, recv, round)
				datagrams += round
			}
			d := float64(max(datagrams, 1))
			b.ReportMetric(float64(sendNs+recvNs)/d, "cpu-ns/datagram")
			// The sending side carries the receive softirq (stack,
			// filter, timestamp), the reading side the recvmmsg.
			b.ReportMetric(float64(sendNs)/d, "send-ns/datagram")
			b.ReportMetric(float64(recvNs)/d, "read-ns/datagram")
		})
	}
}

// prRound sends len(send) datagrams from tx and reads them all from rx.
func prRound(b *testing.B, tx, rx int, send, recv []unix.Mmsghdr) {
	prSend(b, tx, send)
	prRecv(b, rx, recv, len(send))
}

// prSend sends len(send) datagrams from tx; it returns the thread's CPU
// time it took, ns.
func prSend(b *testing.B, tx int, send []unix.Mmsghdr) int64 {
	c0 := prThreadCPU()
	for sent := 0; sent < len(send); {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(tx), uintptr(unsafe.Pointer(&send[sent])),
			uintptr(len(send)-sent), 0, 0, 0)
		if errno != 0 {
			b.Fatalf("sendmmsg: %v", errno)
		}
		sent += int(r)
	}
	return prThreadCPU() - c0
}

// prRecv reads n datagrams from rx; it returns the thread's CPU time it
// took, ns.
func prRecv(b *testing.B, rx int, recv []unix.Mmsghdr, n int) int64 {
	c0 := prThreadCPU()
	for got := 0; got < n; {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(rx), uintptr(unsafe.Pointer(&recv[0])),
			uintptr(len(recv)), unix.MSG_WAITFORONE, 0, 0)
		if errno != 0 {
			b.Fatalf("recvmmsg: %v", errno)
		}
		got += int(r)
	}
	return prThreadCPU() - c0
}

// prLoopbackPair opens a UDP socket on 127.0.0.1 (1 s receive timeout, 4
// MiB buffer) and a socket connected to it; both close with the test.
func prLoopbackPair(b *testing.B) (rx, tx int) {
	b.Helper()
	rx, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(rx) })
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		b.Fatal(err)
	}
	if err := unix.SetsockoptInt(rx, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20); err != nil {
		b.Fatal(err)
	}
	if err := unix.Bind(rx, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		b.Fatal(err)
	}
	sa, err := unix.Getsockname(rx)
	if err != nil {
		b.Fatal(err)
	}
	tx, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(tx) })
	if err := unix.Connect(tx, sa); err != nil {
		b.Fatal(err)
	}
	return rx, tx
}

// prThreadCPU is the calling thread's CPU time in ns.
func prThreadCPU() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return ts.Nano()
}

// BenchmarkProbeKfreeSkb is what the kfree_skb probe costs a dropped
// datagram: rounds of 64 datagrams sent over loopback to a socket whose
// receive buffer holds only a few, so nearly all of them are dropped in
// the sending thread's softirq, where the probe runs. Variants: no probe;
// the probe counting our port (every drop is ours: headers read, port,
// namespace, the count); the probe for another port (every drop read and
// left out); the probe for another namespace.
func BenchmarkProbeKfreeSkb(b *testing.B) {
	for _, c := range []struct {
		name      string
		probe     bool
		otherPort bool
		otherNS   bool
	}{
		{"none", false, false, false},
		{"ours", true, false, false},
		{"other_port", true, true, false},
		{"other_netns", true, false, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			prNeedRoot(b)
			rx, tx := prLoopbackPair(b)
			if err := unix.SetsockoptInt(rx, unix.SOL_SOCKET, unix.SO_RCVBUF, 1024); err != nil {
				b.Fatal(err)
			}
			sa, err := unix.Getsockname(rx)
			if err != nil {
				b.Fatal(err)
			}
			port := uint16(sa.(*unix.SockaddrInet4).Port)
			var p *Probes
			if c.probe {
				opts := ProbeOptions{Ports: []uint16{port}, NetnsIno: NetnsIno()}
				if c.otherPort {
					opts.Ports = []uint16{port + 1}
				}
				if c.otherNS {
					opts.NetnsIno++
				}
				p = prLoad(b, opts, ProbeKfreeSkb)
			}
			const round = 64
			payload := make([]byte, 200)
			send := make([]unix.Mmsghdr, round)
			iov := unix.Iovec{Base: &payload[0]}
			iov.SetLen(len(payload))
			for i := range send {
				send[i].Hdr.Iov, send[i].Hdr.Iovlen = &iov, 1
			}
			buf := make([]byte, 2048)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			drain := func() {
				for {
					_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(rx), uintptr(unsafe.Pointer(&buf[0])),
						uintptr(len(buf)), unix.MSG_DONTWAIT, 0, 0)
					if errno != 0 {
						return
					}
				}
			}
			var d0 map[string]uint64
			if p != nil {
				if d0, err = p.ReadKernelDrops(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			var cpuNs int64
			var datagrams int
			for b.Loop() {
				c0 := prThreadCPU()
				for sent := 0; sent < round; {
					r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(tx), uintptr(unsafe.Pointer(&send[sent])),
						uintptr(round-sent), 0, 0, 0)
					if errno != 0 {
						b.Fatalf("sendmmsg: %v", errno)
					}
					sent += int(r)
				}
				cpuNs += prThreadCPU() - c0
				datagrams += round
				drain()
			}
			b.ReportMetric(float64(cpuNs)/float64(max(datagrams, 1)), "cpu-ns/datagram")
			if p != nil {
				d1, err := p.ReadKernelDrops()
				if err != nil {
					b.Fatal(err)
				}
				n := d1["socket_rcvbuff"] - d0["socket_rcvbuff"]
				if want := !c.otherPort && !c.otherNS; want != (n > 0) {
					b.Errorf("%d socket_rcvbuff drops counted", n)
				}
				b.ReportMetric(float64(n)/float64(max(datagrams, 1)), "counted/datagram")
			}
		})
	}
}
