package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xgate/xgate/packet"
	"github.com/xgate/xgate/packet/packettest"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// XDP verdicts (enum xdp_action).
const (
	xgDrop     = 1
	xgPass     = 2
	xgRedirect = 4
)

const xgLoIfindex = 1

// TestXDPPacketFixtures runs every row of the shared packet table
// (packet/packettest) through BPF_PROG_TEST_RUN under the table's policy
// (its port listened, its VLAN served) and checks the verdict and the exact
// delta of every counter. The Go parser is held to the same rows in
// package packet, so the program and the workers agree on every frame.
//
// Not covered by a row: a frame shorter than Ethernet (malformed_eth) —
// BPF_PROG_TEST_RUN refuses input under 14 bytes, and NICs do not deliver
// such frames; the branch is still there and counted.
func TestXDPPacketFixtures(t *testing.T) {
	xgNeedRoot(t)
	x := xgLoad(t, Options{ListenPorts: []uint16{packettest.Port}, Config: Config{VLANs: []uint16{packettest.VLAN}}})
	for _, fx := range packettest.Fixtures {
		t.Run(fx.Name, func(t *testing.T) {
			var want Reason
			for r := Reason(0); r < ReasonTerminal; r++ {
				if r.String() == fx.XDP {
					want = r
				}
			}
			if want.String() != fx.XDP {
				t.Fatalf("fixture names reason %q, which the program does not have", fx.XDP)
			}
			pkt := fx.Bytes()
			xgRunChecked(t, x, pkt, want)
		})
	}
}

// xgRunChecked runs pkt once and checks that exactly the terminal reason
// want moved, that the verdict agrees with want's Fate, and that the
// packet left unchanged (only a redirect writes a stamp).
func xgRunChecked(t *testing.T, x *XDP, pkt []byte, want Reason) {
	t.Helper()
	before := xgCounters(t, x)
	verdict, out, ctxOut := xgRun(t, x.Program(), pkt, xgLoIfindex, 0)
	after := xgCounters(t, x)
	xgAssertDeltas(t, before, after, map[Reason]uint64{want: 1}, len(pkt))
	wantVerdict := uint32(xgPass)
	if want.Fate() == FateDropped {
		wantVerdict = xgDrop
	}
	if verdict != wantVerdict {
		t.Errorf("verdict %d, want %d (%v)", verdict, wantVerdict, want)
	}
	if ctxOut.Data != 0 || !bytes.Equal(out[:ctxOut.DataEnd], pkt) {
		t.Errorf("packet changed: meta %d bytes, out %x", ctxOut.Data, out[:ctxOut.DataEnd])
	}
}

