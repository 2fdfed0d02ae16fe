package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/examples/consumer/window"
	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/gateway/metrics"
)

// TestEndToEnd: a gateway (plain UDP on loopback, no BPF) with the
// velocity window rule and a Kafka sink (what: passed) into an in-process
// Kafka; a known set of events sent to it; the consumer reads the topic.
// Every user's exact window sum equals the sum of what was sent for it,
// and every event the gateway alerted on with the window rule has an exact
// window over the threshold.
func TestEndToEnd(t *testing.T) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()

	port := freeUDPPort(t)
	cfg, err := config.Parse("e2e.yaml", []byte(fmt.Sprintf(`
mode: auto
listen: {ports: [%d], address: 127.0.0.1}
gateway_id: gw-e2e
rules:
  - name: refunds
    when: event_type == "refund"
    action: drop
  - name: velocity
    window: {key: user_id, size: 60s, slide: 5s, agg: sum(amount), max_keys: 1024}
    filter: event_type == "payment"
    when: value > 50000
    action: alert
sinks:
  - {type: kafka, what: passed, brokers: [%q], topic: %s, linger: 5ms}
http: {listen: ""}
probes: {enabled: false}
`, port, kc.ListenAddrs()[0], testTopic)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pin.Path = ""
	g, err := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RecvTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if path, why := g.Path(); path != "plain" {
		t.Logf("receive path %s (%s)", path, why)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = g.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	// 20 users, 60 payments each of 0..1700.00 (so about half of them go
	// over 50000 at some point), plus logins (pass, not in the window) and
	// refunds (dropped: not in the topic). All within a second or two: one
	// window, so each user's last exact window holds all its payments.
	rng := rand.New(rand.NewPCG(5, 6))
	type sentEv struct {
		user  string
		cents int64
		typ   string
	}
	var evs []sentEv
	for range 60 {
		for u := range 20 {
			evs = append(evs, sentEv{fmt.Sprintf("u-%02d", u), rng.Int64N(170_001), "payment"})
		}
		evs = append(evs, sentEv{fmt.Sprintf("u-%02d", rng.IntN(20)), 100, "login"},
			sentEv{fmt.Sprintf("u-%02d", rng.IntN(20)), 999, "refund"})
	}
	rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	total := map[string]int64{}
	count := map[string]int{}
	passed := 0
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port)) // one source port: one socket, one worker
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	for i, e := range evs {
		msg := fmt.Sprintf(`{"event_id":"e-%d","user_id":%q,"amount":%d.%02d,"event_type":%q,"ts":%d,"ip":"198.18.0.2"}`,
			i, e.user, e.cents/100, e.cents%100, e.typ, time.Now().UnixMilli())
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if e.typ == "payment" {
			total[e.user] += e.cents * centUnits
			count[e.user]++
		}
		if e.typ != "refund" {
			passed++
		}
		if i%100 == 99 {
			time.Sleep(2 * time.Millisecond) // keep well inside the socket buffer
		}
	}

	// Everything decided, and every passed event acknowledged by Kafka.
	deadline := time.Now().Add(10 * time.Second)
	var st metrics.Stats
	for {
		if st, err = g.Stats(); err != nil {
			t.Fatal(err)
		}
		var acked uint64
		for _, s := range st.Sinks {
			acked += s.Records
		}
		if st.Engine.Events == uint64(len(evs)) && acked == uint64(passed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway: %d of %d events decided (socket drops %d), %d of %d records acknowledged; sinks %+v",
				st.Engine.Events, len(evs), st.SocketDrops, acked, passed, st.Sinks)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if time.Since(start) > 55*time.Second {
		t.Fatal("sending took longer than the gateway's shortest window: the sums below would not be totals")
	}
	gwAlerts := st.Engine.Verdicts[engine.ActionAlert]

	res := &results{t: t, got: map[poff]window.Result{}}
	ccfg := testConfig(kc.ListenAddrs(), "e2e")
	ccfg.Lateness = 5 * time.Second
	ccfg.ExitIdle, ccfg.Flush, ccfg.Block = time.Second, true, 0
	ccfg.OnResult = res.on
	rep := runConsumer(t, ccfg)

	// Per user: the exact window at its newest payment holds all of them.
	last := map[string]window.Result{}
	for _, r := range res.got {
		if l, ok := last[r.Key]; !ok || r.Time > l.Time {
			last[r.Key] = r
		}
	}
	if len(last) != len(total) {
		t.Fatalf("%d users in the results, %d sent", len(last), len(total))
	}
	for u, want := range total {
		r := last[u]
		if got, _ := r.Sum.Int64(); got != want || r.Count != count[u] {
			t.Errorf("user %s: exact window %s over %d events, sent %s over %d", u,
				window.FormatDecimal(r.Sum, 6), r.Count, window.FormatDecimal(window.I128(want), 6), count[u])
		}
	}
	// Every gateway alert of the window rule is an exact alert: on one
	// host, with every event in one window, the gateway's value is the sum
	// of the user's events decided so far, never more than the exact one.
	c := rep.Compare
	if c.GatewayOnly != 0 || c.BothAlert == 0 || c.Masked != 0 || c.GatewayAlertIgnored != 0 {
		t.Errorf("comparison %+v", c)
	}
	if c.BothAlert != gwAlerts {
		t.Errorf("%d gateway alerts matched, the gateway decided %d alerts", c.BothAlert, gwAlerts)
	}
	for u := range rep.GatewayAlertKeys {
		if rep.AlertKeys[u] == 0 {
			t.Errorf("user %s: gateway alerts, no exact alert", u)
		}
	}
	if rep.Outcomes["accepted"] != uint64(len(evs)-2*60) || rep.Skipped["type"] != 60 || rep.KeyMismatch != 0 {
		t.Errorf("report %+v", rep)
	}
	t.Logf("\n%s", rep)
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
