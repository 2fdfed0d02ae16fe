package bpf

import (
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// Frames are built with package packet (the repository's one codec).

var (
	xgSrc4   = netip.MustParseAddr("198.18.0.1")
	xgDst4   = netip.MustParseAddr("198.18.0.2")
	xgOther4 = netip.MustParseAddr("198.18.0.9")
	xgSrc6   = netip.MustParseAddr("2001:2::1")
	xgDst6   = netip.MustParseAddr("2001:2::2")
)

var xgJSON = []byte(`{"event_id":"e-1","user_id":"u-1","amount":1.5}`)

// xdpMD mirrors struct xdp_md, the context of an XDP test run.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// xgNeedRoot skips the test unless it runs as root.
func xgNeedRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (CAP_BPF, CAP_NET_ADMIN): run `go test` as root, as CI does")
	}
}

// xgLoad loads the XDP program for a test, skipping when the kernel lacks a
// feature, and closes it at the end.
func xgLoad(tb testing.TB, opts Options) *XDP {
	tb.Helper()
	xgNeedRoot(tb)
	if opts.ListenPorts == nil {
		opts.ListenPorts = []uint16{9000}
	}
	x, err := LoadXDP(opts)
	if errors.Is(err, ErrNotSupported) {
		tb.Skipf("kernel lacks a feature: %v", err)
	}
	if err != nil {
		tb.Fatalf("LoadXDP: %+v", err)
	}
	tb.Cleanup(func() {
		if err := x.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return x
}

// xgRun runs pkt once through the program with an XDP context on lo's
// queue 0 and returns verdict, output data and output context.
func xgRun(tb testing.TB, prog *ebpf.Program, pkt []byte, ifindex, queue uint32) (uint32, []byte, xdpMD) {
	tb.Helper()
	var out xdpMD
	opts := ebpf.RunOptions{
		Data:       pkt,
		DataOut:    make([]byte, len(pkt)+256),
		Context:    xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: ifindex, RxQueueIndex: queue},
		ContextOut: &out,
	}
	ret, err := prog.Run(&opts)
	if err != nil {
		tb.Fatalf("test run: %v", err)
	}
	return ret, opts.DataOut, out
}

func xgCounters(tb testing.TB, x *XDP) Counters {
	tb.Helper()
	c, err := x.ReadCounters()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// xgAssertDeltas checks the packet delta of every reason and event against
// want (absent = 0), and that bytes moved with the packets.
func xgAssertDeltas(tb testing.TB, before, after Counters, want map[Reason]uint64, pktLen int) {
	tb.Helper()
	for r := Reason(0); r < ReasonMax; r++ {
		got := after[r].Packets - before[r].Packets
		if got != want[r] {
			tb.Errorf("counter %v: %d packets, want %d", r, got, want[r])
		}
		gotBytes := after[r].Bytes - before[r].Bytes
		wantBytes := want[r] * uint64(pktLen)
		if r == EventBucketCASRetry {
			wantBytes = 0
		}
		if pktLen > 0 && gotBytes != wantBytes {
			tb.Errorf("counter %v: %d bytes, want %d", r, gotBytes, wantBytes)
		}
	}
}