// TestXDPFixtures runs one packet per row through BPF_PROG_TEST_RUN on a
// freshly loaded program and checks the verdict and the exact delta of
// every counter (terminal reasons and events): the policy rows (served
// VLANs and IPv6, blocklist, token bucket, payload check, AF_XDP without
// a socket); the parsing rows are the shared table (TestXDPPacketFixtures).
func TestXDPFixtures(t *testing.T) {
	xgNeedRoot(t)
	v4 := packet.Frame{Src: xgSrc4, Dst: xgDst4, Payload: xgJSON}
	v6 := packet.Frame{Src: xgSrc6, Dst: xgDst6, Payload: xgJSON}
	with := func(p packet.Frame, f func(*packet.Frame)) packet.Frame { f(&p); return p }
	future := func() uint64 { return Ktime() + uint64(time.Hour) }
	q := func(vids ...uint16) []packet.VLAN {
		var out []packet.VLAN
		for _, v := range vids {
			out = append(out, packet.VLAN{TPID: packet.EtherType8021Q, VID: v})
		}
		return out
	}

	tests := []struct {
		name    string
		cfg     Config
		setup   func(t *testing.T, x *XDP)
		pkt     packet.Frame
		verdict uint32
		want    map[Reason]uint64
	}{
		// Served VLANs and IPv6.
		{name: "untagged, no VLAN served", pkt: v4, verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},
		{name: "tagged, no VLAN served", pkt: with(v4, func(p *packet.Frame) { p.VLANs = q(5) }),
			verdict: xgDrop, want: map[Reason]uint64{ReasonVLANNotServed: 1}},
		{name: "tagged, every VLAN served", pkt: with(v6, func(p *packet.Frame) { p.VLANs = q(4094) }), cfg: Config{AnyVLAN: true},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},
		{name: "tagged, VLAN 4094 served", pkt: with(v4, func(p *packet.Frame) { p.VLANs = q(4094) }), cfg: Config{VLANs: []uint16{1, 4094}},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},
		{name: "tagged VLAN 0 (priority tag), not served", pkt: with(v4, func(p *packet.Frame) { p.VLANs = q(0) }), cfg: Config{VLANs: []uint16{1}},
			verdict: xgDrop, want: map[Reason]uint64{ReasonVLANNotServed: 1}},
		{name: "IPv6 not served", pkt: v6, cfg: Config{NoIPv6: true},
			verdict: xgDrop, want: map[Reason]uint64{ReasonIPv6NotServed: 1}},
		{name: "IPv6 not served, other port", pkt: with(v6, func(p *packet.Frame) { p.DstPort = 53 }), cfg: Config{NoIPv6: true},
			verdict: xgPass, want: map[Reason]uint64{ReasonPortNotListened: 1}},
		{name: "IPv4 while IPv6 not served", pkt: v4, cfg: Config{NoIPv6: true},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},
		{name: "second listen port", pkt: with(v4, func(p *packet.Frame) { p.DstPort = 9100 }),
			setup:   func(t *testing.T, x *XDP) { xgNoErr(t, x.SetListenPorts(9000, 9100)) },
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},

		// Blocklist.
		{name: "blocked v4", pkt: v4,
			setup:   func(t *testing.T, x *XDP) { xgNoErr(t, x.Block(xgSrc4, Forever)) },
			verdict: xgDrop, want: map[Reason]uint64{ReasonBlocked: 1}},
		{name: "blocked v6 with ttl", pkt: v6,
			setup:   func(t *testing.T, x *XDP) { xgNoErr(t, x.Block(xgSrc6, time.Hour)) },
			verdict: xgDrop, want: map[Reason]uint64{ReasonBlocked: 1}},
		{name: "blocked v4 behind VLANs", cfg: Config{AnyVLAN: true}, pkt: with(v4, func(p *packet.Frame) {
			p.VLANs = []packet.VLAN{{TPID: packet.EtherType8021AD, VID: 100}, {TPID: packet.EtherType8021Q, VID: 101}}
		}),
			setup:   func(t *testing.T, x *XDP) { xgNoErr(t, x.blockAt(xgSrc4, future())) },
			verdict: xgDrop, want: map[Reason]uint64{ReasonBlocked: 1}},
		{name: "blocked source, other port", pkt: with(v4, func(p *packet.Frame) { p.DstPort = 53 }),
			setup:   func(t *testing.T, x *XDP) { xgNoErr(t, x.Block(xgSrc4, Forever)) },
			verdict: xgPass, want: map[Reason]uint64{ReasonPortNotListened: 1}},
		{name: "other source blocked", pkt: v4,
			setup:   func(t *testing.T, x *XDP) { xgNoErr(t, x.Block(xgOther4, Forever)) },
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},
		{name: "expired block", pkt: v4,
			setup:   func(t *testing.T, x *XDP) { xgNoErr(t, x.blockAt(xgSrc4, Ktime()-1)) },
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1, EventBlockExpired: 1}},
		{name: "block filter false positive", pkt: v4,
			setup: func(t *testing.T, x *XDP) {
				k, _ := srcKey(xgSrc4)
				x.mu.Lock()
				defer x.mu.Unlock()
				xgNoErr(t, x.bfilterAdd(k, +1)) // counted, but not in the LRU
			},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1, EventBlockFilterFP: 1}},
		{name: "blocked behind the filter's back, then synced", pkt: v4,
			setup: func(t *testing.T, x *XDP) {
				k, _ := srcKey(xgSrc4)
				// As `bpftool map update` would: invisible to the program…
				xgNoErr(t, x.objs.XgateBlocklist.Put(k, XdpXgateBlock{ExpiresNs: math.MaxUint64}))
				if v, _, _ := xgRun(t, x.Program(), v4.Bytes(), xgLoIfindex, 0); v != xgPass {
					t.Errorf("entry written without the filter: verdict %d, want pass (documented)", v)
				}
				// …until the filter is rebuilt.
				xgNoErr(t, x.SyncBlockFilter())
			},
			verdict: xgDrop, want: map[Reason]uint64{ReasonBlocked: 1}},
		{name: "unblocked", pkt: v4,
			setup: func(t *testing.T, x *XDP) {
				xgNoErr(t, x.Block(xgSrc4, Forever))
				xgNoErr(t, x.Unblock(xgSrc4))
			},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},

		// Token bucket (the sequence is in TestXDPTokenBucket).
		{name: "source over its bucket", pkt: v4, cfg: Config{BucketRate: 1, BucketBurst: 1},
			setup: func(t *testing.T, x *XDP) {
				// Spend the only token (the deltas are taken after setup).
				if v, _, _ := xgRun(t, x.Program(), v4.Bytes(), xgLoIfindex, 0); v != xgPass {
					t.Fatalf("first packet: verdict %d, want pass", v)
				}
			},
			verdict: xgDrop, want: map[Reason]uint64{ReasonRateLimited: 1}},
		{name: "source within its bucket", pkt: v6, cfg: Config{BucketRate: 1, BucketBurst: 1},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},
		{name: "source over its bucket, fine clock", pkt: v6, cfg: Config{BucketRate: 1, BucketBurst: 1, FineClock: true},
			setup: func(t *testing.T, x *XDP) {
				xgNoErr(t, x.setBucket(xgSrc6, Ktime()+uint64(time.Second), false))
			},
			verdict: xgDrop, want: map[Reason]uint64{ReasonRateLimited: 1}},
		{name: "source's slot taken by another, not full", pkt: v4, cfg: Config{BucketRate: 1, BucketBurst: 1, FineClock: true},
			setup: func(t *testing.T, x *XDP) {
				// Same slot, another tag, a TAT half a second ahead.
				idx, owner := x.bucketSlot(xgSrc4, false)
				other := owner ^ (1 << 48)
				xgNoErr(t, x.objs.XgateBuckets.Put(idx, XdpXgateBucket{OwnerTat: other | (Ktime()+5e8)&(1<<48-1)}))
			},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1, EventBucketTakeover: 1}},
		{name: "source's slot held by another, full", pkt: v4, cfg: Config{BucketRate: 1, BucketBurst: 1, FineClock: true},
			setup: func(t *testing.T, x *XDP) {
				idx, owner := x.bucketSlot(xgSrc4, false)
				other := owner ^ (1 << 48)
				xgNoErr(t, x.objs.XgateBuckets.Put(idx, XdpXgateBucket{OwnerTat: other | (Ktime()-5e8)&(1<<48-1)}))
			},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},
		{name: "own slot with a wrapped (stale) TAT", pkt: v4, cfg: Config{BucketRate: 1, BucketBurst: 1, FineClock: true},
			setup: func(t *testing.T, x *XDP) {
				// 2^46 ns (19.5 h) ahead, beyond any limit: only a TAT
				// ≈ 58 h old, wrapped modulo 2^48, can look like that.
				xgNoErr(t, x.setBucket(xgSrc4, Ktime()+1<<46, false))
			},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},
		{name: "own slot of the other clock", pkt: v4, cfg: Config{BucketRate: 1, BucketBurst: 1, FineClock: true},
			setup: func(t *testing.T, x *XDP) {
				// A drained bucket of the coarse clock: a fresh bucket, no takeover.
				xgNoErr(t, x.setBucket(xgSrc4, Ktime()+uint64(time.Second), true))
			},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},

		// Payload check.
		{name: "payload check on, JSON", pkt: with(v4, func(p *packet.Frame) { p.Payload = append([]byte(" \t\r\n"), xgJSON...) }),
			cfg: Config{PayloadCheck: true}, verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},
		{name: "payload check on, not JSON", pkt: with(v4, func(p *packet.Frame) { p.Payload = []byte("hello") }),
			cfg: Config{PayloadCheck: true}, verdict: xgDrop, want: map[Reason]uint64{ReasonPayloadNotJSON: 1}},
		{name: "payload check on, JSON array", pkt: with(v6, func(p *packet.Frame) { p.Payload = []byte(`[1,2]`) }),
			cfg: Config{PayloadCheck: true}, verdict: xgDrop, want: map[Reason]uint64{ReasonPayloadNotJSON: 1}},
		{name: "payload check on, empty", pkt: with(v4, func(p *packet.Frame) { p.Payload = nil }),
			cfg: Config{PayloadCheck: true}, verdict: xgDrop, want: map[Reason]uint64{ReasonPayloadNotJSON: 1}},
		{name: "payload check on, only blanks", pkt: with(v4, func(p *packet.Frame) { p.Payload = []byte("   ") }),
			cfg: Config{PayloadCheck: true}, verdict: xgDrop, want: map[Reason]uint64{ReasonPayloadNotJSON: 1}},
		{name: "payload check on, 16 blanks then {", pkt: with(v4, func(p *packet.Frame) { p.Payload = append(bytes.Repeat([]byte(" "), 16), '{') }),
			cfg: Config{PayloadCheck: true}, verdict: xgDrop, want: map[Reason]uint64{ReasonPayloadNotJSON: 1}},
		{name: "payload check off, not JSON", pkt: with(v4, func(p *packet.Frame) { p.Payload = []byte("hello") }),
			verdict: xgPass, want: map[Reason]uint64{ReasonPassSocket: 1}},
		{name: "payload check on, blocked first", pkt: with(v4, func(p *packet.Frame) { p.Payload = []byte("hello") }),
			cfg:     Config{PayloadCheck: true},
			setup:   func(t *testing.T, x *XDP) { xgNoErr(t, x.Block(xgSrc4, Forever)) },
			verdict: xgDrop, want: map[Reason]uint64{ReasonBlocked: 1}},

		// AF_XDP mode without a socket on the queue (with one: TestXDPAFXDP).
		{name: "afxdp, no socket", pkt: v4, cfg: Config{Deliver: DeliverXSK},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassNoXSK: 1}},
		{name: "afxdp, no socket, v6 VLAN", pkt: with(v6, func(p *packet.Frame) { p.VLANs = []packet.VLAN{{TPID: packet.EtherType8021Q, VID: 100}} }), cfg: Config{Deliver: DeliverXSK, VLANs: []uint16{100}},
			verdict: xgPass, want: map[Reason]uint64{ReasonPassNoXSK: 1}},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := xgLoad(t, Options{Config: tc.cfg})
			if tc.setup != nil {
				tc.setup(t, x)
			}
			pkt := tc.pkt.Bytes()
			before := xgCounters(t, x)
			verdict, out, ctxOut := xgRun(t, x.Program(), pkt, xgLoIfindex, 0)
			after := xgCounters(t, x)

			if verdict != tc.verdict {
				t.Errorf("verdict %d, want %d", verdict, tc.verdict)
			}
			xgAssertDeltas(t, before, after, tc.want, len(pkt))
			if d := after.Total().Packets - before.Total().Packets; d != 1 {
				t.Errorf("terminal reasons moved by %d, want exactly 1", d)
			}
			// Fate (what Stats and the accounting identity use) agrees with
			// the verdict the program gave.
			for r, n := range tc.want {
				if !r.Terminal() || n == 0 {
					continue
				}
				wantFate := FateDropped
				if tc.verdict != xgDrop {
					wantFate = FateNotForUs
					if r == ReasonPassSocket || r == ReasonPassNoXSK || r == ReasonRedirect {
						wantFate = FateSurvivor
					}
				}
				if r.Fate() != wantFate {
					t.Errorf("%v: fate %d, but the program's verdict %d says %d", r, r.Fate(), tc.verdict, wantFate)
				}
			}
			// Only a redirect writes metadata; data is unchanged.
			if ctxOut.Data != 0 || !bytes.Equal(out, pkt) {
				t.Errorf("packet changed: meta %d bytes, out %x", ctxOut.Data, out)
			}
		})
	}
}

func xgNoErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestXDPTokenBucket drives one source through its bucket: burst admitted,
// then dropped, refilled after a sleep, never above the burst; another
// source has its own bucket.
func TestXDPTokenBucket(t *testing.T) {
	const burst = 3
	// 20/s: one token per 50 ms, observable with short sleeps, and 50 ms
	// of slack for a loaded machine between packets that must see no refill.
	x := xgLoad(t, Options{Config: Config{BucketRate: 20, BucketBurst: burst}})
	pkt := packet.Frame{Src: xgSrc4, Dst: xgDst4, Payload: xgJSON}.Bytes()
	other := packet.Frame{Src: xgSrc6, Dst: xgDst6, Payload: xgJSON}.Bytes()

	send := func(p []byte, want uint32, wantReason Reason) {
		t.Helper()
		before := xgCounters(t, x)
		v, _, _ := xgRun(t, x.Program(), p, xgLoIfindex, 0)
		after := xgCounters(t, x)
		if v != want {
			t.Errorf("verdict %d, want %d", v, want)
		}
		xgAssertDeltas(t, before, after, map[Reason]uint64{wantReason: 1}, len(p))
	}

	for i := 0; i < burst; i++ {
		send(pkt, xgPass, ReasonPassSocket)
	}
	send(pkt, xgDrop, ReasonRateLimited)
	send(pkt, xgDrop, ReasonRateLimited)
	send(other, xgPass, ReasonPassSocket) // its own bucket

	time.Sleep(60 * time.Millisecond) // ≥ 1 token back
	send(pkt, xgPass, ReasonPassSocket)

	time.Sleep(300 * time.Millisecond) // 6 tokens' worth, capped at the burst
	for i := 0; i < burst; i++ {
		send(pkt, xgPass, ReasonPassSocket)
	}
	send(pkt, xgDrop, ReasonRateLimited)

	// A new rate applies from the next packet; rate 0 turns the bucket off.
	xgNoErr(t, x.SetConfig(Config{}))
	send(pkt, xgPass, ReasonPassSocket)
}

// TestXDPTokenBucketConcurrent runs the same source on every CPU at once:
// the CAS-based bucket must admit exactly the burst (plus what the rate
// refills while the test runs), never one packet more.
// Both bucket clocks: the burst (2000 s) picks the coarse one by default.
func TestXDPTokenBucketConcurrent(t *testing.T) {
	for _, fine := range []bool{false, true} {
		t.Run(map[bool]string{false: "coarse clock", true: "fine clock"}[fine], func(t *testing.T) {
			xgTokenBucketConcurrent(t, fine)
		})
	}
}

func xgTokenBucketConcurrent(t *testing.T, fine bool) {
	const burst = 2000
	const perCPU = 20000
	x := xgLoad(t, Options{Config: Config{BucketRate: 1, BucketBurst: burst, CostSampleN: CostSampleOff, FineClock: fine}})
	pkt := packet.Frame{Src: xgSrc4, Dst: xgDst4, Payload: xgJSON}.Bytes()

	cpus := runtime.NumCPU()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, cpus)
	for cpu := 0; cpu < cpus; cpu++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errs <- err
				return
			}
			// One syscall running the program perCPU times on this CPU.
			if _, err := x.Program().Run(&ebpf.RunOptions{Data: pkt, Repeat: perCPU}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	elapsed := time.Since(start)

	c := xgCounters(t, x)
	admitted := c[ReasonPassSocket].Packets
	refill := uint64(elapsed/time.Second) + 1
	total := c.Total().Packets
	t.Logf("%d CPUs x %d runs in %v: admitted %d, rate limited %d, contended %d, CAS retries %d",
		cpus, perCPU, elapsed, admitted, c[ReasonRateLimited].Packets, c[ReasonBucketContended].Packets, c[EventBucketCASRetry].Packets)
	if total < uint64(cpus*perCPU) {
		t.Errorf("counted %d packets, ran at least %d", total, cpus*perCPU)
	}
	if admitted < burst || admitted > burst+refill {
		t.Errorf("admitted %d, want %d..%d (burst + refill during %v)", admitted, burst, burst+refill, elapsed)
	}
	if admitted+c[ReasonRateLimited].Packets+c[ReasonBucketContended].Packets != total {
		t.Errorf("reasons other than bucket outcomes moved: %v", c.ByName())
	}
}

// TestXDPAFXDP covers the AF_XDP mode with a real AF_XDP socket in the
// XSKMAP (bound to queue 0 of a veth in a test namespace): the verdict is
// XDP_REDIRECT and the stamp in front of the frame — XDP metadata or the
// prefix header — carries the receive time. The prefix branch runs on any
// kernel; the metadata branch skips where bpf_xdp_adjust_meta is refused.
func TestXDPAFXDP(t *testing.T) {
	for _, stamp := range []Stamp{StampMeta, StampPrefix} {
		t.Run(stamp.String(), func(t *testing.T) { testXDPAFXDP(t, stamp) })
	}
}

