//go:build linux

package bpf

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/testenv"
)

func prNeedRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): run `go test` as root, as CI does")
	}
}

// prLoad loads the probes and skips the test when the probes it needs are
// missing on this kernel.
func prLoad(tb testing.TB, opts ProbeOptions, need ...string) *Probes {
	tb.Helper()
	prNeedRoot(tb)
	p, err := LoadProbes(opts)
	if errors.Is(err, ErrNotSupported) {
		tb.Skipf("probes not supported: %v", err)
	}
	if err != nil {
		tb.Fatalf("load probes: %+v", err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Errorf("close probes: %v", err)
		}
	})
	for _, n := range need {
		if !p.Running(n) {
			tb.Skipf("probe %s missing: %v", n, p.Missing())
		}
	}
	return p
}

// prPort is a UDP port unlikely to be used by anyone else right now:
// kfree_skb is global, the port filter is what keeps other tests out.
func prPort() uint16 { return uint16(20000 + rand.IntN(30000)) }

func TestProbeLoadAll(t *testing.T) {
	p := prLoad(t, ProbeOptions{})
	if m := p.Missing(); len(m) != 0 {
		// Not a failure: hosts differ. Say what is missing.
		t.Logf("missing probes: %v", m)
	}
	for _, name := range []string{ProbeSockLatency, ProbeKfreeSkb, ProbeXDPRedirectErr, ProbeXDPException} {
		t.Logf("%s running: %v", name, p.Running(name))
	}
}

func TestProbeSkipOption(t *testing.T) {
	p := prLoad(t, ProbeOptions{Skip: []string{ProbeKfreeSkb}})
	if p.Running(ProbeKfreeSkb) {
		t.Fatal("kfree_skb running although skipped")
	}
	if !slices.ContainsFunc(p.Missing(), func(s string) bool { return strings.HasPrefix(s, ProbeKfreeSkb+":") }) {
		t.Fatalf("Missing() = %v, want kfree_skb named", p.Missing())
	}
}

func TestProbeTAIOffset(t *testing.T) {
	off, err := TAIOffset()
	if err != nil {
		t.Fatal(err)
	}
	var tx unix.Timex
	if _, err := unix.Adjtimex(&tx); err == nil && off != time.Duration(tx.Tai)*time.Second {
		t.Fatalf("TAIOffset %v, adjtimex says %d s", off, tx.Tai)
	}
	t.Logf("TAI - realtime = %v", off)
}

// skBuffTstampOff is offsetof(struct __sk_buff, tstamp) (uapi, stable).
const skBuffTstampOff = 152

