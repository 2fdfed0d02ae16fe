package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xgate/xgate/examples/consumer/window"
)

const (
	testTopic  = "events"
	testWindow = 60 * time.Second
	testLate   = 2 * time.Second
	// Amounts have 2 decimals; the consumer keeps 6: units = cents × 10^4.
	centUnits = 10_000
)

func newCluster(t *testing.T, partitions int32) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// event is one record of the test producer, in the gateway's record
// contract: key = user_id, value = the event JSON, headers verdict, rule,
// gateway, rx_ns.
type event struct {
	partition int32
	user, id  string
	typ       string
	cents     int64
	verdict   string
	rule      string
	rx        int64 // ns
	// What the consumer must do with it.
	want   window.Outcome
	offset int64 // set when produced
}

func (e *event) record() *kgo.Record {
	v := fmt.Sprintf(`{"event_id":%q,"user_id":%q,"amount":%d.%02d,"currency":"EUR","event_type":%q,"ts":%d,"ip":"198.18.0.1"}`,
		e.id, e.user, e.cents/100, e.cents%100, e.typ, e.rx/1e6)
	return &kgo.Record{
		Topic: testTopic, Partition: e.partition, Key: []byte(e.user), Value: []byte(v),
		Headers: []kgo.RecordHeader{
			{Key: "verdict", Value: []byte(e.verdict)},
			{Key: "rule", Value: []byte(e.rule)},
			{Key: "gateway", Value: []byte("gw-test")},
			{Key: "rx_ns", Value: []byte(strconv.FormatInt(e.rx, 10))},
		},
	}
}

// genEvents makes n events per partition for 3 users per partition, times
// increasing with jitter within the lateness, and among them other event
// types, dropped events, late events, re-sent events (same event_id), and
// gateway alerts by the compared rule and by another. The last event of
// each partition is a tick far enough ahead to make every window final.
func genEvents(rng *rand.Rand, partitions int32, n int) [][]*event {
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	out := make([][]*event, partitions)
	seq := 0
	for p := range partitions {
		now, maxRx := base, int64(0)
		var recent []*event
		for range n {
			now += rng.Int64N(int64(800 * time.Millisecond))
			seq++
			e := &event{partition: p, user: fmt.Sprintf("u%d", int(p)+3*rng.IntN(3)), id: fmt.Sprintf("e%d", seq),
				typ: "payment", cents: rng.Int64N(200_000), verdict: "pass",
				rx: now - rng.Int64N(int64(testLate)), want: window.Accepted}
			switch x := rng.IntN(100); {
			case x < 10:
				e.typ, e.want = "login", window.Skipped
			case x < 15:
				e.verdict, e.rule, e.want = "drop", "per-user-rate", window.Skipped
			case x < 18 && maxRx > 0:
				e.rx, e.want = maxRx-int64(testLate)-int64(time.Second), window.Late
			case x < 21 && len(recent) > 0: // a client re-sends an event: new rx, same ID
				prev := recent[rng.IntN(len(recent))]
				e.user, e.id, e.cents, e.want = prev.user, prev.id, prev.cents, window.Duplicate
			case x < 40:
				e.verdict, e.rule = "alert", "velocity"
			case x < 45:
				e.verdict, e.rule = "alert", "big-payment"
			}
			if e.want == window.Accepted {
				recent = append(recent, e)
				if len(recent) > 10 {
					recent = recent[1:]
				}
			}
			maxRx = max(maxRx, e.rx)
			out[p] = append(out[p], e)
		}
		out[p] = append(out[p], &event{partition: p, user: "tick", id: "tick", typ: "tick", verdict: "pass",
			rx: maxRx + int64(testWindow+testLate+time.Second), want: window.Skipped})
	}
	return out
}

func produce(t *testing.T, addrs []string, evs []*event) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, len(evs))
	for i, e := range evs {
		recs[i] = e.record()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := cl.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		evs[i].offset = r.Record.Offset
	}
}

type poff struct {
	p   int32
	off int64
}

// expect computes, by brute force, the exact window of every accepted
// event: the sum of its user's accepted amounts with rx in (rx − W, rx].
func expect(evs [][]*event, threshold int64) map[poff]window.Result {
	want := map[poff]window.Result{}
	for _, part := range evs {
		for _, e := range part {
			if e.want != window.Accepted {
				continue
			}
			var s int64
			n := 0
			for _, o := range part {
				if o.want == window.Accepted && o.user == e.user && o.rx > e.rx-int64(testWindow) && o.rx <= e.rx {
					s += o.cents * centUnits
					n++
				}
			}
			tag := markNone
			if e.verdict == "alert" {
				tag = markMasked
				if e.rule == "velocity" {
					tag = markAlert
				}
			}
			want[poff{e.partition, e.offset}] = window.Result{Offset: e.offset, Time: e.rx, Key: e.user,
				Sum: window.I128(s), Count: n, Alert: s > threshold, Tag: tag}
		}
	}
	return want
}