func testXDPAFXDP(t *testing.T, stamp Stamp) {
	xgNeedRoot(t)
	h, xsk := xgXSK(t)
	x := xgLoad(t, Options{Config: Config{Deliver: DeliverXSK}, Queues: 4, Stamp: stamp})
	if got, _ := x.Stamp(); got != stamp {
		t.Fatalf("Stamp() = %v, want %v", got, stamp)
	}
	pkt := packet.Frame{Src: xgSrc4, Dst: xgDst4, Payload: xgJSON}.Bytes()

	run := func(queue uint32) (uint32, []byte, xdpMD, uint64, uint64) {
		var v uint32
		var out []byte
		var md xdpMD
		var t0, t1 uint64
		// The test run resolves ingress_ifindex in the caller's namespace.
		xgNoErr(t, h.Do(func() error {
			t0 = Ktime()
			v, out, md = xgRun(t, x.Program(), pkt, uint32(h.Ifindex), queue)
			t1 = Ktime()
			return nil
		}))
		return v, out, md, t0, t1
	}

	t.Run("no socket", func(t *testing.T) {
		before := xgCounters(t, x)
		v, out, md, _, _ := run(0)
		xgAssertDeltas(t, before, xgCounters(t, x), map[Reason]uint64{ReasonPassNoXSK: 1}, len(pkt))
		if v != xgPass || md.Data != 0 || !bytes.Equal(out[:md.DataEnd], pkt) {
			t.Errorf("verdict %d, meta %d bytes, out %d bytes: want XDP_PASS of the packet as sent", v, md.Data, md.DataEnd)
		}
	})

	xgNoErr(t, x.RegisterXSK(0, xsk))

	t.Run("socket", func(t *testing.T) {
		before := xgCounters(t, x)
		v, out, md, t0, t1 := run(0)
		xgAssertDeltas(t, before, xgCounters(t, x), map[Reason]uint64{ReasonRedirect: 1}, len(pkt))
		if v != xgRedirect {
			t.Fatalf("verdict %d, want XDP_REDIRECT", v)
		}
		switch stamp {
		case StampMeta:
			xgCheckMeta(t, out[:md.DataEnd], int(md.Data), pkt, t0, t1)
		case StampPrefix:
			// No metadata: the header is part of the packet now.
			if md.Data != 0 {
				t.Errorf("prefix stamp wrote %d bytes of metadata", md.Data)
			}
			xgCheckMeta(t, out[:md.DataEnd], binary.Size(XdpXgateMeta{}), pkt, t0, t1)
		}
	})

	// Every surviving fixture: the stamp hands over where the payload and
	// the source address are, and they are what the parser finds.
	t.Run("handoff", func(t *testing.T) {
		y := xgLoad(t, Options{Config: Config{Deliver: DeliverXSK, VLANs: []uint16{packettest.VLAN}},
			ListenPorts: []uint16{packettest.Port}, Queues: 4, Stamp: stamp})
		xgNoErr(t, y.RegisterXSK(0, xsk))
		size := binary.Size(XdpXgateMeta{})
		n := 0
		for _, fx := range packettest.Fixtures {
			if fx.XDP != "pass_socket" {
				continue
			}
			frame := fx.Bytes()
			var v uint32
			var out []byte
			var md xdpMD
			xgNoErr(t, h.Do(func() error {
				v, out, md = xgRun(t, y.Program(), frame, uint32(h.Ifindex), 0)
				return nil
			}))
			if v != xgRedirect || int(md.DataEnd) != size+len(frame) {
				t.Errorf("%s: verdict %d, %d bytes out: want a stamped redirect", fx.Name, v, md.DataEnd)
				continue
			}
			var m XdpXgateMeta
			if _, err := binary.Decode(out[:size], binary.NativeEndian, &m); err != nil {
				t.Fatal(err)
			}
			d, o := packet.ParseUDP(frame)
			if o != packet.UDP {
				t.Fatalf("%s: parser says %v", fx.Name, o)
			}
			off, so := int(m.PayloadOff), int(m.SrcOff)
			srcLen := 4
			if m.Flags&1 != 0 {
				srcLen = 16
			}
			ulen := 0
			if off >= 8 && off <= len(frame) {
				ulen = int(binary.BigEndian.Uint16(frame[off-4 : off-2]))
			}
			if ulen-8 != len(d.Payload) || off+len(d.Payload) > len(frame) || !bytes.Equal(frame[off:off+len(d.Payload)], d.Payload) {
				t.Errorf("%s: handed payload at %d (UDP length %d), parser's payload is %d bytes", fx.Name, off, ulen, len(d.Payload))
			}
			if want := d.Src.AsSlice(); so+srcLen > len(frame) || !bytes.Equal(frame[so:so+srcLen], want) {
				t.Errorf("%s: handed source at %d (%d bytes), parser's is %v", fx.Name, so, srcLen, d.Src)
			}
			n++
		}
		if n < 5 {
			t.Errorf("only %d surviving fixtures checked", n)
		}
	})

	t.Run("socket on another queue", func(t *testing.T) {
		before := xgCounters(t, x)
		v, out, md, _, _ := run(1)
		xgAssertDeltas(t, before, xgCounters(t, x), map[Reason]uint64{ReasonPassNoXSK: 1}, len(pkt))
		if v != xgPass || !bytes.Equal(out[:md.DataEnd], pkt) {
			t.Errorf("verdict %d, want XDP_PASS of the packet as sent", v)
		}
	})

	t.Run("unregistered", func(t *testing.T) {
		xgNoErr(t, x.UnregisterXSK(0))
		before := xgCounters(t, x)
		v, _, _, _, _ := run(0)
		xgAssertDeltas(t, before, xgCounters(t, x), map[Reason]uint64{ReasonPassNoXSK: 1}, len(pkt))
		if v != xgPass {
			t.Errorf("verdict %d, want XDP_PASS", v)
		}
	})
}

// TestXDPStampAuto: with metadata switched off the loader picks the prefix
// header on any kernel, and says why; left to itself it picks what the
// probe allows.
func TestXDPStampAuto(t *testing.T) {
	t.Run("meta off", func(t *testing.T) {
		defer ForceOff(FeatXDPMeta)()
		x := xgLoad(t, Options{Config: Config{Deliver: DeliverXSK}})
		if s, why := x.Stamp(); s != StampPrefix || !strings.Contains(why, FeatXDPMeta) {
			t.Errorf("Stamp() = %v (%s), want prefix because of %s", s, why, FeatXDPMeta)
		}
		if _, err := LoadXDP(Options{Config: Config{Deliver: DeliverXSK}, Stamp: StampMeta}); !errors.Is(err, ErrForcedOff) {
			t.Errorf("LoadXDP(StampMeta) with meta off: %v, want ErrForcedOff", err)
		}
	})
	t.Run("probe", func(t *testing.T) {
		want := StampPrefix
		if Probe(FeatXDPMeta) == nil {
			want = StampMeta
		}
		x := xgLoad(t, Options{Config: Config{Deliver: DeliverXSK}})
		if s, why := x.Stamp(); s != want {
			t.Errorf("Stamp() = %v (%s), want %v", s, why, want)
		}
	})
}

// xgCheckMeta checks out = stamp (metaLen bytes) + the unchanged packet,
// the stamp being a struct xgate_meta stamped between t0 and t1.
func xgCheckMeta(t *testing.T, out []byte, metaLen int, pkt []byte, t0, t1 uint64) {
	t.Helper()
	size := binary.Size(XdpXgateMeta{})
	if metaLen != size || len(out) != size+len(pkt) {
		t.Fatalf("metadata %d bytes, output %d bytes: want %d + %d", metaLen, len(out), size, len(pkt))
	}
	var m XdpXgateMeta
	if _, err := binary.Decode(out[:size], binary.NativeEndian, &m); err != nil {
		t.Fatal(err)
	}
	if m.Magic != 0x58474d31 {
		t.Errorf("meta magic %#x", m.Magic)
	}
	if m.RxNs < t0 || m.RxNs > t1 {
		t.Errorf("meta rx_ns %d outside [%d, %d]", m.RxNs, t0, t1)
	}
	if !bytes.Equal(out[size:], pkt) {
		t.Errorf("packet changed behind the metadata")
	}
}

