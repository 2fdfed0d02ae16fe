package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/testenv"
)

// reloadConfig is the configuration of the reload test: event_type "x"
// passes (no rule matches it), and with dropX a rule drops it. No XDP rate
// limit: the stream is one source at ~20k/s and must reach the engine
// whole.
func reloadConfig(t *testing.T, ifname, mode, passedPath string, dropX bool) *config.Config {
	t.Helper()
	yml := fmt.Sprintf(`
interface: %s
mode: %s
listen: {ports: [%d]}
rules:
  - name: refunds
    when: event_type == "refund"
    action: drop
xdp:
  payload_check: true
socket: {rcvbuf: 8MiB, batch: 64}
afxdp: {frame_size: 2048, rx_ring: 4096, fill_ring: 4096, frames: 8192}
sinks:
  - {type: file, path: %q, what: passed, fsync: never}
`, ifname, mode, itPort, passedPath)
	if dropX {
		yml = strings.Replace(yml, "rules:\n", "rules:\n  - name: drop-x\n    when: event_type == \"x\"\n    action: drop\n", 1)
	}
	cfg, err := config.Parse("reload.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pin.Path = "" // no pinning: leave /sys/fs/bpf as found
	return cfg
}

func TestGatewayReloadUnderTraffic(t *testing.T) {
	for _, mode := range []string{"afxdp", "socket"} {
		t.Run(mode, func(t *testing.T) { runReloadUnderTraffic(t, mode) })
	}
}

func runReloadUnderTraffic(t *testing.T, mode string) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	dir := t.TempDir()
	passedPath := filepath.Join(dir, "passed.ndjson")
	cfg1 := reloadConfig(t, pair.B.Link, mode, passedPath, false)
	cfg2 := reloadConfig(t, pair.B.Link, mode, passedPath, true)
	// A bad configuration that would also drop "x" if any of it took:
	// cfg2's rules plus one that does not compile.
	bad := *cfg2
	bad.Rules = append(slices.Clone(cfg2.Rules), config.Rule{Name: "broken", When: `event_type == "y" &&`, Action: "drop"})

	g, stop := startGateway(t, pair.B, cfg1)
	if path, _ := g.Path(); path.String() != mode {
		t.Fatalf("path %s, want %s", path, mode)
	}

	const total = 4000
	const rate = 20000 // events/s
	fd, err := pair.A.DialUDP(netip.AddrPortFrom(pair.B.Addr, itPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })

	var sent atomic.Int64 // events written so far: seq 0..sent-1
	sendErr := make(chan error, 1)
	// The sender keeps the last quarter back until the good Reload has
	// returned: traffic flows while it runs, and some is always left for
	// the new rules however slow a loaded machine makes the swap.
	reloaded := make(chan struct{})
	go func() {
		start := time.Now()
		buf := make([]byte, 0, 128)
		for i := 0; i < total; i++ {
			if i == total*3/4 {
				<-reloaded
				start = time.Now().Add(-time.Duration(i) * time.Second / rate) // pace on, no catch-up burst
			}
			buf = fmt.Appendf(buf[:0], `{"seq":%d,"user_id":"u%d","event_type":"x","amount":%d}`, i, i%17, i)
			// Counted before it is written: whatever was written before Reload
			// returned has a seq below the `after` read then.
			sent.Store(int64(i + 1))
			for tries := 0; ; tries++ {
				_, err := unix.Write(fd, buf)
				if err == nil {
					break
				}
				if tries > 1000 || !(err == unix.ENOBUFS || err == unix.EAGAIN || err == unix.ECONNREFUSED) {
					sendErr <- fmt.Errorf("send seq %d: %w", i, err)
					return
				}
				time.Sleep(100 * time.Microsecond)
			}
			if i%50 == 49 { // pace in bursts of 50: ~2.5ms each at 20k/s
				if d := time.Until(start.Add(time.Duration(i+1) * time.Second / rate)); d > 0 {
					time.Sleep(d)
				}
			}
		}
		sendErr <- nil
	}()
	waitSent := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for sent.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("sender stuck at %d of %d", sent.Load(), n)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	// datagrams is what the workers have received and decided.
	datagrams := func() uint64 {
		s, err := g.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return s.Datagrams
	}

	// 1. A bad configuration during traffic: rejected, nothing changes.
	waitSent(total / 4)
	badAt := sent.Load()
	if err := g.Reload(&bad); err == nil {
		t.Error("Reload accepted a configuration with a rule that does not compile")
	} else {
		t.Logf("bad reload at seq %d rejected: %v", badAt, err)
	}
	if g.Config() != cfg1 {
		t.Error("a rejected reload replaced the configuration in force")
	}
	badDone := sent.Load()

	// 2. The good reload, midway. Everything sent before snap has been
	// decided (by the old rules) when Reload is called; everything sent
	// after it returns is decided by the new ones.
	waitSent(total / 2)
	snap := sent.Load()
	deadline := time.Now().Add(5 * time.Second)
	for datagrams() < uint64(snap) {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway received %d of the first %d events within 5s", datagrams(), snap)
		}
		time.Sleep(200 * time.Microsecond)
	}
	err = g.Reload(cfg2)
	after := sent.Load()
	close(reloaded)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	t.Logf("reload: bad at seq %d..%d, good called after seq %d (all decided), returned at seq %d", badAt, badDone, snap, after)

	select {
	case err := <-sendErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sender did not finish within 30s")
	}
	if after >= total {
		t.Fatalf("the stream ended (%d events) before Reload returned: no event was decided by the new rules", after)
	}
	// Wait until the workers have received every event (or give up), then
	// stop: that drains, flushes the engine counts and the sink. (Not
	// Accounted(): a worker's engine counts lag by up to 64 frames until
	// more traffic comes or it stops.)
	deadline = time.Now().Add(5 * time.Second)
	for datagrams() < total && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var perWorker []uint64
	active := 0
	for _, w := range g.workers {
		n := w.datagrams.Load()
		perWorker = append(perWorker, n)
		if n > 0 {
			active++
		}
	}
	t.Logf("sent %d: xdp seen %d drops %d notours %d | datagrams %d per worker %v sockdrops %d ringdrops %d | decode errors %d events %d verdicts %v",
		total, s.XDPSeen, s.XDPDrops, s.NotForUs, s.Datagrams, perWorker, s.SocketDrops, s.RingDrops,
		s.Engine.DecodeErrorTotal(), s.Engine.Events, s.Engine.Verdicts)

	// Nothing lost.
	if s.XDPSeen != total {
		t.Errorf("XDP saw %d packets, %d were sent", s.XDPSeen, total)
	}
	if got := s.Accounted(); got != total {
		t.Errorf("accounting: sent %d != XDP drops %d + not for us %d + socket drops %d + ring drops %d + decode errors %d + events %d = %d",
			total, s.XDPDrops, s.NotForUs, s.SocketDrops, s.RingDrops, s.Engine.DecodeErrorTotal(), s.Engine.Events, got)
	}
	if s.SocketDrops != 0 || s.RingDrops != 0 || s.XDPDrops != 0 || s.NotForUs != 0 {
		t.Errorf("drops: socket %d ring %d xdp %d not-for-us %d; want none", s.SocketDrops, s.RingDrops, s.XDPDrops, s.NotForUs)
	}
	if s.Engine.Events != total || s.Engine.DecodeErrorTotal() != 0 {
		t.Errorf("engine decided %d events (%d decode errors), want %d and 0", s.Engine.Events, s.Engine.DecodeErrorTotal(), total)
	}

	// Which events passed: the passed sink, raw, one event a line.
	data, err := os.ReadFile(passedPath)
	if err != nil {
		t.Fatal(err)
	}
	passed := map[int]bool{}
	for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var ev struct {
			Seq *int `json:"seq"`
		}
		if err := json.Unmarshal(line, &ev); err != nil || ev.Seq == nil {
			t.Fatalf("passed sink: bad line %q: %v", line, err)
		}
		if passed[*ev.Seq] {
			t.Errorf("passed sink: seq %d twice", *ev.Seq)
		}
		passed[*ev.Seq] = true
	}
	np := uint64(len(passed))
	if v := s.Engine.Verdicts; v[engine.ActionPass] != np || v[engine.ActionDrop] != total-np || v[engine.ActionAlert] != 0 || v[engine.ActionBlock] != 0 {
		t.Errorf("verdicts %v; the sink holds %d passed events of %d", v, np, total)
	}
	for _, r := range s.Engine.Rules {
		want := uint64(0)
		if r.Name == "drop-x" {
			want = total - np
		}
		if r.Fired != want {
			t.Errorf("rule %s fired %d, want %d", r.Name, r.Fired, want)
		}
	}

	// The switch is clean. S is the number of events decided by the old
	// rules: everything sent before snap was decided before Reload, and
	// everything sent after Reload returned by the new rules.
	maxPassed, minDropped := -1, total
	for seq := 0; seq < total; seq++ {
		if passed[seq] {
			maxPassed = max(maxPassed, seq)
		} else {
			minDropped = min(minDropped, seq)
		}
	}
	t.Logf("%d passed; highest passed seq %d, lowest dropped seq %d; %d of %d workers received", np, maxPassed, minDropped, active, len(g.workers))
	if active <= 1 {
		// One worker decided everything, in order: passed is exactly 0..S-1.
		S := int(np)
		if maxPassed != S-1 || minDropped != S {
			t.Errorf("passed seqs are not exactly 0..%d: highest passed %d, lowest dropped %d", S-1, maxPassed, minDropped)
		}
		if S < int(snap) || S > int(after) {
			t.Errorf("verdicts switched at seq %d, want within [%d, %d] (decided before Reload .. sent after it returned)", S, snap, after)
		}
	} else {
		// Several workers: no order across them, so allow an overlap of a
		// batch per worker around the switch.
		overlap := len(g.workers) * max(1, cfg1.Socket.Batch)
		if maxPassed-minDropped > 2*overlap {
			t.Errorf("switch not clean: seq %d passed but %d dropped (overlap allowed %d)", maxPassed, minDropped, overlap)
		}
		if minDropped < int(snap)-overlap || maxPassed > int(after)+overlap {
			t.Errorf("lowest dropped %d / highest passed %d outside [%d, %d] ± %d", minDropped, maxPassed, snap, after, overlap)
		}
	}
	if int(np) <= int(badDone) {
		t.Errorf("only %d events passed; the bad reload at seq %d..%d must not have changed verdicts", np, badAt, badDone)
	}
}