// TestProbeLatencyBuckets runs the socket filter through BPF_PROG_TEST_RUN
// with chosen receive timestamps and checks the bucket each lands in, and
// that the filter never trims or drops.
func TestProbeLatencyBuckets(t *testing.T) {
	p := prLoad(t, ProbeOptions{SockSample: 1}, ProbeSockLatency)
	prog := p.SocketFilter()

	run := func(tstamp uint64) uint32 {
		t.Helper()
		ctx := make([]byte, 192) // sizeof(struct __sk_buff)
		binary.LittleEndian.PutUint64(ctx[skBuffTstampOff:], tstamp)
		ret, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64), Context: ctx})
		if err != nil {
			t.Fatalf("test run: %v", err)
		}
		return ret
	}
	now := func() uint64 { return uint64(time.Now().UnixNano()) }
	for _, tc := range []struct {
		name    string
		latency time.Duration
	}{
		{"0.5us", 500 * time.Nanosecond},
		{"1.5us", 1500 * time.Nanosecond},
		{"3us", 3 * time.Microsecond},
		{"100us", 100 * time.Microsecond},
		{"5ms", 5 * time.Millisecond},
		{"1.5s", 1500 * time.Millisecond},
		{"10min", 10 * time.Minute},
		{"1h", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := p.ReadLatencyHistogram()
			if err != nil {
				t.Fatal(err)
			}
			// The program reads the clock a little after we do: the
			// latency it sees lies in [latency, latency+elapsed].
			start := now()
			if ret := run(start - uint64(tc.latency)); ret == 0 {
				t.Fatal("filter returned 0: it would drop the packet")
			}
			elapsed := time.Duration(now() - start)
			after, err := p.ReadLatencyHistogram()
			if err != nil {
				t.Fatal(err)
			}
			lo, hi := prBucket(tc.latency, len(after.Buckets)), prBucket(tc.latency+elapsed, len(after.Buckets))
			got := -1
			for i := range after.Buckets {
				switch d := after.Buckets[i].Count - before.Buckets[i].Count; {
				case d == 1 && got == -1:
					got = i
				case d != 0:
					t.Fatalf("bucket %d delta %d", i, d)
				}
			}
			if got < lo || got > hi {
				t.Errorf("latency %v (+%v run time) in bucket %d (le %v), want %d..%d", tc.latency, elapsed, got, after.Buckets[got].UpperBound, lo, hi)
			}
			if s := after.Sum - before.Sum; s < tc.latency || s > tc.latency+elapsed {
				t.Errorf("sum grew by %v, want %v..%v", s, tc.latency, tc.latency+elapsed)
			}
		})
	}

	st0, _ := p.ReadStats()
	run(0)                         // no timestamp
	run(now() + uint64(time.Hour)) // in the future
	run(uint64(time.Hour))         // a monotonic-looking stamp, not realtime
	st1, _ := p.ReadStats()
	if d := st1.SockNoTstamp - st0.SockNoTstamp; d != 1 {
		t.Errorf("no_tstamp delta %d, want 1", d)
	}
	if d := st1.SockClockSkew - st0.SockClockSkew; d != 2 {
		t.Errorf("clock_skew delta %d, want 2", d)
	}
	if d := st1.SockPackets - st0.SockPackets; d != 3 {
		t.Errorf("packets delta %d, want 3", d)
	}
	if d := st1.SockSampled - st0.SockSampled; d != 3 {
		t.Errorf("sampled delta %d, want 3 (sampling period 1)", d)
	}

	h, err := p.ReadLatencyHistogram()
	if err != nil {
		t.Fatal(err)
	}
	cum := h.Cumulative()
	if len(cum) != len(h.Buckets)-1 {
		t.Errorf("cumulative has %d bounds, want %d", len(cum), len(h.Buckets)-1)
	}
	if cum[1e-6] > cum[2e-6] || cum[float64(1<<30)*1e-6] > h.Count {
		t.Errorf("cumulative not monotonic: %v", cum)
	}
}