func TestXDPBlocklist(t *testing.T) {
	x := xgLoad(t, Options{})
	mapped := netip.MustParseAddr("::ffff:198.18.0.1")

	xgNoErr(t, x.Block(xgSrc4, Forever))
	xgNoErr(t, x.Block(xgSrc6, time.Minute))
	xgNoErr(t, x.blockAt(xgOther4, Ktime()-1))
	if err := x.Block(netip.Addr{}, Forever); err == nil {
		t.Error("Block of the zero Addr: no error")
	}

	list, err := x.ListBlocked()
	xgNoErr(t, err)
	got := map[netip.Addr]Blocked{}
	for _, b := range list {
		got[b.Addr] = b
	}
	now := Ktime()
	if b, ok := got[xgSrc4]; !ok || !b.Permanent || b.Expired || b.ExpiresNs != math.MaxUint64 {
		t.Errorf("%v: %+v", xgSrc4, b)
	}
	if b, ok := got[xgSrc6]; !ok || b.Permanent || b.Expired || b.TTL(now) <= 50*time.Second || b.TTL(now) > time.Minute {
		t.Errorf("%v: %+v (ttl %v)", xgSrc6, b, b.TTL(now))
	}
	if b, ok := got[xgOther4]; !ok || !b.Expired {
		t.Errorf("%v: %+v", xgOther4, b)
	}
	if len(list) != 3 {
		t.Errorf("%d entries, want 3: %+v", len(list), list)
	}

	// A v4-mapped IPv6 address is the same key as its IPv4 address.
	xgNoErr(t, x.Unblock(mapped))
	xgNoErr(t, x.Unblock(mapped)) // absent: no error
	list, err = x.ListBlocked()
	xgNoErr(t, err)
	for _, b := range list {
		if b.Addr == xgSrc4 {
			t.Errorf("%v still blocked after Unblock(%v)", xgSrc4, mapped)
		}
	}
}

func TestXDPListenPorts(t *testing.T) {
	x := xgLoad(t, Options{ListenPorts: []uint16{9000, 9001}})
	ports, err := x.ListenPorts()
	xgNoErr(t, err)
	if len(ports) != 2 || ports[0] != 9000 || ports[1] != 9001 {
		t.Errorf("ports %v", ports)
	}
	xgNoErr(t, x.SetListenPorts(9001, 7000))
	ports, err = x.ListenPorts()
	xgNoErr(t, err)
	if len(ports) != 2 || ports[0] != 7000 || ports[1] != 9001 {
		t.Errorf("after replace: ports %v", ports)
	}
	xgNoErr(t, x.SetListenPorts())
	ports, err = x.ListenPorts()
	xgNoErr(t, err)
	if len(ports) != 0 {
		t.Errorf("after clear: ports %v", ports)
	}
}

func TestXDPConfig(t *testing.T) {
	x := xgLoad(t, Options{})
	raw, err := x.ReadConfig()
	xgNoErr(t, err)
	if raw.CostSampleN != DefaultCostSampleN || raw.BucketIntervalNs != 0 || raw.Mode != XdpXgateModeXGATE_MODE_SOCKET {
		t.Errorf("default config %+v", raw)
	}
	xgNoErr(t, x.SetConfig(Config{Deliver: DeliverXSK, BucketRate: 1000, BucketBurst: 50, PayloadCheck: true, CostSampleN: CostSampleOff}))
	raw, err = x.ReadConfig()
	xgNoErr(t, err)
	want := XdpXgateConfig{BucketIntervalNs: 1e6, BucketLimitNs: 50e6, Mode: XdpXgateModeXGATE_MODE_AFXDP,
		Flags: XdpXgateFlagsXGATE_F_PAYLOAD_CHECK, BucketMask: 65535, HashKey: x.hashKey}
	if 50e6 >= 2*kernelTick() { // a 50 ms burst: the coarse clock unless HZ < 40
		want.TickNs = kernelTick()
	}
	if raw != want || raw.HashKey == [4]uint32{} {
		t.Errorf("config %+v, want %+v", raw, want)
	}
	if err := x.SetConfig(Config{Deliver: 7}); err == nil {
		t.Error("unknown mode accepted")
	}

	// The clock: fine when the burst lasts less than two ticks or when
	// asked for; too long a burst for 48-bit TATs is refused.
	for _, tc := range []struct {
		c    Config
		tick uint64
	}{
		{Config{BucketRate: 1, BucketBurst: 1}, kernelTick()},
		{Config{BucketRate: 1, BucketBurst: 1, FineClock: true}, 0},
		{Config{BucketRate: 1e9, BucketBurst: 1 << 20}, 0}, // 1 ms
		{Config{BucketRate: 1e9, BucketBurst: 2 * kernelTick()}, kernelTick()},
		{Config{BucketRate: 1e9, BucketBurst: 2*kernelTick() - 1}, 0},
	} {
		xgNoErr(t, x.SetConfig(tc.c))
		raw, err := x.ReadConfig()
		xgNoErr(t, err)
		if raw.TickNs != tc.tick {
			t.Errorf("%+v: tick_ns %d, want %d", tc.c, raw.TickNs, tc.tick)
		}
	}
	if err := x.SetConfig(Config{BucketRate: 1, BucketBurst: 200000}); err == nil {
		t.Error("a 55 h burst accepted")
	}
}

// TestXDPCost checks the sampled cost: with N = 1 every packet is timed.
func TestXDPCost(t *testing.T) {
	x := xgLoad(t, Options{Config: Config{CostSampleN: 1}})
	pkt := packet.Frame{Src: xgSrc4, Dst: xgDst4, Payload: xgJSON}.Bytes()
	for i := 0; i < 10; i++ {
		xgRun(t, x.Program(), pkt, xgLoIfindex, 0)
	}
	c, err := x.ReadCost()
	xgNoErr(t, err)
	var inHist uint64
	for _, n := range c.Hist {
		inHist += n
	}
	if c.Samples != 10 || inHist != 10 || c.SumNs == 0 {
		t.Errorf("cost %+v, want 10 samples", c)
	}
	t.Logf("mean sampled cost %v", c.Mean())

	xgNoErr(t, x.SetConfig(Config{CostSampleN: 4}))
	for i := 0; i < 8; i++ {
		xgRun(t, x.Program(), pkt, xgLoIfindex, 0)
	}
	c, err = x.ReadCost()
	xgNoErr(t, err)
	if c.Samples != 12 {
		t.Errorf("%d samples after 8 more at 1 in 4, want 12", c.Samples)
	}
}

