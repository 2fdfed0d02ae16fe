package gateway

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
)

// TestGatewayStamp runs the afxdp path with each way of carrying the
// receive timestamp: every event decided is in the receive → verdict
// histogram and none lacks its stamp. The prefix branch (metadata switched
// off) runs on any kernel; the metadata branch skips where the kernel
// refuses bpf_xdp_adjust_meta.
func TestGatewayStamp(t *testing.T) {
	for _, stamp := range []bpf.Stamp{bpf.StampMeta, bpf.StampPrefix} {
		t.Run(stamp.String(), func(t *testing.T) {
			if stamp == bpf.StampMeta {
				if err := bpf.Probe(bpf.FeatXDPMeta); errors.Is(err, bpf.ErrNotSupported) {
					t.Skipf("%s refused by this kernel: %v", bpf.FeatXDPMeta, err)
				}
			} else {
				defer bpf.ForceOff(bpf.FeatXDPMeta)()
			}
			pair := testenv.New(t, testenv.Options{RxQueues: 1})
			cfg := itConfig(t, pair.B.Link, "afxdp", filepath.Join(t.TempDir(), "passed.ndjson"))
			g, stop := startGateway(t, pair.B, cfg)
			if got, why := g.xdp.Stamp(); got != stamp {
				t.Fatalf("stamp %v (%s), want %v", got, why, stamp)
			}
			const n = 200
			if _, err := pair.A.SendUDP(netip.AddrPortFrom(pair.B.Addr, itPort),
				[]byte(`{"user_id":"u1","event_type":"click","amount":1}`), n); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				s, err := g.Stats()
				if err != nil {
					t.Fatal(err)
				}
				if s.Engine.Events >= n || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			s, _ := g.Stats()
			var inHist, noStamp, bad uint64
			for _, x := range g.xsks {
				for i := range x.latency {
					inHist += x.latency[i].Load()
				}
				noStamp += x.noMeta.Load()
				bad += x.badFrames.Load()
			}
			if s.Engine.Events != n || inHist != n || noStamp != 0 || bad != 0 {
				t.Errorf("events %d, in latency histogram %d, without stamp %d, bad frames %d: want %d, %d, 0, 0",
					s.Engine.Events, inHist, noStamp, bad, n, n)
			}
		})
	}
}