// prPerCPU reads one probe_stats counter by CPU.
func prPerCPU(t *testing.T, p *Probes, stat probesKernProbeStat) []uint64 {
	t.Helper()
	var v []uint64
	if err := p.maps.ProbeStats.Lookup(uint32(stat), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// prOnCPU runs f on a thread pinned to cpu: BPF_PROG_TEST_RUN runs the
// program on the calling CPU, so per-CPU counters become deterministic.
func prOnCPU(t *testing.T, cpu int, f func()) {
	t.Helper()
	done := make(chan bool)
	go func() {
		runtime.LockOSThread()
		var old, set unix.CPUSet
		ok := unix.SchedGetaffinity(0, &old) == nil
		set.Set(cpu)
		if ok && unix.SchedSetaffinity(0, &set) == nil {
			f()
			if unix.SchedSetaffinity(0, &old) == nil {
				runtime.UnlockOSThread()
			} // else the thread stays locked and dies with the goroutine
			done <- true
			return
		}
		runtime.UnlockOSThread()
		done <- false
	}()
	if !<-done {
		t.Skipf("cannot pin a thread to CPU %d", cpu)
	}
}

// TestProbeSockSampling: the socket filter times exactly one packet in N
// per CPU (the Nth, 2Nth, …) and only counts the others.
func TestProbeSockSampling(t *testing.T) {
	prNeedRoot(t)
	const runs = 600
	for _, tc := range []struct {
		n, want int // SockSample option, samples expected of runs packets
	}{
		{1, runs},
		{8, runs / 8},
		{0, runs / DefaultSockSample}, // the default period
		{1000, 0},
	} {
		t.Run(strconv.Itoa(tc.n), func(t *testing.T) {
			p := prLoad(t, ProbeOptions{SockSample: tc.n}, ProbeSockLatency)
			if want := cmp.Or(tc.n, DefaultSockSample); p.SockSample() != want {
				t.Fatalf("SockSample() = %d, want %d", p.SockSample(), want)
			}
			ctx := make([]byte, 192) // sizeof(struct __sk_buff)
			cpu := 0
			prOnCPU(t, cpu, func() {
				for range runs {
					// A receive stamp 10 µs old: every sample lands in the histogram.
					binary.LittleEndian.PutUint64(ctx[skBuffTstampOff:], uint64(time.Now().Add(-10*time.Microsecond).UnixNano()))
					if ret, err := p.SocketFilter().Run(&ebpf.RunOptions{Data: make([]byte, 64), Context: ctx}); err != nil || ret == 0 {
						t.Errorf("test run: %d, %v", ret, err)
						return
					}
				}
			})
			ticks, err := p.readSockTicks()
			if err != nil {
				t.Fatal(err)
			}
			sampled := prPerCPU(t, p, probesKernProbeStatPROBE_STAT_SOCK_SAMPLED)
			for c := range ticks {
				wantPackets, wantSampled := uint64(0), uint64(0)
				if c == cpu {
					wantPackets, wantSampled = runs, uint64(tc.want)
				}
				if ticks[c].Packets != wantPackets || sampled[c] != wantSampled {
					t.Errorf("CPU %d: packets %d sampled %d, want %d and %d", c, ticks[c].Packets, sampled[c], wantPackets, wantSampled)
				}
				if period := uint64(cmp.Or(tc.n, DefaultSockSample)); ticks[c].Tick != ticks[c].Packets%period {
					t.Errorf("CPU %d: tick %d after %d packets, want %d", c, ticks[c].Tick, ticks[c].Packets, ticks[c].Packets%period)
				}
			}
			h, err := p.ReadLatencyHistogram()
			if err != nil {
				t.Fatal(err)
			}
			st, err := p.ReadStats()
			if err != nil {
				t.Fatal(err)
			}
			if h.Count != uint64(tc.want) || st.SockSampled != uint64(tc.want) || st.SockPackets != runs {
				t.Errorf("histogram %d, sampled %d, packets %d: want %d, %d, %d", h.Count, st.SockSampled, st.SockPackets, tc.want, tc.want, runs)
			}
			if tc.want > 0 && (h.Sum < time.Duration(tc.want)*10*time.Microsecond || h.Sum > time.Duration(tc.want)*time.Second) {
				t.Errorf("latency sum %v for %d samples of ≈ 10 µs", h.Sum, tc.want)
			}
		})
	}
}

// TestProbeSockSamplingLive: real datagrams through a veth, several CPUs:
// on each CPU the filter timed packets/N of them (rounded down), and every
// sample is in the histogram or counted as why not.
func TestProbeSockSamplingLive(t *testing.T) {
	const period = 8
	p := prLoad(t, ProbeOptions{SockSample: period, RxTimestamps: true}, ProbeSockLatency)
	env := testenv.New(t, testenv.Options{RxQueues: 2})
	fd, dst := prSampledSocket(t, env, p)

	const n = 1000
	payload := []byte(`{"event_id":"e-000123","user_id":"u-48213","amount":1234.56}`)
	if sent, err := env.A.SendUDP(dst, payload, n); err != nil {
		t.Fatalf("sent %d: %v", sent, err)
	}
	if got := recvAll(t, fd, n); got != n {
		t.Fatalf("received %d of %d", got, n)
	}
	ticks, err := p.readSockTicks()
	if err != nil {
		t.Fatal(err)
	}
	sampled := prPerCPU(t, p, probesKernProbeStatPROBE_STAT_SOCK_SAMPLED)
	var packets, samples uint64
	for c := range ticks {
		packets += ticks[c].Packets
		samples += sampled[c]
		if sampled[c] != ticks[c].Packets/period {
			t.Errorf("CPU %d: %d packets, %d sampled, want %d", c, ticks[c].Packets, sampled[c], ticks[c].Packets/period)
		}
	}
	if packets != n {
		t.Errorf("filter saw %d packets, %d received", packets, n)
	}
	h, err := p.ReadLatencyHistogram()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d packets, %d sampled: histogram %d (mean %v), no timestamp %d, clock skew %d",
		packets, samples, h.Count, h.Sum/time.Duration(max(h.Count, 1)), h.NoTimestamp, h.ClockSkew)
	if h.Count+h.NoTimestamp+h.ClockSkew != samples {
		t.Errorf("histogram %d + no timestamp %d + clock skew %d != sampled %d", h.Count, h.NoTimestamp, h.ClockSkew, samples)
	}
	if h.ClockSkew != 0 {
		t.Errorf("%d samples with clock skew", h.ClockSkew)
	}
}

// prBucket is the reference for the C bucket function: µs rounded up, the
// smallest i with µs <= 2^i, the last bucket for everything above.
func prBucket(d time.Duration, n int) int {
	us := (d.Nanoseconds() + 999) / 1000
	for i := range n - 1 {
		if us <= 1<<i {
			return i
		}
	}
	return n - 1
}

// prSampledSocket opens a UDP socket on env's host B (any port) with p's
// socket filter attached, a 1 s receive timeout and an 8 MiB buffer (room
// for a whole burst: the tests read only after sending); it is closed at
// the end of the test. It returns the socket and its address.
func prSampledSocket(t *testing.T, env *testenv.Pair, p *Probes) (int, netip.AddrPort) {
	t.Helper()
	fd, port, err := env.B.ListenUDP(env.B.Addr, 0, func(fd int) error {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			return err
		}
		return p.AttachSocket(fd)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, netip.AddrPortFrom(env.B.Addr, port)
}

// recvAll reads datagrams until n arrived or the socket's timeout expires.
func recvAll(t *testing.T, fd, n int) int {
	t.Helper()
	buf := make([]byte, 2048)
	got := 0
	for got < n {
		if _, _, err := unix.Recvfrom(fd, buf, 0); err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				break
			}
			t.Fatalf("recv: %v", err)
		}
		got++
	}
	return got
}