func TestReasonNames(t *testing.T) {
	want := map[Reason]string{
		ReasonRedirect:        "redirect",
		ReasonPortNotListened: "port_not_listened",
		ReasonIPv4Fragment:    "ipv4_fragment",
		ReasonMalformedIPv6:   "malformed_ipv6",
		EventBlockExpired:     "block_expired",
		EventMetaFailed:       "meta_failed",
		EventBlockFilterFP:    "block_filter_fp",
		EventBucketTakeover:   "bucket_takeover",
	}
	for r, name := range want {
		if r.String() != name {
			t.Errorf("%d: %q, want %q", uint32(r), r.String(), name)
		}
	}
	seen := map[string]bool{}
	for r := Reason(0); r < ReasonMax; r++ {
		s := r.String()
		if s == "" || seen[s] || s == "reason_"+strconv.Itoa(int(r)) {
			t.Errorf("reason %d: name %q missing or duplicate", uint32(r), s)
		}
		seen[s] = true
		if r.Terminal() != (r < ReasonTerminal) {
			t.Errorf("%v: Terminal wrong", r)
		}
	}
	for r := RpReason(0); r < RpReasonMax; r++ {
		if r.String() == "" || r.String() == "rp_reason_"+strconv.Itoa(int(r)) {
			t.Errorf("rp reason %d has no name", uint32(r))
		}
	}
	if RpSlotEmpty.String() != "slot_empty" {
		t.Errorf("RpSlotEmpty = %q", RpSlotEmpty.String())
	}
}

// TestXDPPinning loads twice on one pin path: the second load reuses the
// pinned maps, Unpin removes the pins and the directory.
func TestXDPPinning(t *testing.T) {
	xgNeedRoot(t)
	dir := filepath.Join(xgBPFFS(t), "xgate-test-"+strconv.Itoa(os.Getpid()))
	t.Cleanup(func() { os.RemoveAll(dir) })

	a := xgLoad(t, Options{PinPath: dir})
	for _, name := range []string{XdpMapXgateBlocklist, XdpMapXgateBfilter, XdpMapXgateBuckets, XdpMapXgateCfg,
		XdpMapXgateCostNs, XdpMapXgateCounters, XdpMapXgatePorts, XdpMapXgateXsks, XdpMapXgateCidrs, XdpMapXgateCidrHits} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("pin of %s: %v", name, err)
		}
	}
	xgNoErr(t, a.Block(xgSrc4, Forever))

	b := xgLoad(t, Options{PinPath: dir, ListenPorts: []uint16{9000}})
	list, err := b.ListBlocked()
	xgNoErr(t, err)
	if len(list) != 1 || list[0].Addr != xgSrc4 {
		t.Errorf("second load sees blocklist %+v, want the pinned entry", list)
	}
	pkt := packet.Frame{Src: xgSrc4, Dst: xgDst4, Payload: xgJSON}.Bytes()
	if v, _, _ := xgRun(t, b.Program(), pkt, xgLoIfindex, 0); v != xgDrop {
		t.Errorf("second program: verdict %d, want drop from the shared blocklist", v)
	}
	if c := xgCounters(t, a); c[ReasonBlocked].Packets != 1 {
		t.Errorf("first instance sees %d blocked, want 1 (shared counters)", c[ReasonBlocked].Packets)
	}

	// The probes pin beside the program, and unpin with it.
	p, err := LoadProbes(ProbeOptions{PinPath: dir, ClockRefresh: -1})
	xgNoErr(t, err)
	defer p.Close()
	for _, name := range []string{probesKernMapProbeCfg, probesKernMapProbeDrops, probesKernMapProbeLatency,
		probesKernMapProbePorts, probesKernMapProbeSockTicks, probesKernMapProbeStats, probesKernMapProbeXdpEvents} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("pin of %s: %v", name, err)
		}
	}

	xgNoErr(t, a.Unpin())
	xgNoErr(t, p.Unpin())
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("pin directory still there after Unpin: %v", err)
	}
}

// xgBPFFS returns /sys/fs/bpf when a bpffs is mounted there; otherwise it
// mounts a private bpffs on a temp dir for the test and unmounts it after.
func xgBPFFS(t *testing.T) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return "/sys/fs/bpf"
	}
	dir, err := os.MkdirTemp("", "xgate-test-bpffs-")
	xgNoErr(t, err)
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(dir)
		t.Skipf("no bpffs at /sys/fs/bpf and cannot mount one: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	t.Logf("no bpffs at /sys/fs/bpf: pinning under a private bpffs at %s", dir)
	return dir
}

// TestMapsHaveBTF: every map is created with BTF, so that
// `bpftool map dump pinned …` prints named fields (a map whose key type
// the kernel refuses is silently created without BTF).
func TestMapsHaveBTF(t *testing.T) {
	x := xgLoad(t, Options{})
	rp, err := NewReuseport(ReuseportOptions{Nodes: 1, PerNode: 4})
	xgNoErr(t, err)
	t.Cleanup(func() { rp.Close() })

	m := x.Maps()
	maps := map[string]*ebpf.Map{
		XdpMapXgateBlocklist: m.XgateBlocklist, XdpMapXgateBuckets: m.XgateBuckets, XdpMapXgateBfilter: m.XgateBfilter,
		XdpMapXgateCfg: m.XgateCfg, XdpMapXgateCostNs: m.XgateCostNs,
		XdpMapXgateCounters: m.XgateCounters, XdpMapXgatePorts: m.XgatePorts,
		ReuseportMapXgateRpCfg: rp.objs.XgateRpCfg, ReuseportMapXgateRpStats: rp.objs.XgateRpStats,
	}
	for name, mp := range maps {
		info, err := mp.Info()
		xgNoErr(t, err)
		if id, ok := info.BTFID(); !ok || id == 0 {
			t.Errorf("map %s has no BTF", name)
		}
		if info.Name != name {
			t.Errorf("map %s is named %q in the kernel", name, info.Name)
		}
	}
}