func testConfig(addrs []string, group string) Config {
	return Config{
		Brokers: addrs, Topic: testTopic, Group: group,
		Window: testWindow, Lateness: testLate, Dedup: testWindow,
		Threshold: "50000", Decimals: 6, Time: "rx",
		KeyField: "user_id", AmountField: "amount", IDField: "event_id", TypeField: "event_type",
		Types: []string{"payment"}, Rule: "velocity",
		CommitEvery: 100 * time.Millisecond, ExitIdle: 1500 * time.Millisecond, Block: 16,
	}
}

// results collects the consumers' results and fails on a second result
// for the same record.
type results struct {
	t   *testing.T
	mu  sync.Mutex
	got map[poff]window.Result
}

func (r *results) on(p int32, res window.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := poff{p, res.Offset}
	if prev, dup := r.got[k]; dup {
		r.t.Errorf("partition %d offset %d: two results %+v and %+v", p, res.Offset, prev, res)
	}
	r.got[k] = res
}

func runConsumer(t *testing.T, cfg Config) Report {
	t.Helper()
	c, err := NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("the consumer did not go idle within 30s")
	}
	return rep
}

func checkResults(t *testing.T, got, want map[poff]window.Result) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d results, want %d", len(got), len(want))
	}
	bad := 0
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			if bad++; bad <= 5 {
				t.Errorf("partition %d offset %d: got %+v (present %v)\n want %+v", k.p, k.off, g, ok, w)
			}
		}
	}
}

func countWant(evs [][]*event) map[window.Outcome]uint64 {
	n := map[window.Outcome]uint64{}
	for _, part := range evs {
		for _, e := range part {
			n[e.want]++
		}
	}
	return n
}

// TestConsumerExactWindows: records in the gateway's contract, several
// users over three partitions, out of order within the lateness, late
// ones, re-sends and other types: every accepted event's window is the
// brute-force one, alerts and the comparison with the gateway's verdicts
// are counted right, and each alert is printed.
func TestConsumerExactWindows(t *testing.T) {
	addrs := newCluster(t, 3)
	evs := genEvents(rand.New(rand.NewPCG(1, 2)), 3, 300)
	for _, part := range evs {
		produce(t, addrs, part)
	}
	res := &results{t: t, got: map[poff]window.Result{}}
	var alerts bytes.Buffer
	cfg := testConfig(addrs, "g1")
	cfg.OnResult = res.on
	cfg.Alerts = &alerts
	rep := runConsumer(t, cfg)

	want := expect(evs, 50000*1_000_000)
	checkResults(t, res.got, want)

	n := countWant(evs)
	if rep.Outcomes["accepted"] != n[window.Accepted] || rep.Outcomes["late"] != n[window.Late] ||
		rep.Outcomes["duplicate"] != n[window.Duplicate] || n[window.Late] == 0 || n[window.Duplicate] == 0 {
		t.Errorf("outcomes %v, want %v", rep.Outcomes, n)
	}
	if rep.Skipped["type"]+rep.Skipped["verdict"] != n[window.Skipped] {
		t.Errorf("skipped %v, want %d", rep.Skipped, n[window.Skipped])
	}
	var cmp Compare
	var alertsWant uint64
	for _, w := range want {
		if w.Alert {
			alertsWant++
		}
		switch {
		case w.Tag == markMasked:
			cmp.Masked++
			if w.Alert {
				cmp.MaskedExactAlert++
			}
		case w.Tag == markAlert && w.Alert:
			cmp.BothAlert++
		case w.Tag == markAlert:
			cmp.GatewayOnly++
		case w.Alert:
			cmp.ExactOnly++
		default:
			cmp.Neither++
		}
	}
	for _, part := range evs {
		for _, e := range part {
			if e.verdict == "alert" && e.rule == "velocity" && (e.want == window.Late || e.want == window.Duplicate) {
				cmp.GatewayAlertIgnored++
			}
		}
	}
	if rep.Compare != cmp || rep.Alerts != alertsWant || alertsWant == 0 || alertsWant == uint64(len(want)) {
		t.Errorf("compare %+v alerts %d, want %+v alerts %d (of %d)", rep.Compare, rep.Alerts, cmp, alertsWant, len(want))
	}
	if rep.Pending != 0 || rep.Commits == 0 || rep.CommitErrors != 0 {
		t.Errorf("report %+v", rep)
	}

	// One JSON line per exact alert, with the exact sum.
	lines := 0
	sc := bufio.NewScanner(&alerts)
	for sc.Scan() {
		lines++
		var a alertLine
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("alert line %q: %v", sc.Text(), err)
		}
		var p int32
		var off int64
		if _, err := fmt.Sscanf(a.ID, testTopic+"/%d/%d", &p, &off); err != nil {
			t.Fatalf("alert id %q: %v", a.ID, err)
		}
		w := want[poff{p, off}]
		if !w.Alert || a.Key != w.Key || string(a.Sum) != window.FormatDecimal(w.Sum, 6) || a.Count != w.Count {
			t.Errorf("alert %+v, want %+v", a, w)
		}
	}
	if uint64(lines) != alertsWant {
		t.Errorf("%d alert lines, want %d", lines, alertsWant)
	}
	t.Logf("\n%s", rep)
}

