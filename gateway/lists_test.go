package gateway

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/testenv"
)

func listStat(g *Gateway, name string) ListStats {
	for _, l := range g.Lists() {
		if l.Name == name {
			return l
		}
	}
	return ListStats{}
}

// TestListReloadUnderTraffic: list files change while a sender streams
// events; the verdicts, the added fields and the XDP program's trie follow
// each file as it is replaced (no SIGHUP), a bad file keeps the old
// contents and is counted, the hot path allocates nothing with the new
// contents in force, and every datagram is accounted for.
func TestListReloadUnderTraffic(t *testing.T) {
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	dir := t.TempDir()
	file := func(n string) string { return filepath.Join(dir, n) }
	testenv.WriteAtomic(t, file("vip.txt"), "u-1\n")
	testenv.WriteAtomic(t, file("risk.csv"), "u-2,high\n")
	testenv.WriteAtomic(t, file("partners.txt"), "192.0.2.0/24\n")
	testenv.WriteAtomic(t, file("bad.txt"), "# nothing yet\n")
	passed := file("passed.ndjson")
	cfg, err := config.Parse(file("xgate.yaml"), []byte(fmt.Sprintf(`
interface: %s
mode: socket
listen: {ports: [%d]}
lists:
  vip:      {type: set,  file: vip.txt}
  risk:     {type: map,  file: risk.csv}
  partners: {type: cidr, file: partners.txt}
  bad:      {type: cidr, file: bad.txt}
rules:
  - name: vip
    when: user_id in set("vip")
    action: alert
  - name: partner
    when: src_ip in cidrs("partners")
    action: pass
enrich:
  - {field: risk_tier, from: 'lookup("risk", user_id)'}
xdp:
  never_block_lists: [partners]
  drop_lists: [bad]
sinks:
  - {type: file, path: %q, what: passed, fsync: never}
`, pair.B.Link, itPort, passed)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pin.Path = ""
	g, stop := startGateway(t, pair.B, cfg)

	// The sender: u-2 events, paced, until told to stop.
	dst := netip.AddrPortFrom(pair.B.Addr, itPort)
	var sent atomic.Uint64
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-quit:
				return
			default:
			}
			n, err := pair.A.SendUDP(dst, []byte(`{"user_id":"u-2","event_type":"click"}`), 20)
			sent.Add(uint64(n))
			if err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	stopSending := sync.OnceFunc(func() { close(quit); wg.Wait() })
	defer stopSending()

	alerts := func() uint64 { s, _ := g.Stats(); return s.Engine.Verdicts[engine.ActionAlert] }
	eventually(t, func() bool { s, _ := g.Stats(); return s.Engine.Events > 100 })
	if a := alerts(); a != 0 {
		t.Fatalf("%d alerts before u-2 is a vip", a)
	}

	// The hot path with the lists in force: no allocation, before and
	// after the swap, and the verdict follows the file.
	w := g.Engine().NewWorker()
	ev := []byte(`{"user_id":"u-2","event_type":"click"}`)
	if n := testing.AllocsPerRun(500, func() { w.Process(ev, pair.A.Addr) }); n != 0 {
		t.Errorf("%v allocations per event before the reload", n)
	}
	if d := w.Process(ev, pair.A.Addr); d[0].Action != engine.ActionPass || string(d[0].Extra) != `,"risk_tier":"high"` {
		t.Fatalf("before: %v %s", d[0].Action, d[0].Extra)
	}
	testenv.WriteAtomic(t, file("vip.txt"), "u-1\nu-2\n")
	eventually(t, func() bool { return alerts() > 0 && listStat(g, "vip").Entries == 2 })
	if n := testing.AllocsPerRun(500, func() { w.Process(ev, pair.A.Addr) }); n != 0 {
		t.Errorf("%v allocations per event after the reload", n)
	}
	if d := w.Process(ev, pair.A.Addr); d[0].Action != engine.ActionAlert {
		t.Fatalf("after: %v", d[0].Action)
	}
	if st := listStat(g, "vip"); st.Reloads != 2 || st.ReloadsFailed != 0 {
		t.Errorf("vip: %+v", st)
	}

	// A bad file keeps the old contents, counted.
	if err := os.WriteFile(file("vip.txt"), []byte("u-3\n\xff\n"), 0o644); err != nil { // in place: IN_CLOSE_WRITE
		t.Fatal(err)
	}
	eventually(t, func() bool { return listStat(g, "vip").ReloadsFailed == 1 })
	if st := listStat(g, "vip"); st.Entries != 2 {
		t.Errorf("vip after a bad file: %+v", st)
	}
	a := alerts()
	eventually(t, func() bool { return alerts() > a+50 }) // u-2 still alerts

	// A cidr list in xdp.drop_lists: the sender is dropped in XDP and
	// counted under the list's name.
	names := cidrLists(g.Config(), nil)
	badID := -1
	for i, l := range names {
		if l.Name == "bad" {
			badID = i
		}
	}
	testenv.WriteAtomic(t, file("bad.txt"), pair.A.Addr.String()+"\n")
	eventually(t, func() bool {
		hits, ok, _ := g.readCIDRHits()
		s, _ := g.Stats()
		return ok && hits[badID].Packets > 0 && s.XDP[bpf.ReasonCIDRDrop].Packets > 0
	})
	// /metrics names the list's hits by the list (the collector reads
	// the names without the lists' contents).
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(g.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := map[string]*dto.MetricFamily{}
	for _, f := range mfs {
		fams[f.GetName()] = f
	}
	if v := metricValue(t, fams, "xgate_xdp_cidr_packets_total", "list=bad"); v <= 0 {
		t.Errorf("xgate_xdp_cidr_packets_total{list=bad} = %v, want > 0", v)
	}
	// The same network as never_block: the trie refuses it, the rules
	// keep the old partners too.
	testenv.WriteAtomic(t, file("partners.txt"), pair.A.Addr.String()+"/32\n")
	eventually(t, func() bool { return listStat(g, "partners").ReloadsFailed == 1 })
	if d := w.Process(ev, pair.A.Addr); d[0].Rule == "partner" {
		t.Error("a partners file the trie refused reached the rules")
	}
	testenv.WriteAtomic(t, file("bad.txt"), "\n")
	testenv.WriteAtomic(t, file("partners.txt"), pair.A.Addr.String()+"/32\n")
	eventually(t, func() bool { return listStat(g, "partners").Reloads == 2 })
	if _, action, ok, err := g.xdp.LookupCIDR(pair.A.Addr); err != nil || !ok || action != bpf.CIDRNeverBlock {
		t.Errorf("the sender in the trie: ok %v action %v err %v", ok, action, err)
	}

	stopSending()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.XDPSeen < sent.Load() || s.Unaccounted() != 0 {
		t.Errorf("sent %d, seen %d, unaccounted %d", sent.Load(), s.XDPSeen, s.Unaccounted())
	}
	out, err := os.ReadFile(passed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte(`{"user_id":"u-2","event_type":"click","risk_tier":"high"}`+"\n")) {
		t.Errorf("no enriched record in the sink: %.200q", out)
	}
}