func TestProbeSocketLatencyHistogram(t *testing.T) {
	p := prLoad(t, ProbeOptions{SockSample: 1, RxTimestamps: true}, ProbeSockLatency)
	env := testenv.New(t, testenv.Options{RxQueues: 2})
	fd, dst := prSampledSocket(t, env, p)

	// Receive timestamping is switched on for the host from a work queue
	// after the probes' SO_TIMESTAMPNS socket opens: warm up until packets
	// are stamped (bounded), then measure.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		h0, _ := p.ReadLatencyHistogram()
		if _, err := env.A.SendUDP(dst, []byte("warm-up"), 1); err != nil {
			t.Fatal(err)
		}
		recvAll(t, fd, 1)
		h1, _ := p.ReadLatencyHistogram()
		if h1.Count > h0.Count {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no receive timestamps after 2s (no_tstamp %d)", h1.NoTimestamp)
		}
	}
	before, err := p.ReadLatencyHistogram()
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	payload := []byte(`{"event_id":"e-000123","user_id":"u-48213","amount":1234.56}`)
	sent, err := env.A.SendUDP(dst, payload, n)
	if err != nil {
		t.Fatalf("sent %d: %v", sent, err)
	}
	got := recvAll(t, fd, n)
	after, err := p.ReadLatencyHistogram()
	if err != nil {
		t.Fatal(err)
	}
	count := after.Count - before.Count
	t.Logf("sent %d, received %d, histogram +%d, mean %v, no_tstamp +%d, skew +%d",
		sent, got, count, (after.Sum-before.Sum)/time.Duration(max(count, 1)),
		after.NoTimestamp-before.NoTimestamp, after.ClockSkew-before.ClockSkew)
	for i, b := range after.Buckets {
		if d := b.Count - before.Buckets[i].Count; d > 0 {
			t.Logf("  le %-12v %d", b.UpperBound, d)
		}
	}
	if got != n {
		t.Errorf("received %d of %d", got, n)
	}
	if count != uint64(got) {
		t.Errorf("histogram counted %d, received %d", count, got)
	}
	if d := after.NoTimestamp - before.NoTimestamp; d != 0 {
		t.Errorf("%d packets without receive timestamp", d)
	}
	if d := after.ClockSkew - before.ClockSkew; d != 0 {
		t.Errorf("%d packets with clock skew", d)
	}
	// Nothing on a quiet veth takes a second from stack to socket.
	if d := after.Buckets[len(after.Buckets)-1].Count - before.Buckets[len(before.Buckets)-1].Count; d != 0 {
		t.Errorf("%d packets in +Inf", d)
	}
}