// TestConsumerHandover: one member reads the first part of the topic and
// leaves; another (same group) reads on from the committed checkpoints.
// Together they emit every exact window once, and the second did not read
// the topic from the start.
func TestConsumerHandover(t *testing.T) {
	addrs := newCluster(t, 2)
	evs := genEvents(rand.New(rand.NewPCG(3, 4)), 2, 600)
	res := &results{t: t, got: map[poff]window.Result{}}
	cfg := testConfig(addrs, "g2")
	cfg.OnResult = res.on

	for _, part := range evs {
		produce(t, addrs, part[:450])
	}
	first := runConsumer(t, cfg)
	for _, part := range evs {
		produce(t, addrs, part[450:])
	}
	second := runConsumer(t, cfg)

	checkResults(t, res.got, expect(evs, 50000*1_000_000))
	total := uint64(0)
	for _, part := range evs {
		total += uint64(len(part))
	}
	// The second member replays about window + dedup horizon (120 s: some
	// 300 records per partition, 400 ms apart) plus a block, not all 450,
	// and reads the 151 new ones.
	if first.Records != 900 || second.Records > total-2*100 || second.Records < 2*151 {
		t.Errorf("records read: first %d, second %d (of %d)", first.Records, second.Records, total)
	}
	if second.Pending != 0 || second.ForeignCommits != 0 {
		t.Errorf("second: %+v", second)
	}
}

// TestCommandLine runs the command against a topic with two users: one
// crosses the threshold within the window, the other only across two
// windows.
func TestCommandLine(t *testing.T) {
	addrs := newCluster(t, 1)
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	var evs []*event
	add := func(user string, at time.Duration, cents int64) {
		evs = append(evs, &event{user: user, id: fmt.Sprintf("e%d", len(evs)), typ: "payment",
			cents: cents, verdict: "pass", rx: base + int64(at)})
	}
	add("a", 0, 3_000_000)              // 30000.00
	add("b", 0, 3_000_000)              //
	add("a", 30*time.Second, 2_000_001) // 50000.01 within 60 s: alert
	add("b", 61*time.Second, 2_000_001) // the first one is out: no alert
	add("x", 200*time.Second, 0)        // moves the watermark past both
	produce(t, addrs, evs)

	var stdout, stderr bytes.Buffer
	err := run([]string{"--brokers", strings.Join(addrs, ","), "--topic", testTopic, "--group", "cli",
		"--exit-idle", "1500ms", "--report-every", "0", "--threshold", "50000", "--decimals", "2"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var a alertLine
	if err := json.Unmarshal(stdout.Bytes(), &a); err != nil || a.Key != "a" || a.Sum != "50000.01" || a.Count != 2 ||
		a.ID != testTopic+"/0/2" || a.Gateway != "none" {
		t.Fatalf("stdout %q: %+v %v", stdout.String(), a, err)
	}
	if !strings.Contains(stderr.String(), "alerts 1 on 1 keys") {
		t.Fatalf("report:\n%s", stderr.String())
	}

	// Bad flags and a topic that does not exist are clear errors.
	if err := run([]string{"--time", "now"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "time") {
		t.Errorf("--time now: %v", err)
	}
	if err := run([]string{"--threshold", "1.5", "--decimals", "0"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "threshold") {
		t.Errorf("--threshold 1.5 --decimals 0: %v", err)
	}
	err = run([]string{"--brokers", strings.Join(addrs, ","), "--topic", "nope", "--exit-idle", "1s"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "UNKNOWN_TOPIC_OR_PARTITION") {
		t.Errorf("missing topic: %v", err)
	}
}
