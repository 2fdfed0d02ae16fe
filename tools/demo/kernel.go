package demo

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/gen"
)

const (
	demoPort  = 9000
	otherPort = 9001
)

// kernelRun is what the receiving side saw.
type kernelRun struct {
	datagrams atomic.Uint64
	blocks    atomic.Uint64
}

func runKernel(w io.Writer) error {
	fmt.Fprintln(w, "Part 2: the XDP ingest program on a test host pair (root)")
	pair, err := testenv.NewPair(testenv.Options{})
	if err != nil {
		return fmt.Errorf("build test hosts: %w", err)
	}
	defer pair.Close()
	fmt.Fprintf(w, "  hosts: sender %s (%s) ──veth── receiver %s (%s), namespaces removed at the end\n",
		pair.A.Addr, pair.A.NS, pair.B.Addr, pair.B.NS)

	const rate, burst = 20000, 500
	x, err := bpf.LoadXDP(bpf.Options{ListenPorts: []uint16{demoPort}, Config: bpf.Config{
		Mode: bpf.ModeSocket, BucketRate: rate, BucketBurst: burst, PayloadCheck: true}})
	if err != nil {
		return err
	}
	defer x.Close()
	var l link.Link
	mode := "native"
	if err := pair.B.Do(func() error {
		var err error
		l, err = x.Attach(pair.B.Ifindex, link.XDPDriverMode)
		if err != nil {
			mode = "generic"
			l, err = x.Attach(pair.B.Ifindex, link.XDPGenericMode)
		}
		return err
	}); err != nil {
		return err
	}
	defer l.Close()
	fmt.Fprintf(w, "  XDP program attached to %s in %s mode through a bpf_link; listen port %d, per-source bucket %d/s burst %d, payload check on\n",
		pair.B.Link, mode, demoPort, rate, burst)

	e, err := engine.New(engine.Config{Rules: Rules()})
	if err != nil {
		return err
	}
	fd, _, err := pair.B.ListenUDP(pair.B.Addr, demoPort, func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
	})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	snmp0, err := pair.B.SNMP()
	if err != nil {
		return err
	}

	var run kernelRun
	var stop atomic.Bool
	var wg sync.WaitGroup
	var recvErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		recvErr = receive(fd, e, x, &run, &stop)
	}()

	sent, err := send(w, pair)
	// Let the receiver drain, then stop it.
	for idle, last := 0, uint64(0); idle < 6; idle++ {
		time.Sleep(50 * time.Millisecond)
		if n := run.datagrams.Load(); n != last {
			last, idle = n, 0
		}
	}
	stop.Store(true)
	wg.Wait()
	if err != nil {
		return err
	}
	if recvErr != nil {
		return recvErr
	}
	snmp1, err := pair.B.SNMP()
	if err != nil {
		return err
	}
	cnt, err := x.ReadCounters()
	if err != nil {
		return err
	}
	cost, _ := x.ReadCost()
	s := e.Stats()

	fmt.Fprintln(w, "  XDP counters (packets by reason, nonzero):")
	byName := cnt.ByName()
	for _, name := range sortedKeys(byName) {
		if c := byName[name]; c.Packets > 0 {
			fmt.Fprintf(w, "    %-20s %7d\n", name, c.Packets)
		}
	}
	if cost.Samples > 0 {
		fmt.Fprintf(w, "  XDP program cost: mean %v per packet over %d samples (1 in %d packets timed)\n", cost.Mean(), cost.Samples, bpf.DefaultCostSampleN)
	}
	fmt.Fprintf(w, "  engine: %d datagrams → %d events decided (%s), %d malformed (%s); %d block verdicts fed back into the XDP blocklist\n",
		run.datagrams.Load(), s.Events, verdicts(&s), s.DecodeErrorTotal(), decodeErrors(&s), run.blocks.Load())

	// The accounting identity of DESIGN.md, for this run.
	var xdpDrops, notOurs uint64
	for r := bpf.Reason(0); r < bpf.ReasonTerminal; r++ {
		switch r {
		case bpf.ReasonPassSocket, bpf.ReasonRedirect, bpf.ReasonPassNoXSK:
		default:
			if r.String() == "port_not_listened" || r.String() == "not_udp" || r.String() == "not_ip" ||
				r.String() == "ipv4_fragment" || r.String() == "ipv6_ext_hdr" || r.String() == "vlan_too_deep" || r.String() == "no_config" {
				notOurs += cnt[r].Packets
			} else {
				xdpDrops += cnt[r].Packets
			}
		}
	}
	sockDrops := snmp1["Udp.RcvbufErrors"] - snmp0["Udp.RcvbufErrors"]
	decided := s.Events + s.DecodeErrorTotal()
	total := xdpDrops + notOurs + sockDrops + decided
	fmt.Fprintf(w, "  accounting: sent %d = XDP drops %d + not for us %d + socket drops %d + decode errors %d + events decided %d = %d",
		sent, xdpDrops, notOurs, sockDrops, s.DecodeErrorTotal(), s.Events, total)
	if total != sent {
		fmt.Fprintln(w, "  ✗")
		return fmt.Errorf("accounting does not add up: %d sent, %d accounted for", sent, total)
	}
	fmt.Fprintln(w, "  ✓")
	return nil
}

