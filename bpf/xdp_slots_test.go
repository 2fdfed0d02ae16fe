package bpf

import (
	"net/netip"
	"testing"
	"time"

	"github.com/xgate/xgate/packet"
)

// Helpers and tests for the hashed structures of the XDP program: the
// blocklist prefilter (xgate_bfilter) and the direct-mapped token-bucket
// slots (xgate_buckets).

// bucketSlot is the slot index of addr and the owner bits (used, clock,
// tag) the program writes there, as bucket_admit computes them.
func (x *XDP) bucketSlot(addr netip.Addr, coarse bool) (uint32, uint64) {
	k, _ := srcKey(addr)
	h := srcHash(k.Addr, x.hashKey)
	owner := uint64(1) << 63
	if coarse {
		owner |= 1 << 62
	}
	owner |= (h >> 50) << 48
	return uint32(h) & x.bucketMask, owner
}

// setBucket writes addr's slot as if addr had a TAT of tat (ns in the
// slot's clock).
func (x *XDP) setBucket(addr netip.Addr, tat uint64, coarse bool) error {
	idx, owner := x.bucketSlot(addr, coarse)
	return x.objs.XgateBuckets.Put(idx, XdpXgateBucket{OwnerTat: owner | tat&(1<<48-1)})
}

// bfilterCount reads addr's block-filter counter.
func (x *XDP) bfilterCount(t *testing.T, addr netip.Addr) uint8 {
	t.Helper()
	k, _ := srcKey(addr)
	w, i := x.bfilterSlot(k)
	var word XdpXgateBfilterWord
	xgNoErr(t, x.objs.XgateBfilter.Lookup(w, &word))
	return word.N[i]
}

// xgV4 is the i-th address of 198.18.0.0/15.
func xgV4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)})
}

// TestSrcHashMatchesProgram: Go's srcHash agrees with the program's: a
// block set through the Go-computed filter counter is seen by the program
// for v4 and v6 sources (each with a counter of its own here).
func TestSrcHashMatchesProgram(t *testing.T) {
	x := xgLoad(t, Options{})
	for _, src := range []netip.Addr{xgSrc4, xgSrc6, xgOther4, netip.MustParseAddr("2001:db8:ffff::1:2:3")} {
		xgNoErr(t, x.Block(src, Forever))
		dst := xgDst4
		if src.Is6() {
			dst = xgDst6
		}
		pkt := packet.Frame{Src: src, Dst: dst, Payload: xgJSON}.Bytes()
		before := xgCounters(t, x)
		v, _, _ := xgRun(t, x.Program(), pkt, xgLoIfindex, 0)
		xgAssertDeltas(t, before, xgCounters(t, x), map[Reason]uint64{ReasonBlocked: 1}, len(pkt))
		if v != xgDrop {
			t.Errorf("%v: verdict %d, want drop", src, v)
		}
	}
}

// TestXDPBlockFilter: Block counts a source into the filter once (renewal
// does not count again), Unblock clears it, two sources sharing a counter
// keep each other's bits, and a source whose counter is zero is never
// looked up in the LRU.
func TestXDPBlockFilter(t *testing.T) {
	x := xgLoad(t, Options{})
	pkt := packet.Frame{Src: xgSrc4, Dst: xgDst4, Payload: xgJSON}.Bytes()
	send := func(want uint32, deltas map[Reason]uint64) {
		t.Helper()
		before := xgCounters(t, x)
		v, _, _ := xgRun(t, x.Program(), pkt, xgLoIfindex, 0)
		xgAssertDeltas(t, before, xgCounters(t, x), deltas, len(pkt))
		if v != want {
			t.Errorf("verdict %d, want %d", v, want)
		}
	}

	xgNoErr(t, x.Block(xgSrc4, Forever))
	xgNoErr(t, x.Block(xgSrc4, time.Hour)) // renewal
	if n := x.bfilterCount(t, xgSrc4); n != 1 {
		t.Errorf("counter %d after Block twice, want 1", n)
	}
	send(xgDrop, map[Reason]uint64{ReasonBlocked: 1})
	xgNoErr(t, x.Unblock(xgSrc4))
	if n := x.bfilterCount(t, xgSrc4); n != 0 {
		t.Errorf("counter %d after Unblock, want 0", n)
	}
	send(xgPass, map[Reason]uint64{ReasonPassSocket: 1})
	xgNoErr(t, x.Unblock(xgSrc4)) // absent: no error, no underflow
	if n := x.bfilterCount(t, xgSrc4); n != 0 {
		t.Errorf("counter %d after a second Unblock, want 0", n)
	}

	// Find another source with xgSrc4's counter (2^19 counters: a few
	// hundred thousand tries).
	k4, _ := srcKey(xgSrc4)
	w4, i4 := x.bfilterSlot(k4)
	var twin netip.Addr
	for i := 0; i < 1<<24 && !twin.IsValid(); i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		k, _ := srcKey(a)
		if w, j := x.bfilterSlot(k); w == w4 && j == i4 {
			twin = a
		}
	}
	if !twin.IsValid() {
		t.Fatal("no address shares the counter of", xgSrc4)
	}
	xgNoErr(t, x.Block(xgSrc4, Forever))
	xgNoErr(t, x.Block(twin, Forever))
	if n := x.bfilterCount(t, xgSrc4); n != 2 {
		t.Errorf("shared counter %d, want 2", n)
	}
	xgNoErr(t, x.Unblock(twin))
	send(xgDrop, map[Reason]uint64{ReasonBlocked: 1})
	xgNoErr(t, x.Unblock(xgSrc4))
	xgNoErr(t, x.Block(twin, Forever))
	// Now xgSrc4's counter is set by the twin alone: a false positive,
	// decided by the LRU and counted.
	send(xgPass, map[Reason]uint64{ReasonPassSocket: 1, EventBlockFilterFP: 1})

	// SyncBlockFilter rebuilds exactly: twin's count, nothing else.
	xgNoErr(t, x.blockAt(xgOther4, Ktime()-1))
	xgNoErr(t, x.SyncBlockFilter())
	if n := x.bfilterCount(t, twin); n != 1 {
		t.Errorf("twin's counter %d after sync, want 1", n)
	}
	if n := x.bfilterCount(t, xgOther4); n != 1 {
		t.Errorf("%v's counter %d after sync, want 1 (expired entries are entries)", xgOther4, n)
	}
}