// TestProbeKernelDropsRcvbuf: receive-buffer drops in the receiving
// host's namespace are counted by reason, exactly; a probe told another
// namespace counts none of them.
func TestProbeKernelDropsRcvbuf(t *testing.T) {
	port := prPort()
	env := testenv.New(t, testenv.Options{})
	var ino uint32
	if err := env.B.Do(func() error { ino = NetnsIno(); return nil }); err != nil || ino == 0 {
		t.Fatalf("netns inode of B: %d, %v", ino, err)
	}
	p := prLoad(t, ProbeOptions{Ports: []uint16{port}, NetnsIno: ino}, ProbeKfreeSkb)
	other := prLoad(t, ProbeOptions{Ports: []uint16{port}, NetnsIno: ino + 1}, ProbeKfreeSkb)

	fd, _, err := env.B.ListenUDP(env.B.Addr, port, func(fd int) error {
		// The kernel doubles it and enforces a floor: a few datagrams fit.
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1024)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	snmp0, err := env.B.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	drops0, err := p.ReadKernelDrops()
	if err != nil {
		t.Fatal(err)
	}
	const burst = 300
	payload := make([]byte, 200)
	if _, err := env.A.SendUDP(netip.AddrPortFrom(env.B.Addr, port), payload, burst); err != nil {
		t.Fatal(err)
	}

	// Softirq work may trail the last send a little: wait until both
	// counters agree, or give up after a bound.
	var rcvbufErrs, counted uint64
	var drops1 map[string]uint64
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		snmp1, err := env.B.SNMP()
		if err != nil {
			t.Fatal(err)
		}
		if drops1, err = p.ReadKernelDrops(); err != nil {
			t.Fatal(err)
		}
		rcvbufErrs = snmp1["Udp.RcvbufErrors"] - snmp0["Udp.RcvbufErrors"]
		counted = drops1["socket_rcvbuff"] - drops0["socket_rcvbuff"]
		if rcvbufErrs > 0 && rcvbufErrs == counted {
			break
		}
	}
	t.Logf("burst %d: RcvbufErrors +%d, kfree_skb socket_rcvbuff +%d, all reasons now %v", burst, rcvbufErrs, counted, drops1)
	if rcvbufErrs == 0 {
		t.Fatal("no receive-buffer drops: the burst did not overflow the socket")
	}
	if counted != rcvbufErrs {
		t.Fatalf("kfree_skb counted %d socket_rcvbuff drops, kernel RcvbufErrors delta %d", counted, rcvbufErrs)
	}
	// Every drop for our port in this test is a receive-buffer drop.
	var total uint64
	for r, v := range drops1 {
		total += v - drops0[r]
	}
	if total != counted {
		t.Errorf("drops for our port by all reasons %d, socket_rcvbuff %d: %v", total, counted, drops1)
	}
	od, err := other.ReadKernelDrops()
	if err != nil {
		t.Fatal(err)
	}
	if od["socket_rcvbuff"] != 0 {
		t.Errorf("a probe of another namespace counted %d drops", od["socket_rcvbuff"])
	}
}

func TestProbeDropReasonNames(t *testing.T) {
	prNeedRoot(t)
	names := dropReasonNames()
	if len(names) == 0 {
		t.Skip("no kernel BTF enum skb_drop_reason")
	}
	found := false
	for _, n := range names {
		if n == "socket_rcvbuff" {
			found = true
		}
	}
	if !found {
		t.Errorf("socket_rcvbuff not among %d drop reasons", len(names))
	}
	if got := DropReasonName(0xfffffff0); got != "reason_4294967280" {
		t.Errorf("unknown reason named %q", got)
	}
}

