package gateway

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
)

// TestNeverBlockAndDrop: a block verdict for a source in xdp.never_block
// is refused and counted (the source keeps being decided); a source in
// xdp.drop is dropped in XDP as cidr_drop; a reload that empties the drop
// list lets it through again.
func TestNeverBlockAndDrop(t *testing.T) {
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	cfg := itConfig(t, pair.B.Link, "socket", filepath.Join(t.TempDir(), "passed.ndjson"))
	cfg.XDP.NeverBlock = []netip.Prefix{netip.PrefixFrom(pair.A.Addr, 32)}
	g, _ := startGateway(t, pair.B, cfg)
	dst := netip.AddrPortFrom(pair.B.Addr, itPort)
	if _, err := pair.A.SendUDP(dst, []byte(`{"user_id":"b","event_type":"bot"}`), 3); err != nil {
		t.Fatal(err)
	}
	// Every block request of the three handled (refused, or deduped after
	// the first) before the reload: one still queued would meet the
	// reloaded config, which no longer protects the source.
	eventually(t, func() bool {
		s, _ := g.Stats()
		f := s.Feedback
		handled := f.Applied + f.Deduped + f.RingFull + f.OverLimit + f.Failed + f.Unenforced + f.Refused
		return s.Decided >= 3 && f.Refused > 0 && handled == f.Requested
	})
	if bl, _ := g.Blocklist(); len(bl) != 0 {
		t.Errorf("a never-block source is in the blocklist: %+v", bl)
	}
	if err := g.BlockSource(pair.A.Addr, time.Minute); err == nil {
		t.Error("blocking a never-block source by hand succeeded")
	}

	// Drop the sender's network instead.
	next := *g.Config()
	next.XDP.NeverBlock = nil
	next.XDP.Drop = []netip.Prefix{netip.PrefixFrom(pair.A.Addr, 24).Masked()}
	if err := g.Reload(&next); err != nil {
		t.Fatal(err)
	}
	before, _ := g.Stats()
	if _, err := pair.A.SendUDP(dst, []byte(`{"user_id":"u","event_type":"click"}`), 5); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		s, _ := g.Stats()
		return s.XDP[bpf.ReasonCIDRDrop].Packets-before.XDP[bpf.ReasonCIDRDrop].Packets == 5
	})
	// Emptied: decided again.
	next2 := next
	next2.XDP.Drop = nil
	if err := g.Reload(&next2); err != nil {
		t.Fatal(err)
	}
	before, _ = g.Stats()
	if _, err := pair.A.SendUDP(dst, []byte(`{"user_id":"u","event_type":"click"}`), 5); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _ := g.Stats()
		if s.Decided-before.Decided == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after emptying xdp.drop: %d datagrams decided of 5; XDP %v", s.Decided-before.Decided, s.XDP.ByName())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
