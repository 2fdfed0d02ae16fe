//go:build linux

package gateway

// End-to-end throughput per receive path with ONE RX queue on a veth test
// host, with the drop accounting of each run (issue 4's closing figures).
// The load comes from tools/loadgen (XDP live frames out of the peer's
// veth), not from sockets: a socket sender pays veth's skb copy and tops
// out at ≈ 0.3–0.4 M/s per core.
//
// Not run in CI: set XGATE_THROUGHPUT=1 (root). Knobs:
//
//	XGATE_THROUGHPUT_N      events per run (default 3000000)
//	XGATE_THROUGHPUT_MODES  comma list of afxdp,socket,plain
//	XGATE_THROUGHPUT_NAPI   comma list of inline,thread-cpu1,thread-cpu0,thread-free
//	XGATE_THROUGHPUT_BISECT 1: also bisect the highest paced rate with no drop
//	XGATE_THROUGHPUT_RXRING AF_XDP rx and fill ring size (default: the config default, 4096)
//
// CPU placement on this 2-core machine: the sender thread is pinned to
// CPU 1; the gateway's workers follow its topology (veth has no IRQs: queue
// i → online CPU i mod n, so the one AF_XDP worker is on CPU 0; socket and
// plain modes open one socket and worker per CPU, CPU 0 and CPU 1). The
// peer's receive work (XDP program, AF_XDP copy, IP/UDP stack) runs
//   - inline: in softirq on the sending CPU (no threaded NAPI),
//   - thread-cpuN: in the napi/<dev> kernel threads, pinned to CPU N,
//   - thread-free: in those threads, placed by the scheduler.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/metrics"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/gen"
	"github.com/xgate/xgate/tools/loadgen"
)

const (
	tpPort      = 9000
	tpSenderCPU = 1
)

// tpConfig: a few filters, one per-user rate limit far above the offered
// load, one 60s/5s sum window; no XDP rate limit, no sinks, no pinning.
func tpConfig(t testing.TB, ifname, mode string) *config.Config {
	t.Helper()
	head := fmt.Sprintf("interface: %s\nmode: %s\n", ifname, mode)
	if mode == config.ModePlain.String() {
		head = "mode: auto\n" // no interface: plain UDP sockets, no BPF
	}
	yml := head + fmt.Sprintf(`listen: {ports: [%d]}
rules:
  - name: big-payment
    when: event_type == "payment" && amount > 10000
    action: alert
  - name: refunds
    when: event_type == "refund"
    action: drop
  - name: eur-login
    when: event_type == "login" && currency == "CHF"
    action: alert
  - name: per-user-rate
    rate_limit: {key: user_id, rate: 10000000/s, burst: 10000000, max_keys: 131072}
    action: drop
  - name: velocity
    window: {key: user_id, size: 60s, slide: 5s, agg: sum(amount), max_keys: 131072}
    filter: event_type == "payment"
    when: value > 50000
    action: alert
socket: {rcvbuf: 16MiB, batch: 64}
`, tpPort)
	if r, err := strconv.Atoi(os.Getenv("XGATE_THROUGHPUT_RXRING")); err == nil && r > 0 {
		yml += fmt.Sprintf("afxdp: {rx_ring: %d, fill_ring: %d, frames: %d}\n", r, r, 2*r)
	}
	cfg, err := config.Parse("throughput.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pin.Path = ""
	return cfg
}

// tpEnv is one test host pair with a running gateway on B.
type tpEnv struct {
	t      testing.TB
	mode   string
	napi   string
	pair   *testenv.Pair
	g      *Gateway
	stop   func() error
	rcv    *loadgen.Receiver // plain mode: pass-through XDP on B
	napiTs []int             // napi/<dev> kernel threads of the pair
}

func newTPEnv(t testing.TB, mode, napi string) *tpEnv {
	e := &tpEnv{t: t, mode: mode, napi: napi}
	e.pair = testenv.New(t, testenv.Options{RxQueues: 1, ThreadedNAPI: napi != "inline"})
	cfg := tpConfig(t, e.pair.B.Link, mode)
	e.g, e.stop = startGateway(t, e.pair.B, cfg, slog.LevelWarn)
	var err error
	if path, _ := e.g.Path(); path.String() != mode {
		t.Fatalf("path %s, want %s", path, mode)
	}
	if mode == config.ModePlain.String() {
		if e.rcv, err = loadgen.AttachPass(e.pair.B); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.rcv.Close() })
	}
	if napi != "inline" {
		e.napiTs = napiThreads(e.pair)
		cpu := -1
		switch napi {
		case "thread-cpu0":
			cpu = 0
		case "thread-cpu1":
			cpu = 1
		}
		if cpu >= 0 {
			for _, pid := range e.napiTs {
				var set unix.CPUSet
				set.Set(cpu)
				if err := unix.SchedSetaffinity(pid, &set); err != nil {
					t.Fatalf("pin napi thread %d: %v", pid, err)
				}
			}
		}
		if len(e.napiTs) == 0 {
			t.Fatalf("no napi/ threads found for %s", e.pair.B.Link)
		}
	}
	return e
}