// TestProbeXDPEvents attaches test-only XDP programs to a test host's veth:
// one returns XDP_ABORTED (xdp_exception), one redirects to an ifindex that
// does not exist (xdp_redirect_err, -EINVAL). Counting must follow the
// configured program id.
func TestProbeXDPEvents(t *testing.T) {
	p := prLoad(t, ProbeOptions{}, ProbeXDPRedirectErr, ProbeXDPException)
	var objs probesTestXDPObjects
	if err := loadProbesTestXDPObjects(&objs, nil); err != nil {
		t.Fatalf("load test XDP programs: %+v", err)
	}
	defer objs.Close()
	env := testenv.New(t, testenv.Options{})

	var l link.Link
	err := env.B.Do(func() error {
		var err error
		l, err = link.AttachXDP(link.XDPOptions{Program: objs.ProbesTestAbort, Interface: env.B.Ifindex})
		return err
	})
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("XDP link: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	progID := func(prog *ebpf.Program) uint32 {
		info, err := prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, ok := info.ID()
		if !ok {
			t.Skip("program id not available")
		}
		return uint32(id)
	}
	dst := netip.AddrPortFrom(env.B.Addr, prPort())
	send := func(n int) {
		t.Helper()
		if _, err := env.A.SendUDP(dst, []byte("{}"), n); err != nil {
			t.Fatal(err)
		}
	}
	// Events land in softirq, possibly on the other CPU: wait for them.
	waitStats := func(cond func(ProbeStats) bool) ProbeStats {
		t.Helper()
		var st ProbeStats
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			var err error
			if st, err = p.ReadStats(); err != nil {
				t.Fatal(err)
			}
			if cond(st) {
				break
			}
		}
		return st
	}

	// Not our program yet: nothing counted.
	st0, _ := p.ReadStats()
	send(10)
	time.Sleep(100 * time.Millisecond)
	if st, _ := p.ReadStats(); st.XDPException != st0.XDPException {
		t.Fatalf("counted %d exceptions of a program that is not ours", st.XDPException-st0.XDPException)
	}

	const n = 50
	if err := p.SetXDPProgID(progID(objs.ProbesTestAbort)); err != nil {
		t.Fatal(err)
	}
	ev0, _ := p.ReadXDPEvents()
	send(n)
	st := waitStats(func(s ProbeStats) bool { return s.XDPException-st0.XDPException >= n })
	ev1, _ := p.ReadXDPEvents()
	if d := st.XDPException - st0.XDPException; d != n {
		t.Errorf("xdp_exception counted %d, want %d", d, n)
	}
	if d := ev1.Exception["aborted"] - ev0.Exception["aborted"]; d != n {
		t.Errorf("exceptions by action: %v, want %d aborted", ev1.Exception, n)
	}

	if err := l.Update(objs.ProbesTestBadRedirect); err != nil {
		t.Fatal(err)
	}
	if err := p.SetXDPProgID(progID(objs.ProbesTestBadRedirect)); err != nil {
		t.Fatal(err)
	}
	st1, _ := p.ReadStats()
	send(n)
	st = waitStats(func(s ProbeStats) bool { return s.XDPRedirectErr-st1.XDPRedirectErr >= n })
	ev2, _ := p.ReadXDPEvents()
	if d := st.XDPRedirectErr - st1.XDPRedirectErr; d != n {
		t.Errorf("xdp_redirect_err counted %d, want %d", d, n)
	}
	if d := ev2.RedirectErr["EINVAL"] - ev1.RedirectErr["EINVAL"]; d != n {
		t.Errorf("redirect errors by errno: %v, want %d EINVAL", ev2.RedirectErr, n)
	}
	t.Logf("xdp events: %+v", ev2)
}

