package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/testenv"
)

// TestBlockCommand: `xgate block` against a running gateway: a rule's
// block shows with its rule name; add by hand drops the source in XDP;
// remove lets it through again; changes without the token are refused;
// list shows what is blocked and when it ends.
func TestBlockCommand(t *testing.T) {
	needRoot(t)
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	const token = "block-test-token-0123456789"
	cfg, err := gateway.ParseConfig("block.yaml", []byte(`
interface: `+pair.B.Link+`
mode: socket
listen: {ports: [9000]}
rules:
  - name: bots
    when: event_type == "bot"
    action: block 1h
http: {listen: "127.0.0.1:0", token: `+token+`}
`))
	if err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, pair.B, cfg)
	addr := g.HTTPAddr()
	dst := netip.AddrPortFrom(pair.B.Addr, 9000)
	send := func(p string, n int) {
		t.Helper()
		if _, err := pair.A.SendUDP(dst, []byte(p), n); err != nil {
			t.Fatal(err)
		}
	}
	blockedInXDP := func() uint64 {
		s, err := g.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return s.XDP[bpf.ReasonBlocked].Packets
	}
	list := func() []gateway.BlockEntry {
		t.Helper()
		out, err := run(t, "block", "list", "--addr", addr, "--token", token, "--json")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var bl []gateway.BlockEntry
		if err := json.Unmarshal([]byte(out), &bl); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return bl
	}

	// A rule blocks the sender: listed with its rule and an end an hour ahead.
	send(`{"user_id":"b","event_type":"bot"}`, 1)
	var bl []gateway.BlockEntry
	for deadline := time.Now().Add(3 * time.Second); len(bl) == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		bl = list()
	}
	if len(bl) != 1 || bl[0].Addr != pair.A.Addr || bl[0].Rule != "bots" || !bl[0].Live ||
		bl[0].TTL < 3500 || bl[0].TTL > 3600 || bl[0].Since.IsZero() {
		t.Fatalf("after the bot event: %+v", bl)
	}
	out, err := run(t, "block", "list", "--addr", addr, "--token", token)
	if err != nil || !strings.Contains(out, pair.A.Addr.String()) || !strings.Contains(out, "bots") {
		t.Errorf("table: %v\n%s", err, out)
	}

	// Remove without the token: refused; with it: released, traffic passes.
	if out, err := run(t, "block", "remove", pair.A.Addr.String(), "--addr", addr, "--token", ""); err == nil {
		t.Errorf("remove without the token succeeded: %s", out)
	}
	if out, err := run(t, "block", "remove", pair.A.Addr.String(), "--addr", addr, "--token", token); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if bl := list(); len(bl) != 0 {
		t.Fatalf("after remove: %+v", bl)
	}
	before := blockedInXDP()
	send(`{"user_id":"u","event_type":"click"}`, 5)
	time.Sleep(100 * time.Millisecond)
	if n := blockedInXDP() - before; n != 0 {
		t.Errorf("%d datagrams blocked after remove", n)
	}

	// Add by hand for a minute: dropped in XDP, listed as manual.
	if out, err := run(t, "block", "add", pair.A.Addr.String(), "--ttl", "1m", "--addr", addr, "--token", token); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	before = blockedInXDP()
	send(`{"user_id":"u","event_type":"click"}`, 5)
	for deadline := time.Now().Add(2 * time.Second); blockedInXDP()-before < 5 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := blockedInXDP() - before; n != 5 {
		t.Errorf("%d of 5 datagrams blocked after add", n)
	}
	if bl := list(); len(bl) != 1 || bl[0].Rule != bpf.ManualRule || bl[0].TTL > 60 {
		t.Errorf("after add: %+v", bl)
	}
	if out, err := run(t, "block", "add", "not-an-address", "--addr", addr, "--token", token); err == nil {
		t.Errorf("add of a bad address succeeded: %s", out)
	}
}