// napiThreads finds the threaded-NAPI kernel threads of the pair's veth
// ends: comm is napi/<dev>-<id> cut to 15 bytes, which may cut the a/b
// that tells the ends apart, so both ends' threads are taken (the
// sender's end has no traffic to receive).
func napiThreads(p *testenv.Pair) []int {
	common := p.A.Link[:len(p.A.Link)-1]
	want := "napi/" + common
	if len(want) > 15 {
		want = want[:15]
	}
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), want) {
			out = append(out, pid)
		}
	}
	return out
}

// tpResult is one run: what was sent and where every datagram ended.
type tpResult struct {
	Mode, NAPI   string
	Rate         float64 // target; 0 = max
	Send         loadgen.Result
	Decided      uint64 // events decided by the engine
	DecodeErrors uint64
	XDPSeen      uint64
	XDPDrops     uint64
	XDPByReason  map[string]uint64
	NotForUs     uint64
	SocketDrops  uint64
	RingDrops    uint64
	Undelivered  uint64 // never reached B's receive ring (veth: ring full / refused)
	Accounted    uint64 // Stats.Accounted() over the run
	PassSeen     uint64 // plain: frames B's pass-through program saw
	Elapsed      time.Duration
	Complete     bool // accounting reached the sent count before the timeout
	CPUBusy      []float64
	NAPISeconds  float64
	Load         string // /proc/loadavg (1-minute) after the run: the machine is shared
}

func (r *tpResult) unaccounted() int64 {
	return int64(r.Send.Sent) - int64(r.Undelivered) - int64(r.Accounted)
}

func (r *tpResult) drops() uint64 {
	return r.XDPDrops + r.SocketDrops + r.RingDrops + r.Undelivered + r.DecodeErrors
}

func (r *tpResult) eventsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Decided) / r.Elapsed.Seconds()
}

func (r *tpResult) String() string {
	var reasons []string
	for k, v := range r.XDPByReason {
		reasons = append(reasons, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(reasons)
	busy := make([]string, len(r.CPUBusy))
	for i, b := range r.CPUBusy {
		busy[i] = fmt.Sprintf("cpu%d %.0f%%", i, b*100)
	}
	rate := "max"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%.2fM/s", r.Rate/1e6)
	}
	return fmt.Sprintf("%-6s %-11s rate %-8s | sent %d (%.2f M/s offered) | decided %d decode_err %d | xdp seen %d drops %d [%s] not_ours %d | socket_drops %d ring_drops %d veth_undelivered %d | accounted %d unaccounted %d complete %v | %v → %.3f M events/s | %s napi %.2fs load %s",
		r.Mode, r.NAPI, rate, r.Send.Sent, r.Send.PPS()/1e6, r.Decided, r.DecodeErrors, r.XDPSeen, r.XDPDrops,
		strings.Join(reasons, " "), r.NotForUs, r.SocketDrops, r.RingDrops, r.Undelivered, r.Accounted,
		r.unaccounted(), r.Complete, r.Elapsed.Round(time.Millisecond), r.eventsPerSec()/1e6,
		strings.Join(busy, " "), r.NAPISeconds, r.Load)
}

// cpuTimes reads /proc/stat: per CPU, busy and total jiffies.
func cpuTimes() (busy, total []uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var tot, idle uint64
		for i, s := range f[1:] {
			v, _ := strconv.ParseUint(s, 10, 64)
			if i < 8 { // user nice system idle iowait irq softirq steal
				tot += v
			}
			if i == 3 || i == 4 {
				idle += v
			}
		}
		busy = append(busy, tot-idle)
		total = append(total, tot)
	}
	return busy, total
}