// TestXDPCIDRLists: a never-block list keeps its sources out of the
// blocklist and the bucket (and Block refuses them), a drop list drops,
// the longest prefix wins, hits are counted per list, and replacing the
// lists removes what is no longer listed.
func TestXDPCIDRLists(t *testing.T) {
	x := xgLoad(t, Options{Config: Config{BucketRate: 1, BucketBurst: 1}})
	v4 := packet.Frame{Src: xgSrc4, Dst: xgDst4, Payload: xgJSON}.Bytes()
	other := packet.Frame{Src: xgOther4, Dst: xgDst4, Payload: xgJSON}.Bytes()
	v6 := packet.Frame{Src: xgSrc6, Dst: xgDst6, Payload: xgJSON}.Bytes()
	lists := []CIDRList{
		{Name: "partners", Action: CIDRNeverBlock, Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}},
		{Name: "bad", Action: CIDRDrop, Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:2::/64"), netip.MustParsePrefix("198.18.0.9/32")}},
	}
	xgNoErr(t, x.SetCIDRLists(lists))

	if err := x.Block(xgSrc4, Forever); !errors.Is(err, ErrNeverBlock) {
		t.Errorf("Block of a never-block address: %v, want ErrNeverBlock", err)
	}
	// As bpftool would, behind the API's back: the program still skips it.
	k, _ := srcKey(xgSrc4)
	xgNoErr(t, x.objs.XgateBlocklist.Put(k, XdpXgateBlock{ExpiresNs: math.MaxUint64}))
	xgNoErr(t, x.SyncBlockFilter())
	// Three back to back with a burst of 1: the bucket is skipped too.
	for i := 0; i < 3; i++ {
		before := xgCounters(t, x)
		if v, _, _ := xgRun(t, x.Program(), v4, xgLoIfindex, 0); v != xgPass {
			t.Fatalf("never-block source, packet %d: verdict %d", i, v)
		}
		xgAssertDeltas(t, before, xgCounters(t, x), map[Reason]uint64{ReasonPassSocket: 1, EventNeverBlock: 1}, len(v4))
	}
	// The longest prefix wins: 198.18.0.9/32 drop inside the /24.
	xgRunChecked(t, x, other, ReasonCIDRDrop)
	xgRunChecked(t, x, v6, ReasonCIDRDrop)
	if l, a, ok, err := x.LookupCIDR(xgOther4); err != nil || !ok || l != 1 || a != CIDRDrop {
		t.Errorf("LookupCIDR(%v) = %d %v %v %v", xgOther4, l, a, ok, err)
	}
	hits, err := x.CIDRHits()
	xgNoErr(t, err)
	if hits[0].Packets != 3 || hits[1].Packets != 2 {
		t.Errorf("hits partners %d bad %d, want 3 and 2", hits[0].Packets, hits[1].Packets)
	}

	// Replace: only the drop list, without the /32; the block applies again.
	xgNoErr(t, x.SetCIDRLists(lists[1:2]))
	xgNoErr(t, x.SetCIDRLists([]CIDRList{{Name: "bad", Action: CIDRDrop, Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:2::/64")}}}))
	xgRunChecked(t, x, v4, ReasonBlocked)
	if _, _, ok, _ := x.LookupCIDR(xgOther4); ok {
		t.Error("198.18.0.9 still listed after the lists were replaced")
	}
	// A SetConfig keeps the lists on.
	xgNoErr(t, x.SetConfig(Config{}))
	xgRunChecked(t, x, v6, ReasonCIDRDrop)
	// No lists: no lookup.
	xgNoErr(t, x.SetCIDRLists(nil))
	xgRunChecked(t, x, v6, ReasonPassSocket)

	if err := x.SetCIDRLists([]CIDRList{
		{Name: "a", Action: CIDRDrop, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{Name: "b", Action: CIDRNeverBlock, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}},
	}); err == nil {
		t.Error("one prefix in two lists: no error")
	}
}

// TestXDPBlockSweep: entries carry their rule and time; SweepExpired
// removes the expired ones from the map and the prefilter (a later packet
// from that source takes the prefilter's fast path again) and reports the
// next expiry ahead.
func TestXDPBlockSweep(t *testing.T) {
	x := xgLoad(t, Options{})
	xgNoErr(t, x.BlockBy(xgSrc4, time.Hour, "flood-source"))
	xgNoErr(t, x.blockAt(xgOther4, Ktime()-1))
	xgNoErr(t, x.Block(xgSrc6, Forever))
	bl, err := x.ListBlocked()
	xgNoErr(t, err)
	byAddr := map[netip.Addr]Blocked{}
	for _, b := range bl {
		byAddr[b.Addr] = b
	}
	if b := byAddr[xgSrc4]; b.Rule != "flood-source" || b.SinceNs == 0 || b.Permanent || b.Expired {
		t.Errorf("entry %+v", b)
	}
	if b := byAddr[xgSrc6]; b.Rule != ManualRule || !b.Permanent {
		t.Errorf("entry %+v", b)
	}
	removed, next, err := x.SweepExpired()
	xgNoErr(t, err)
	if removed != 1 || next != byAddr[xgSrc4].ExpiresNs {
		t.Errorf("sweep removed %d, next %d: want 1 and %d", removed, next, byAddr[xgSrc4].ExpiresNs)
	}
	if bl, _ := x.ListBlocked(); len(bl) != 2 {
		t.Errorf("%d entries left, want 2", len(bl))
	}
	// The swept source's prefilter counter is back to zero: no lookup.
	other := packet.Frame{Src: xgOther4, Dst: xgDst4, Payload: xgJSON}.Bytes()
	xgRunChecked(t, x, other, ReasonPassSocket)
	if removed, _, _ := x.SweepExpired(); removed != 0 {
		t.Errorf("second sweep removed %d", removed)
	}
	long := strings.Repeat("r", 40)
	xgNoErr(t, x.BlockBy(xgOther4, time.Minute, long))
	bl, _ = x.ListBlocked()
	for _, b := range bl {
		if b.Addr == xgOther4 && b.Rule != long[:31] {
			t.Errorf("long rule name kept as %q", b.Rule)
		}
	}
}

// TestXDPGroups: a datagram to a listened port and to a multicast group is
// ours only when the gateway joined the group (SetGroups); otherwise it
// passes to the stack as group_not_joined, IPv4 and IPv6 alike. Unicast is
// not affected.
func TestXDPGroups(t *testing.T) {
	x := xgLoad(t, Options{})
	g4, other4 := netip.MustParseAddr("239.1.1.1"), netip.MustParseAddr("239.1.1.2")
	g6 := netip.MustParseAddr("ff0e::1")
	send := func(dst netip.Addr, want Reason) {
		t.Helper()
		src := xgSrc4
		if dst.Is6() {
			src = xgSrc6
		}
		pkt := packet.Frame{Src: src, Dst: dst, Payload: xgJSON}.Bytes()
		before := xgCounters(t, x)
		v, _, _ := xgRun(t, x.Program(), pkt, xgLoIfindex, 0)
		xgAssertDeltas(t, before, xgCounters(t, x), map[Reason]uint64{want: 1}, len(pkt))
		if v != xgPass {
			t.Errorf("%v: verdict %d, want XDP_PASS", dst, v)
		}
	}
	send(g4, ReasonGroupNotJoined)
	send(g6, ReasonGroupNotJoined)
	send(xgDst4, ReasonPassSocket)
	xgNoErr(t, x.SetGroups([]netip.Addr{g4, g6}))
	send(g4, ReasonPassSocket)
	send(g6, ReasonPassSocket)
	send(other4, ReasonGroupNotJoined)
	xgNoErr(t, x.SetGroups([]netip.Addr{other4}))
	send(g4, ReasonGroupNotJoined)
	send(other4, ReasonPassSocket)
	if err := x.SetGroups([]netip.Addr{xgDst4}); err == nil {
		t.Error("SetGroups took a unicast address")
	}
}

// TestXDPAddress: with an address set (listen.address), a datagram to a
// listened port is ours only when it is to that address, IPv4 and IPv6
// alike; to another address, or of the other family, it passes to the
// stack as not_our_address. Unset or unspecified means any. The served
// checks come first (an IPv6 datagram where no socket serves IPv6 stays
// ipv6_not_served), the port and group checks before them.
func TestXDPAddress(t *testing.T) {
	x := xgLoad(t, Options{})
	group, unjoined := netip.MustParseAddr("239.1.1.1"), netip.MustParseAddr("239.1.1.2")
	xgNoErr(t, x.SetGroups([]netip.Addr{group}))
	other4, other6 := netip.MustParseAddr("198.18.0.6"), netip.MustParseAddr("2001:2::6")
	mapped := netip.AddrFrom16(xgDst4.As16())
	frame := func(dst netip.Addr, mod ...func(*packet.Frame)) packet.Frame {
		f := packet.Frame{Src: xgSrc4, Dst: dst, Payload: xgJSON}
		if dst.Is6() { // v4-mapped too: an IPv6 header to ::ffff:a.b.c.d
			f.Src = xgSrc6
		}
		for _, m := range mod {
			m(&f)
		}
		return f
	}
	vlans := func(f *packet.Frame) {
		f.VLANs = []packet.VLAN{{TPID: packet.EtherType8021AD, VID: 100}, {TPID: packet.EtherType8021Q, VID: 101}}
	}
	options := func(f *packet.Frame) { f.Options = bytes.Repeat([]byte{1}, 12) }
	// IPv6 destinations that differ from xgDst6 in one 32-bit word each.
	var near6 []netip.Addr
	for w := range 4 {
		b := xgDst6.As16()
		b[4*w+1] ^= 0x80
		near6 = append(near6, netip.AddrFrom16(b))
	}

	at := func(a string) Config { return Config{Address: netip.MustParseAddr(a)} }
	tests := []struct {
		name string
		cfg  Config
		pkt  packet.Frame
		want Reason
	}{
		{"unset, IPv4 to any address", Config{}, frame(other4), ReasonPassSocket},
		{"unset, IPv6 to any address", Config{}, frame(other6), ReasonPassSocket},
		{"0.0.0.0 is any", at("0.0.0.0"), frame(other4), ReasonPassSocket},
		{":: is any, IPv6", at("::"), frame(other6), ReasonPassSocket},
		{":: is any, IPv4", at("::"), frame(other4), ReasonPassSocket},

		{"IPv4 to the address", at("198.18.0.2"), frame(xgDst4), ReasonPassSocket},
		{"IPv4 to another address", at("198.18.0.2"), frame(other4), ReasonNotOurAddress},
		{"IPv4 to the address, VLANs and options", Config{Address: xgDst4, AnyVLAN: true}, frame(xgDst4, vlans, options), ReasonPassSocket},
		{"IPv4 to another address, VLANs and options", Config{Address: xgDst4, AnyVLAN: true}, frame(other4, vlans, options), ReasonNotOurAddress},
		{"IPv4 to another address and port", at("198.18.0.2"), frame(other4, func(f *packet.Frame) { f.DstPort = 53 }), ReasonPortNotListened},
		{"IPv4 to another address on a VLAN not served", at("198.18.0.2"), frame(other4, vlans), ReasonVLANNotServed},
		{"IPv4 address, IPv6 datagram", at("198.18.0.2"), frame(xgDst6), ReasonNotOurAddress},
		{"IPv4 address, IPv6 datagram, no IPv6 socket", Config{Address: xgDst4, NoIPv6: true}, frame(xgDst6), ReasonIPv6NotServed},
		{"IPv4 address, joined group", at("198.18.0.2"), frame(group), ReasonNotOurAddress},
		{"IPv4 address, group not joined", at("198.18.0.2"), frame(unjoined), ReasonGroupNotJoined},
		{"v4-mapped address is IPv4", Config{Address: mapped}, frame(xgDst4), ReasonPassSocket},
		{"v4-mapped address, another IPv4", Config{Address: mapped}, frame(other4), ReasonNotOurAddress},
		{"v4-mapped address, IPv6 header to it", Config{Address: mapped}, frame(mapped), ReasonNotOurAddress},

		{"IPv6 to the address", at("2001:2::2"), frame(xgDst6), ReasonPassSocket},
		{"IPv6 to the address, VLANs", Config{Address: xgDst6, AnyVLAN: true}, frame(xgDst6, vlans), ReasonPassSocket},
		{"IPv6 to the address, zone ignored", at("2001:2::2%eth0"), frame(xgDst6), ReasonPassSocket},
		{"IPv6 to another address", at("2001:2::2"), frame(other6), ReasonNotOurAddress},
		{"IPv6 off in word 0", at("2001:2::2"), frame(near6[0]), ReasonNotOurAddress},
		{"IPv6 off in word 1", at("2001:2::2"), frame(near6[1]), ReasonNotOurAddress},
		{"IPv6 off in word 2", at("2001:2::2"), frame(near6[2]), ReasonNotOurAddress},
		{"IPv6 off in word 3", at("2001:2::2"), frame(near6[3]), ReasonNotOurAddress},
		{"IPv6 to another address, VLANs", Config{Address: xgDst6, AnyVLAN: true}, frame(other6, vlans), ReasonNotOurAddress},
		{"IPv6 address, IPv4 datagram", at("2001:2::2"), frame(xgDst4), ReasonNotOurAddress},
		{"IPv6 address, v4-mapped destination", at("2001:2::2"), frame(mapped), ReasonNotOurAddress},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			xgNoErr(t, x.SetConfig(tc.cfg))
			xgRunChecked(t, x, tc.pkt.Bytes(), tc.want)
		})
	}

	// What raw() writes: the flag of the family and the address v4-mapped.
	for _, tc := range []struct {
		addr netip.Addr
		flag XdpXgateFlags
		want netip.Addr
	}{
		{netip.Addr{}, 0, netip.IPv6Unspecified()},
		{netip.IPv4Unspecified(), 0, netip.IPv6Unspecified()},
		{netip.IPv6Unspecified(), 0, netip.IPv6Unspecified()},
		{xgDst4, XdpXgateFlagsXGATE_F_DST_V4, mapped},
		{mapped, XdpXgateFlagsXGATE_F_DST_V4, mapped},
		{xgDst6, XdpXgateFlagsXGATE_F_DST_V6, xgDst6},
	} {
		xgNoErr(t, x.SetConfig(Config{Address: tc.addr}))
		raw, err := x.ReadConfig()
		xgNoErr(t, err)
		dst := XdpXgateFlagsXGATE_F_DST_V4 | XdpXgateFlagsXGATE_F_DST_V6
		if raw.Flags&dst != tc.flag || raw.DstAddr != tc.want.As16() {
			t.Errorf("address %v: flags %#x, dst_addr %v; want %#x, %v", tc.addr, raw.Flags&dst, netip.AddrFrom16(raw.DstAddr), tc.flag, tc.want)
		}
	}
}

// TestXDPAddressAFXDP: in AF_XDP mode a datagram to the address is
// redirected (stamped), one to another address passes to the stack as sent.
func TestXDPAddressAFXDP(t *testing.T) {
	xgNeedRoot(t)
	h, xsk := xgXSK(t)
	for _, addr := range []netip.Addr{xgDst4, xgDst6} {
		x := xgLoad(t, Options{Config: Config{Deliver: DeliverXSK, Address: addr}, Queues: 4})
		xgNoErr(t, x.RegisterXSK(0, xsk))
		other, src := netip.MustParseAddr("198.18.0.6"), xgSrc4
		if addr.Is6() {
			other, src = netip.MustParseAddr("2001:2::6"), xgSrc6
		}
		for _, tc := range []struct {
			dst     netip.Addr
			verdict uint32
			want    Reason
		}{{addr, xgRedirect, ReasonRedirect}, {other, xgPass, ReasonNotOurAddress}} {
			pkt := packet.Frame{Src: src, Dst: tc.dst, Payload: xgJSON}.Bytes()
			before := xgCounters(t, x)
			var v uint32
			var out []byte
			var md xdpMD
			xgNoErr(t, h.Do(func() error {
				v, out, md = xgRun(t, x.Program(), pkt, uint32(h.Ifindex), 0)
				return nil
			}))
			xgAssertDeltas(t, before, xgCounters(t, x), map[Reason]uint64{tc.want: 1}, len(pkt))
			if v != tc.verdict {
				t.Errorf("address %v, to %v: verdict %d, want %d", addr, tc.dst, v, tc.verdict)
			}
			if tc.verdict == xgPass && (md.Data != 0 || !bytes.Equal(out[:md.DataEnd], pkt)) {
				t.Errorf("address %v, to %v: passed changed (meta %d bytes)", addr, tc.dst, md.Data)
			}
		}
		xgNoErr(t, x.UnregisterXSK(0))
	}
}