// receive decides every datagram on fd until stop, and turns block
// verdicts into XDP blocklist entries (the gateway's feedback path).
func receive(fd int, e *engine.Engine, x *bpf.XDP, run *kernelRun, stop *atomic.Bool) error {
	wk := e.NewWorker()
	defer wk.Flush()
	buf := make([]byte, 65536)
	for !stop.Load() {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		run.datagrams.Add(1)
		var src netip.Addr
		if sa, ok := from.(*unix.SockaddrInet4); ok {
			src = netip.AddrFrom4(sa.Addr)
		}
		for _, d := range wk.Process(buf[:n], src) {
			if d.Err == engine.DecodeOK && d.Action == engine.ActionBlock && src.IsValid() {
				if err := x.Block(src, d.Block); err != nil {
					return err
				}
				run.blocks.Add(1)
			}
		}
	}
	return nil
}

// send plays the traffic mix from host A and returns how many datagrams
// the kernel accepted for sending.
func send(w io.Writer, pair *testenv.Pair) (uint64, error) {
	dst := netip.AddrPortFrom(pair.B.Addr, demoPort)
	fd, err := pair.A.DialUDP(dst)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	other, err := pair.A.DialUDP(netip.AddrPortFrom(pair.B.Addr, otherPort))
	if err != nil {
		return 0, err
	}
	defer unix.Close(other)
	g, err := gen.New(gen.Config{Users: 500, BadShare: 0.02, BigShare: 0.05, Seed: 2})
	if err != nil {
		return 0, err
	}
	var sent uint64
	write := func(fd int, p []byte) error {
		for tries := 0; ; tries++ {
			_, err := unix.Write(fd, p)
			switch {
			case err == nil:
				sent++
				return nil
			case errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.EINTR):
				// ICMP port unreachable from an earlier datagram: not this one's error.
			case (errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN)) && tries < 1000:
				time.Sleep(100 * time.Microsecond)
			default:
				return fmt.Errorf("send: %w", err)
			}
		}
	}
	var buf []byte
	phase := func(name string, n int, fd int, paced bool, payload func() []byte) error {
		before := sent
		for i := 0; i < n; i++ {
			if err := write(fd, payload()); err != nil {
				return err
			}
			if paced && i%50 == 49 {
				time.Sleep(10 * time.Millisecond) // ≈ 5000/s, under the bucket
			}
		}
		fmt.Fprintf(w, "  sent: %-55s %6d\n", name, sent-before)
		return nil
	}
	events := func() []byte { buf, _ = g.Append(buf[:0]); return buf }
	if err := phase("events at ~5k/s (2% malformed)", 3000, fd, true, events); err != nil {
		return sent, err
	}
	if err := phase("not JSON (dropped in XDP by the payload check)", 100, fd, false, func() []byte { return []byte("GET / HTTP/1.1\r\n") }); err != nil {
		return sent, err
	}
	if err := phase("to another port (not for us: passed to the stack)", 200, other, false, events); err != nil {
		return sent, err
	}
	if err := phase("a flood, back to back (policed by the XDP bucket)", 20000, fd, false, events); err != nil {
		return sent, err
	}
	time.Sleep(200 * time.Millisecond) // let the bucket refill
	if err := phase(`an event the rules block ("event_type":"bot")`, 1, fd, false, func() []byte {
		return []byte(`{"event_id":"e-bot","user_id":"u-bot","amount":1,"currency":"USD","event_type":"bot","ts":1,"ip":"198.18.0.1"}`)
	}); err != nil {
		return sent, err
	}
	time.Sleep(300 * time.Millisecond) // the verdict reaches the blocklist
	if err := phase("more events from the now blocked source", 2000, fd, true, events); err != nil {
		return sent, err
	}
	return sent, nil
}