// threadSeconds is utime+stime of the given threads.
func threadSeconds(pids []int) float64 {
	var ticks uint64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 12 {
			u, _ := strconv.ParseUint(f[11], 10, 64)
			st, _ := strconv.ParseUint(f[12], 10, 64)
			ticks += u + st
		}
	}
	return float64(ticks) / 100 // USER_HZ
}

// run sends n events at rate (0 = max) from A and waits until the gateway
// has accounted for them (or stops making progress).
func (e *tpEnv) run(n uint64, rate float64) *tpResult {
	t := e.t
	opts := loadgen.Options{
		From: e.pair.A, To: e.pair.B, DstPort: tpPort,
		Frames: 1024, Sources: 256, Events: gen.Config{Seed: 42, BigShare: 0.01},
		Rate: rate, CPU: tpSenderCPU, Pin: true,
	}
	if rate == 0 {
		// One test run: no setup gap (≈ 25 ms each) inside the
		// measurement.
		opts.Chunk = uint32(min(n, 1<<31))
	}
	lg, err := loadgen.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()

	s0, err := e.g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var pass0 uint64
	if e.rcv != nil {
		pass0, _ = e.rcv.Seen()
	}
	busy0, tot0 := cpuTimes()
	napi0 := threadSeconds(e.napiTs)
	start := time.Now()
	res, err := lg.Send(context.Background(), n)
	if err != nil {
		t.Fatalf("loadgen: %v (%v)", err, res)
	}
	r := &tpResult{Mode: e.mode, NAPI: e.napi, Rate: rate, Send: res, Undelivered: res.Undelivered()}
	// Wait until everything is accounted for; no progress for 2s ends it.
	var s1 metrics.Stats
	last, lastChange := uint64(0), time.Now()
	for {
		if s1, err = e.g.Stats(); err != nil {
			t.Fatal(err)
		}
		acc := s1.Accounted() - s0.Accounted()
		if acc+r.Undelivered >= res.Sent {
			r.Complete = true
			break
		}
		if acc != last {
			last, lastChange = acc, time.Now()
		} else if time.Since(lastChange) > 2*time.Second {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.Elapsed = time.Since(start)
	if !r.Complete {
		r.Elapsed -= 2 * time.Second
	}
	busy1, tot1 := cpuTimes()
	for i := range busy1 {
		if i < len(busy0) && tot1[i] > tot0[i] {
			r.CPUBusy = append(r.CPUBusy, float64(busy1[i]-busy0[i])/float64(tot1[i]-tot0[i]))
		}
	}
	r.NAPISeconds = threadSeconds(e.napiTs) - napi0
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.Load = strings.Fields(string(b))[0]
	}
	r.fill(&s0, &s1)
	if e.rcv != nil {
		p1, _ := e.rcv.Seen()
		r.PassSeen = p1 - pass0
	}
	return r
}

func (r *tpResult) fill(s0, s1 *metrics.Stats) {
	r.Decided = s1.Engine.Events - s0.Engine.Events
	r.DecodeErrors = s1.Engine.DecodeErrorTotal() - s0.Engine.DecodeErrorTotal()
	r.XDPSeen = s1.XDPSeen - s0.XDPSeen
	r.XDPDrops = s1.XDPDrops - s0.XDPDrops
	r.NotForUs = s1.NotForUs - s0.NotForUs
	r.SocketDrops = s1.SocketDrops - s0.SocketDrops
	r.RingDrops = s1.RingDrops - s0.RingDrops
	r.Accounted = s1.Accounted() - s0.Accounted()
	r.XDPByReason = map[string]uint64{}
	for rs := bpf.Reason(0); rs < bpf.ReasonTerminal; rs++ {
		if d := s1.XDP[rs].Packets - s0.XDP[rs].Packets; d > 0 {
			r.XDPByReason[rs.String()] = d
		}
	}
}

func tpList(env, def string) []string {
	v := os.Getenv(env)
	if v == "" {
		v = def
	}
	return strings.Split(v, ",")
}

func tpSkip(t testing.TB) {
	if os.Getenv("XGATE_THROUGHPUT") != "1" {
		t.Skip("throughput measurement: set XGATE_THROUGHPUT=1 (root)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// TestGatewayThroughput measures events/s end to end per path and NAPI
// layout at max offered rate, and checks the accounting identity: sent =
// veth undelivered + Stats.Accounted() (plain mode counts only socket
// drops, so kernel drops before the socket would show as unaccounted).
func TestGatewayThroughput(t *testing.T) {
	tpSkip(t)
	n := uint64(3_000_000)
	if v, err := strconv.ParseUint(os.Getenv("XGATE_THROUGHPUT_N"), 10, 64); err == nil && v > 0 {
		n = v
	}
	var results []*tpResult
	for _, mode := range tpList("XGATE_THROUGHPUT_MODES", "afxdp,socket,plain") {
		for _, napi := range tpList("XGATE_THROUGHPUT_NAPI", "inline,thread-cpu1,thread-cpu0,thread-free") {
			t.Run(mode+"/"+napi, func(t *testing.T) {
				e := newTPEnv(t, mode, napi)
				e.run(200_000, 0) // warm-up: key tables, page pools, caches
				r := e.run(n, 0)
				t.Log(r)
				results = append(results, r)
				if r.unaccounted() != 0 {
					t.Errorf("unaccounted %d: sent %d = undelivered %d + accounted %d does not hold", r.unaccounted(), r.Send.Sent, r.Undelivered, r.Accounted)
				}
				if mode != config.ModePlain.String() && r.XDPSeen != r.Send.Sent-r.Undelivered {
					t.Errorf("XDP saw %d, %d reached B's ring", r.XDPSeen, r.Send.Sent-r.Undelivered)
				}
			})
		}
	}
	t.Log("summary:")
	for _, r := range results {
		t.Log(r)
	}
}

// TestGatewayZeroDropRate bisects, per path, the highest paced offered
// rate at which a 2-second run loses nothing anywhere (XDP, sockets,
// rings, veth), with the NAPI layout of XGATE_THROUGHPUT_NAPI (first
// entry; default inline).
func TestGatewayZeroDropRate(t *testing.T) {
	tpSkip(t)
	if os.Getenv("XGATE_THROUGHPUT_BISECT") != "1" {
		t.Skip("set XGATE_THROUGHPUT_BISECT=1 too")
	}
	napi := tpList("XGATE_THROUGHPUT_NAPI", "inline")[0]
	for _, mode := range tpList("XGATE_THROUGHPUT_MODES", "afxdp,socket,plain") {
		t.Run(mode+"/"+napi, func(t *testing.T) {
			e := newTPEnv(t, mode, napi)
			e.run(200_000, 0)
			maxR := e.run(1_000_000, 0)
			t.Logf("max: %v", maxR)
			lo, hi := 0.0, maxR.Send.PPS()*1.2
			var best *tpResult
			for i := 0; i < 7 && hi-lo > 0.02*hi; i++ {
				mid := (lo + hi) / 2
				r := e.run(uint64(mid*2), mid)
				ok := r.Complete && r.unaccounted() == 0 && r.drops() == 0
				t.Logf("probe %d: ok=%v %v", i, ok, r)
				if ok {
					lo, best = mid, r
				} else {
					hi = mid
				}
			}
			if best != nil {
				t.Logf("zero-drop rate %s/%s: target %.3f M/s, achieved offered %.3f M/s, %.3f M events/s decided",
					mode, napi, best.Rate/1e6, best.Send.PPS()/1e6, best.eventsPerSec()/1e6)
			} else {
				t.Logf("zero-drop rate %s/%s: none found above %.3f M/s", mode, napi, hi/1e6)
			}
		})
	}
}

// BenchmarkGatewayVeth sends b.N events at max rate per path (inline
// NAPI, one RX queue) and reports events/s decided and the drops; use a
// fixed count, e.g. -benchtime=3000000x. Needs XGATE_THROUGHPUT=1.
func BenchmarkGatewayVeth(b *testing.B) {
	tpSkip(b)
	for _, mode := range []string{string(config.ModeAFXDP), string(config.ModeSocket), string(config.ModePlain)} {
		b.Run(mode, func(b *testing.B) {
			e := newTPEnv(b, mode, "inline")
			e.run(200_000, 0)
			b.ResetTimer()
			r := e.run(uint64(max(b.N, 1)), 0)
			b.StopTimer()
			b.ReportMetric(r.eventsPerSec(), "events/s")
			b.ReportMetric(float64(r.Send.Sent), "sent")
			b.ReportMetric(float64(r.Decided), "decided")
			b.ReportMetric(float64(r.drops()), "dropped")
			b.ReportMetric(float64(r.unaccounted()), "unaccounted")
			b.Log(r)
		})
	}
}