// TestXDPBucketCollision: two sources in one bucket slot (different tags)
// each take the slot over as a fresh bucket; a takeover of a bucket that
// was not full is counted (the evicted source restarts full: limited less,
// never more).
func TestXDPBucketCollision(t *testing.T) {
	x := xgLoad(t, Options{Config: Config{BucketRate: 1, BucketBurst: 1}, BucketSize: 1024})
	raw, err := x.ReadConfig()
	xgNoErr(t, err)
	coarse := raw.TickNs != 0
	a := xgSrc4
	ia, oa := x.bucketSlot(a, coarse)
	var b netip.Addr
	for i := 0; i < 1<<17 && !b.IsValid(); i++ {
		c := xgV4(i)
		if ic, oc := x.bucketSlot(c, coarse); c != a && ic == ia && oc != oa {
			b = c
		}
	}
	if !b.IsValid() {
		t.Fatal("no colliding source found")
	}
	t.Logf("%v and %v share slot %d of %d (coarse clock %v)", a, b, ia, x.bucketMask+1, coarse)

	send := func(src netip.Addr, want uint32, deltas map[Reason]uint64) {
		t.Helper()
		pkt := packet.Frame{Src: src, Dst: xgDst4, Payload: xgJSON}.Bytes()
		before := xgCounters(t, x)
		v, _, _ := xgRun(t, x.Program(), pkt, xgLoIfindex, 0)
		xgAssertDeltas(t, before, xgCounters(t, x), deltas, len(pkt))
		if v != want {
			t.Errorf("%v: verdict %d, want %d", src, v, want)
		}
	}
	send(a, xgPass, map[Reason]uint64{ReasonPassSocket: 1})
	send(a, xgDrop, map[Reason]uint64{ReasonRateLimited: 1})
	send(b, xgPass, map[Reason]uint64{ReasonPassSocket: 1, EventBucketTakeover: 1})
	send(b, xgDrop, map[Reason]uint64{ReasonRateLimited: 1})
	send(a, xgPass, map[Reason]uint64{ReasonPassSocket: 1, EventBucketTakeover: 1})
	send(a, xgDrop, map[Reason]uint64{ReasonRateLimited: 1})
	if m := x.bucketMask; m != 1023 {
		t.Errorf("bucket mask %d for BucketSize 1024", m)
	}

	// A clock change starts every source afresh, without takeovers.
	xgNoErr(t, x.SetConfig(Config{BucketRate: 1, BucketBurst: 1, FineClock: coarse}))
	send(a, xgPass, map[Reason]uint64{ReasonPassSocket: 1})
	send(a, xgDrop, map[Reason]uint64{ReasonRateLimited: 1})
}

// TestXDPBucketSizeRounded: BucketSize rounds up to a power of two.
func TestXDPBucketSizeRounded(t *testing.T) {
	x := xgLoad(t, Options{BucketSize: 1000})
	if n := x.Maps().XgateBuckets.MaxEntries(); n != 1024 || x.bucketMask != 1023 {
		t.Errorf("BucketSize 1000: %d slots, mask %d", n, x.bucketMask)
	}
}

// TestCountersSplit: every terminal packet lands in exactly one fate, and
// events are not packets.
func TestCountersSplit(t *testing.T) {
	var c Counters
	for r := Reason(0); r < ReasonMax; r++ {
		c[r].Packets = uint64(r) + 1
	}
	s := c.Split()
	var seen, drops, notOurs, surv uint64
	for r := Reason(0); r < ReasonTerminal; r++ {
		seen += uint64(r) + 1
		switch r {
		case ReasonRedirect, ReasonPassSocket, ReasonPassNoXSK:
			surv += uint64(r) + 1
		case ReasonNotIP, ReasonVLANTooDeep, ReasonNotUDP, ReasonPortNotListened, ReasonIPv4Fragment, ReasonIPv6ExtHdr, ReasonNoConfig,
			ReasonGroupNotJoined, ReasonNotOurAddress:
			notOurs += uint64(r) + 1
		default:
			drops += uint64(r) + 1
		}
	}
	if s != (Split{Seen: seen, Dropped: drops, NotForUs: notOurs, Survivors: surv}) || s.Seen != s.Dropped+s.NotForUs+s.Survivors {
		t.Fatalf("split %+v, want seen %d drops %d not-ours %d survivors %d", s, seen, drops, notOurs, surv)
	}
}
