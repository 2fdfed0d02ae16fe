package main

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/testenv"
)

// TestStatsOnceJSON runs a gateway on test hosts, sends a known mix, and
// reads it back with `xgate stats --json` and `--once`.
const statsToken = "stats-test-token-0123456789"

func TestStatsOnceJSON(t *testing.T) {
	needRoot(t)
	pair := testenv.New(t, testenv.Options{RxQueues: 2})
	cfg, err := config.Parse("stats.yaml", []byte(`
interface: `+pair.B.Link+`
mode: afxdp
listen: {ports: [9000]}
rules:
  - name: refunds
    when: event_type == "refund"
    action: drop
  - name: big
    when: amount > 1000
    action: alert
http: {listen: "127.0.0.1:0", token: `+statsToken+`}
`))
	if err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, pair.B, cfg)

	dst := netip.AddrPortFrom(pair.B.Addr, 9000)
	send := func(p string, n int) {
		if _, err := pair.A.SendUDP(dst, []byte(p), n); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"user_id":"u1","event_type":"click","amount":1}`, 100)     // pass
	send(`{"user_id":"u2","event_type":"refund","amount":5}`, 30)     // drop (refunds)
	send(`{"user_id":"u3","event_type":"payment","amount":5000}`, 20) // alert (big)
	send(`{"user_id":"u4","event_type":"payment","amount":`, 7)       // decode error
	const total, events = 157, 150
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if s, _ := g.Stats(); s.Accounted() >= total && s.Engine.Events+s.Engine.DecodeErrorTotal() >= total {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Without the token: refused.
	if out, err := run(t, "stats", "--addr", g.HTTPAddr(), "--json", "--token", ""); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("stats without the bearer token: %v\n%s", err, out)
	}
	out, err := run(t, "stats", "--addr", g.HTTPAddr(), "--token", statsToken, "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var s Snapshot
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	a := s.Accounting
	if a.Seen != total || a.Accounted != total || a.Events != events || a.DecodeErrors != 7 {
		t.Errorf("accounting %+v, want seen = accounted = %d, events %d, decode errors 7", a, total, events)
	}
	if v := s.Verdicts; v["pass"] != 100 || v["drop"] != 30 || v["alert"] != 20 {
		t.Errorf("verdicts %v, want pass 100 drop 30 alert 20", v)
	}
	if len(s.Rules) != 2 || s.Rules[0].Rule != "refunds" || s.Rules[0].Fired != 30 || s.Rules[1].Rule != "big" || s.Rules[1].Fired != 20 {
		t.Errorf("rules %+v, want refunds 30 then big 20", s.Rules)
	}
	var dgrams uint64
	for _, q := range s.Queues {
		dgrams += q.Datagrams
		if q.SocketDrops+q.RingDrops != 0 {
			t.Errorf("queue %+v: drops", q)
		}
	}
	if len(s.Queues) != 2 || dgrams != total {
		t.Errorf("queues %+v: want 2 queues with %d datagrams", s.Queues, total)
	}
	if l := s.Latency; l == nil || l.Count != total || !(l.P50 > 0 && l.P50 <= l.P99 && l.P99 <= l.P999) {
		t.Errorf("latency %+v: want %d samples, 0 < p50 <= p99 <= p999", l, total)
	}

	out, err = run(t, "stats", "--addr", g.HTTPAddr(), "--token", statsToken, "--once")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"by datagrams): seen " + strconv.Itoa(total) + " = accounted " + strconv.Itoa(total),
		"rejected  ", "event decode errors 7", "pass", "refunds", "latency receive → verdict: " + strconv.Itoa(total) + " samples", "p999",
		"\nprobes:\n", "sock_latency", "missing: skipped by option", // afxdp: no socket to attach the latency probe to
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--once output lacks %q:\n%s", want, out)
		}
	}
	for _, re := range []string{`(?m)^  decided +` + strconv.Itoa(events) + `$`, `(?m)^  rejected +7$`,
		`(?m)^  pass +100$`, `(?m)^  refunds +drop +30$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("--once output does not match %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("--once output has ANSI escapes:\n%s", out)
	}

	// The live view, bounded, to a non-terminal: two frames, rates, no ANSI.
	out, err = run(t, "stats", "--addr", g.HTTPAddr(), "--token", statsToken, "--duration", "250ms", "--interval", "100ms")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "----") || !strings.Contains(out, "/s") || strings.Contains(out, "\x1b[") {
		t.Errorf("live view output:\n%s", out)
	}

	if _, err := run(t, "stats", "--addr", "127.0.0.1:1", "--once"); err == nil {
		t.Error("stats against nothing succeeded")
	}
}
