package bpf

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/xgate/xgate/testenv"
)

// TestXDPAttach attaches the program through a bpf_link to host B's veth
// and sends real datagrams from host A: they are counted as survivors, and
// dropped once A is blocked. Closing the link detaches the program.
func TestXDPAttach(t *testing.T) {
	xgNeedRoot(t)
	pair := testenv.New(t, testenv.Options{})
	a, b := pair.A, pair.B
	x := xgLoad(t, Options{ListenPorts: []uint16{9000}})

	var l link.Link
	xgNoErr(t, b.Do(func() error {
		var err error
		l, err = x.Attach(b.Ifindex, 0)
		return err
	}))
	t.Cleanup(func() { l.Close() })

	dst := netip.AddrPortFrom(b.Addr, 9000)
	const n = 20
	waitFor := func(r Reason, want uint64) Counters {
		t.Helper()
		var c Counters
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if c = xgCounters(t, x); c[r].Packets >= want {
				break
			}
		}
		return c
	}

	sent, err := a.SendUDP(dst, xgJSON, n)
	xgNoErr(t, err)
	c := waitFor(ReasonPassSocket, n)
	if c[ReasonPassSocket].Packets != uint64(sent) {
		t.Errorf("pass_socket %d, sent %d", c[ReasonPassSocket].Packets, sent)
	}

	xgNoErr(t, x.Block(a.Addr, time.Minute))
	sent, err = a.SendUDP(dst, xgJSON, n)
	xgNoErr(t, err)
	c = waitFor(ReasonBlocked, n)
	if c[ReasonBlocked].Packets != uint64(sent) {
		t.Errorf("blocked %d, sent %d", c[ReasonBlocked].Packets, sent)
	}
	if c.Total().Packets < uint64(2*n) {
		t.Errorf("total %d < %d sent", c.Total().Packets, 2*n)
	}
	t.Logf("counters: %v", nonZero(c))

	xgNoErr(t, l.Close())
	before := xgCounters(t, x)
	_, err = a.SendUDP(dst, xgJSON, n)
	xgNoErr(t, err)
	time.Sleep(50 * time.Millisecond)
	if after := xgCounters(t, x); after.Total() != before.Total() {
		t.Errorf("program still runs after the link closed: %v -> %v", before.Total(), after.Total())
	}
}

func nonZero(c Counters) map[string]uint64 {
	m := map[string]uint64{}
	for name, v := range c.ByName() {
		if v.Packets != 0 {
			m[name] = v.Packets
		}
	}
	return m
}