// TestProbeKernelDropsLayouts: the kfree_skb probe finds the UDP port
// behind each header layout, whether the headers' first read holds it
// (plain IPv4, IPv6) or it takes a second (IPv4 with options): receive-
// buffer drops on the loopback of a test host, counted exactly. With an
// address (ProbeOptions.Address) it counts the drops to that address
// only: not those to another address of the host, nor of the other
// family; an unspecified one is any.
func TestProbeKernelDropsLayouts(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	var ino uint32
	if err := env.B.Do(func() error { ino = NetnsIno(); return nil }); err != nil || ino == 0 {
		t.Fatalf("netns inode of B: %d, %v", ino, err)
	}
	var (
		lo4    = netip.MustParseAddr("127.0.0.1")
		lo4b   = netip.MustParseAddr("127.0.0.2") // on lo too: 127.0.0.0/8 is local
		lo6    = netip.IPv6Loopback()
		other6 = netip.MustParseAddr("2001:2::1") // not on the host
	)
	for _, tc := range []struct {
		name    string
		dst     netip.Addr // where the burst goes
		options []byte     // IP_OPTIONS of the sender
		addr    netip.Addr // the probe's address
		counted bool       // the probe counts these drops
		counter string     // the kernel's count of these drops
	}{
		{"ipv4", lo4, nil, netip.Addr{}, true, "Udp.RcvbufErrors"},
		{"ipv4_options", lo4, []byte{1, 1, 1, 0}, netip.Addr{}, true, "Udp.RcvbufErrors"}, // NOP NOP NOP EOL: ihl 6
		{"ipv6", lo6, nil, netip.Addr{}, true, "Udp6RcvbufErrors"},
		{"ipv4_address", lo4, nil, lo4, true, "Udp.RcvbufErrors"},
		{"ipv4_options_address", lo4, []byte{1, 1, 1, 0}, lo4, true, "Udp.RcvbufErrors"},
		{"ipv4_mapped_address", lo4, nil, netip.AddrFrom16(lo4.As16()), true, "Udp.RcvbufErrors"},
		{"ipv4_unspecified", lo4, nil, netip.IPv4Unspecified(), true, "Udp.RcvbufErrors"},
		{"ipv6_address", lo6, nil, lo6, true, "Udp6RcvbufErrors"},
		{"ipv6_unspecified", lo6, nil, netip.IPv6Unspecified(), true, "Udp6RcvbufErrors"},
		{"ipv4_other_address", lo4b, nil, lo4, false, "Udp.RcvbufErrors"},
		{"ipv4_options_other_address", lo4b, []byte{1, 1, 1, 0}, lo4, false, "Udp.RcvbufErrors"},
		{"ipv4_to_ipv6_address", lo4, nil, lo6, false, "Udp.RcvbufErrors"},
		{"ipv6_other_address", lo6, nil, other6, false, "Udp6RcvbufErrors"},
		{"ipv6_to_ipv4_address", lo6, nil, lo4, false, "Udp6RcvbufErrors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := prPort()
			p := prLoad(t, ProbeOptions{Ports: []uint16{port}, NetnsIno: ino, Address: tc.addr}, ProbeKfreeSkb)
			snmp0, err := env.B.SNMP()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := snmp0[tc.counter]; !ok {
				t.Skipf("no %s in the host's SNMP counters", tc.counter)
			}
			const burst = 300
			if err := env.B.Do(func() error { return prDropBurst(tc.dst, port, tc.options, burst) }); err != nil {
				t.Fatal(err)
			}
			// The kernel counts a receive-buffer drop before it frees the
			// skb, and the probe counts it there: once the kernel's count
			// holds still, every drop the probe would count is in.
			var kernel, counted, last uint64
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				snmp1, err := env.B.SNMP()
				if err != nil {
					t.Fatal(err)
				}
				d, err := p.ReadKernelDrops()
				if err != nil {
					t.Fatal(err)
				}
				kernel, counted = snmp1[tc.counter]-snmp0[tc.counter], d["socket_rcvbuff"]
				if tc.counted && kernel > 0 && kernel == counted {
					break
				}
				if !tc.counted && kernel > 0 && kernel == last {
					break
				}
				last = kernel
			}
			if kernel == 0 {
				t.Fatal("no receive-buffer drops: the burst did not overflow the socket")
			}
			want := kernel
			if !tc.counted {
				want = 0
			}
			if counted != want {
				t.Errorf("kfree_skb counted %d socket_rcvbuff drops to %v with address %v, want %d (kernel %s +%d)",
					counted, tc.dst, tc.addr, want, tc.counter, kernel)
			}
		})
	}
}

// prDropBurst sends n datagrams to dst (a loopback address) to a socket
// bound to dst and port whose receive buffer holds only a few, from a
// socket with the IP options given, and closes both.
func prDropBurst(dst netip.Addr, port uint16, options []byte, n int) error {
	domain := unix.AF_INET6
	var to unix.Sockaddr = &unix.SockaddrInet6{Port: int(port), Addr: dst.As16()}
	if dst.Is4() {
		domain = unix.AF_INET
		to = &unix.SockaddrInet4{Port: int(port), Addr: dst.As4()}
	}
	rx, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rx)
	if err := unix.SetsockoptInt(rx, unix.SOL_SOCKET, unix.SO_RCVBUF, 1024); err != nil {
		return err
	}
	if err := unix.Bind(rx, to); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	tx, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(tx)
	if len(options) > 0 {
		if err := unix.SetsockoptString(tx, unix.IPPROTO_IP, unix.IP_OPTIONS, string(options)); err != nil {
			return fmt.Errorf("IP_OPTIONS: %w", err)
		}
	}
	payload := make([]byte, 200)
	for range n {
		if err := unix.Sendto(tx, payload, 0, to); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	return nil
}
