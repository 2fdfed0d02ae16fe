package gateway

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/sink"
)

// TestGatewayMulticastMetaRoutes runs the gateway on a test host with
// listen.groups, a sink with every meta field and a sink only a rule's to:
// feeds, and sends events from the peer to the host's address and to two
// groups (the peer sends multicast out of its veth). Each event must be
// decided exactly once — no copy per socket of the SO_REUSEPORT group —
// carry its sender, queue and receive time, and the routed sink must get
// exactly the events the routing rule decided.
func TestGatewayMulticastMetaRoutes(t *testing.T) {
	for _, mode := range []string{"socket", "afxdp"} {
		t.Run(mode, func(t *testing.T) { runMulticastMetaRoutes(t, mode) })
	}
}

func runMulticastMetaRoutes(t *testing.T, mode string) {
	groups := []netip.Addr{netip.MustParseAddr("239.1.1.1"), netip.MustParseAddr("239.1.1.2")}
	dir := t.TempDir()
	metaPath, fraudPath := filepath.Join(dir, "meta.ndjson"), filepath.Join(dir, "fraud.ndjson")
	pair, g, stop := runIT(t, 2, mode, func(cfg *config.Config) {
		cfg.Listen.Groups = groups
		cfg.Rules[0].To = []string{"fraud"} // big-payment
		cfg.Sinks = append(cfg.Sinks,
			sink.Spec{Name: "meta", Type: "file", Path: metaPath, What: "all", Format: "raw", Fsync: "never",
				GatewayID: "gw-test",
				Meta:      sink.MetaSpec{Src: true, RxTime: true, Queue: true, GatewayID: true, Rule: true, Verdict: true}},
			sink.Spec{Name: "fraud", Type: "file", Path: fraudPath, What: "routed", Fsync: "never"})
	})
	if p, _ := g.Path(); string(p) != mode {
		t.Skipf("path %s, not %s, on this host", p, mode)
	}

	// The sender: one socket, multicast out of the peer's veth.
	fd, err := pair.A.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF,
		&unix.IPMreqn{Address: pair.A.Addr.As4(), Ifindex: int32(pair.A.Ifindex)}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: pair.A.Addr.As4()}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	srcPort := sa.(*unix.SockaddrInet4).Port
	dsts := []netip.Addr{pair.B.Addr, groups[0], groups[1]}
	const perDst = 60
	sent := map[string]bool{} // event ids
	big := map[string]bool{}  // those big-payment decides
	for i := range perDst * len(dsts) {
		dst := dsts[i%len(dsts)]
		id := fmt.Sprintf("m%d", i)
		ev := fmt.Sprintf(`{"event_id":%q,"user_id":"mu%d","amount":5,"event_type":"click"}`, id, i)
		if i%4 == 1 {
			// A fresh user's single payment over 10000: big-payment
			// alerts, and nothing after it (velocity needs 30000).
			ev = fmt.Sprintf(`{"event_id":%q,"user_id":"mu%d","amount":20000,"event_type":"payment"}`, id, i)
			big[id] = true
		}
		if err := unix.Sendto(fd, []byte(ev), 0, &unix.SockaddrInet4{Port: itPort, Addr: dst.As4()}); err != nil {
			t.Fatalf("send to %v: %v", dst, err)
		}
		sent[id] = true
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond) // under the XDP bucket's burst
		}
	}
	// To a group the gateway did not join: not for us on every path (XDP
	// passes it to the stack as group_not_joined, which drops it; before,
	// afxdp decided it and the socket path left it unaccounted).
	const unjoined = 20
	for i := range unjoined {
		ev := fmt.Sprintf(`{"event_id":"x%d","user_id":"other","amount":1}`, i)
		if err := unix.Sendto(fd, []byte(ev), 0, &unix.SockaddrInet4{Port: itPort, Addr: [4]byte{239, 1, 1, 9}}); err != nil {
			t.Fatalf("send to 239.1.1.9: %v", err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); g.Engine().Stats().Events < uint64(len(sent)); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events decided after 10s", g.Engine().Stats().Events, len(sent))
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a duplicate would come in now
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := g.Engine().Stats().Events; n != uint64(len(sent)) {
		t.Fatalf("%d events decided for %d sent: multicast delivered more than once, or an unjoined group's", n, len(sent))
	}
	st, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.XDP[bpf.ReasonGroupNotJoined].Packets != unjoined || st.Unaccounted() != 0 {
		t.Errorf("unjoined group: %d group_not_joined (want %d), unaccounted %d", st.XDP[bpf.ReasonGroupNotJoined].Packets, unjoined, st.Unaccounted())
	}

	wantSrc := netip.AddrPortFrom(pair.A.Addr, uint16(srcPort)).String()
	seen := map[string]int{}
	for _, line := range fileLines(t, metaPath) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		id, _ := m["event_id"].(string)
		seen[id]++
		if m["_src"] != wantSrc || m["_gateway_id"] != "gw-test" {
			t.Errorf("%s: want _src %s, _gateway_id gw-test", line, wantSrc)
		}
		if q, ok := m["_queue"].(float64); !ok || q < 0 || q >= 2 {
			t.Errorf("%s: _queue not a worker's", line)
		}
		if ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["_rx_time"])); err != nil || time.Since(ts) > time.Minute || time.Since(ts) < 0 {
			t.Errorf("%s: _rx_time not a receive time of this test (%v)", line, err)
		}
		wantRule, wantVerdict := "", "pass"
		if big[id] {
			wantRule, wantVerdict = "big-payment", "alert"
		}
		if m["_rule"] != wantRule || m["_verdict"] != wantVerdict {
			t.Errorf("%s: want _rule %q, _verdict %q", line, wantRule, wantVerdict)
		}
	}
	for id := range sent {
		if seen[id] != 1 {
			t.Errorf("event %s written %d times to the meta sink", id, seen[id])
		}
	}
	routed := map[string]bool{}
	for _, line := range fileLines(t, fraudPath) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		ev, _ := m["event"].(map[string]any)
		id, _ := ev["event_id"].(string)
		if routed[id] || !big[id] {
			t.Errorf("routed sink: %s (twice, or not a big payment)", line)
		}
		routed[id] = true
	}
	if len(routed) != len(big) {
		t.Errorf("routed sink has %d events, want the %d big payments", len(routed), len(big))
	}
}

func fileLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// TestWorkerSinkMetaAllocs: a worker deciding datagrams into sinks with
// every meta field and a rule's routes allocates no more than one writing
// into a plain sink: the origin (source, port, queue, receive time) rides
// along without an allocation per event.
func TestWorkerSinkMetaAllocs(t *testing.T) {
	payloads := itEvents(200)
	src := netip.MustParseAddrPort("198.18.0.1:40000")
	dir := t.TempDir()
	allocs := func(specs []sink.Spec, routes map[string][]string) float64 {
		s, err := sink.New(specs, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close(t.Context())
		tbl, err := s.Routes(routes)
		if err != nil {
			t.Fatal(err)
		}
		s.SetRoutes(tbl)
		w := bareWorker(t, nil)
		w.sw = s.Writer(0)
		batch := func() {
			for _, p := range payloads {
				w.decide(p, src, 0)
			}
			w.sw.Flush()
		}
		for range 20 {
			batch()
		}
		return testing.AllocsPerRun(50, batch)
	}
	base := allocs([]sink.Spec{{Name: "plain", Type: "file", Path: filepath.Join(dir, "plain"), What: "all", Fsync: "never"}}, nil)
	all := sink.MetaSpec{Src: true, RxTime: true, Queue: true, GatewayID: true, Rule: true, Verdict: true}
	meta := allocs([]sink.Spec{
		{Name: "meta", Type: "file", Path: filepath.Join(dir, "meta"), What: "all", Format: "raw", Fsync: "never", Meta: all},
		{Name: "ann", Type: "file", Path: filepath.Join(dir, "ann"), What: "dropped", Fsync: "never", Meta: all},
		{Name: "routed", Type: "file", Path: filepath.Join(dir, "routed"), What: "routed", Fsync: "never", Meta: all},
	}, map[string][]string{"big-payment": {"routed"}, "refunds": {"routed", "ann"}})
	if meta > base {
		t.Errorf("%v allocs per batch of %d datagrams with meta and routes, %v with a plain sink", meta, len(payloads), base)
	}
	t.Logf("allocs per batch of %d datagrams: %v plain, %v with meta and routes", len(payloads), base, meta)
}
