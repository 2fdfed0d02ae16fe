package gateway

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
)

func reasonByName(t *testing.T, name string) bpf.Reason {
	t.Helper()
	for r := bpf.Reason(0); r < bpf.ReasonMax; r++ {
		if r.String() == name {
			return r
		}
	}
	t.Fatalf("no XDP reason %q", name)
	return 0
}

// sendEventsAndOther sends the first n itEvents to our port and other
// datagrams to the next port (not ours), one at a time from A, and returns
// how many datagrams went out.
func sendEventsAndOther(t *testing.T, pair *testenv.Pair, n, other int) uint64 {
	t.Helper()
	dst := netip.AddrPortFrom(pair.B.Addr, itPort)
	var sent uint64
	for _, p := range itEvents(n) {
		if _, err := pair.A.SendUDP(dst, p, 1); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	k, err := pair.A.SendUDP(netip.AddrPortFrom(pair.B.Addr, itPort+1), []byte(`{"user_id":"x"}`), other)
	if err != nil {
		t.Fatal(err)
	}
	return sent + uint64(k)
}

// runIT builds a test host pair with the given RX queues, starts the
// gateway of itConfig(mode) on B — adjust, if not nil, changes the config
// first — and waits until it receives. HTTP listens on a free loopback port.
func runIT(t *testing.T, queues int, mode string, adjust func(*config.Config)) (*testenv.Pair, *Gateway, func() error) {
	t.Helper()
	pair := testenv.New(t, testenv.Options{RxQueues: queues})
	cfg := itConfig(t, pair.B.Link, mode, filepath.Join(t.TempDir(), "passed.ndjson"))
	if adjust != nil {
		adjust(cfg)
	}
	g, stop := startGateway(t, pair.B, cfg)
	waitReady(t, g)
	return pair, g, stop
}
