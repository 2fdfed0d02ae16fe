//go:build linux

package gateway

// End-to-end figures of the Kafka and NATS sinks (issue 7's closing note):
// the gateway on a veth test host at full load (tools/loadgen's XDP
// frames, as in throughput_test.go; afxdp, one RX queue), with one sink of
// the passed events to a broker on the machine's loopback (the sinks' own
// goroutines dial from the process's namespace, not the test host's), all
// on the same 2 cores: kfake in the test process, nats-server a process.
//
// Not run in CI: set XGATE_THROUGHPUT=1 (root). Knobs:
//
//	XGATE_SINK_N       events of the max-rate run (default 3000000)
//	XGATE_SINK_RATE    offered rate of the outage run (default 300000/s)
//	XGATE_SINK_BUFFER  the sink's buffer (default the config's)
//	XGATE_SINK_LINGER  the Kafka sink's linger (default the config's)

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/metrics"
	"github.com/xgate/xgate/gateway/sink"
	"github.com/xgate/xgate/gateway/sink/kafka"
	"github.com/xgate/xgate/gateway/sink/nats"
	"github.com/xgate/xgate/gateway/sink/sinktest"
	"github.com/xgate/xgate/testenv"
)

// testTopic is the topic kafkaBroker seeds.
const testTopic = "events"

// sinkBroker is a broker on loopback that the test can stop and start
// again (same port, same data).
type sinkBroker struct {
	sink        sink.Spec
	start, stop func()
}

func kafkaBroker(t *testing.T) *sinkBroker {
	port := sinktest.FreePort(t)
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(t.TempDir()),
		kfake.SeedTopics(3, testTopic), kfake.BlackholeProduce()}
	var mu sync.Mutex
	var c *kfake.Cluster
	b := &sinkBroker{sink: sink.Spec{Type: "kafka", What: "passed", OnFull: "drop",
		Kafka: kafka.Config{Brokers: []string{fmt.Sprintf("127.0.0.1:%d", port)}, Topic: testTopic}}}
	b.start = func() {
		mu.Lock()
		defer mu.Unlock()
		var err error
		if c, err = kfake.NewCluster(opts...); err != nil {
			t.Fatalf("kfake on port %d: %v", port, err)
		}
	}
	b.stop = func() {
		mu.Lock()
		defer mu.Unlock()
		if c != nil {
			c.Close()
			c = nil
		}
	}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func natsBroker(t *testing.T) *sinkBroker {
	srv := sinktest.StartNATS(t)
	return &sinkBroker{
		sink: sink.Spec{Type: "nats", What: "passed", OnFull: "drop",
			NATS: nats.Config{URLs: []string{srv.URL()}, Subject: "xgate.events.{key}", Stream: "EVENTS", CreateStream: true}},
		start: func() { srv.Start(t) },
		stop:  srv.Kill,
	}
}

// sinkFigures is the sink's side of one run.
type sinkFigures struct {
	passed                           uint64 // events the engine passed (pass + alert): added to the sink
	records, dropped, failed, tooBig uint64
	caughtUp                         time.Duration // from the start until the sink had resolved every record
	recordsPerSec                    float64
	maxInFlight                      uint64
}

func (f sinkFigures) String() string {
	return fmt.Sprintf("sink: passed %d → acknowledged %d, dropped (buffer full) %d, failed %d, too big %d | caught up after %v → %.3f M records/s acknowledged | in flight at most %d",
		f.passed, f.records, f.dropped, f.failed, f.tooBig, f.caughtUp.Round(time.Millisecond), f.recordsPerSec/1e6, f.maxInFlight)
}

func passedEvents(s *metrics.Stats) uint64 {
	return s.Engine.Verdicts[engine.ActionPass] + s.Engine.Verdicts[engine.ActionAlert]
}

// sinkRun runs the load (n events at rate, 0 = max) and, meanwhile, during
// runs; then waits until the sink has resolved everything the run added.
func sinkRun(t *testing.T, e *tpEnv, n uint64, rate float64, during func()) (*tpResult, sinkFigures) {
	s0, err := e.g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var f sinkFigures
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() { // the in-flight gauge, sampled
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if s, err := e.g.Stats(); err == nil {
				f.maxInFlight = max(f.maxInFlight, s.Sinks[0].InFlight)
			}
		}
	}()
	if during != nil {
		go during()
	}
	r := e.run(n, rate)
	var s1 metrics.Stats
	for deadline := time.Now().Add(60 * time.Second); ; {
		if s1, err = e.g.Stats(); err != nil {
			t.Fatal(err)
		}
		sk, sk0 := s1.Sinks[0], s0.Sinks[0]
		if passedEvents(&s1)-passedEvents(&s0) == sk.Records+sk.Dropped+sk.Failed+sk.TooBig-sk0.Records-sk0.Dropped-sk0.Failed-sk0.TooBig && sk.InFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sink did not catch up: %+v", sk)
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.caughtUp = time.Since(start)
	close(stopWatch)
	<-watched
	sk, sk0 := s1.Sinks[0], s0.Sinks[0]
	f.passed = passedEvents(&s1) - passedEvents(&s0)
	f.records, f.dropped = sk.Records-sk0.Records, sk.Dropped-sk0.Dropped
	f.failed, f.tooBig = sk.Failed-sk0.Failed, sk.TooBig-sk0.TooBig
	f.recordsPerSec = float64(f.records) / f.caughtUp.Seconds()
	return r, f
}

// TestSinkGatewayThroughput: events/s of the gateway at max offered rate
// with a Kafka or NATS sink of the passed events, what the sink got
// acknowledged and dropped; then a paced run during which the broker is
// stopped for 5 s, and the sink's drops.
func TestSinkGatewayThroughput(t *testing.T) {
	tpSkip(t)
	n := uint64(3_000_000)
	if v, err := strconv.ParseUint(os.Getenv("XGATE_SINK_N"), 10, 64); err == nil && v > 0 {
		n = v
	}
	rate := 300_000.0
	if v, err := strconv.ParseFloat(os.Getenv("XGATE_SINK_RATE"), 64); err == nil && v > 0 {
		rate = v
	}
	for _, kind := range []string{"kafka", "nats"} {
		t.Run(kind, func(t *testing.T) {
			pair := testenv.New(t, testenv.Options{RxQueues: 1})
			var b *sinkBroker
			if kind == "kafka" {
				b = kafkaBroker(t)
			} else {
				b = natsBroker(t)
			}
			cfg := tpConfig(t, pair.B.Link, string(config.ModeAFXDP))
			cfg.GatewayID = "bench"
			sk := b.sink
			if v, err := config.ParseSize(os.Getenv("XGATE_SINK_BUFFER")); err == nil && v > 0 {
				sk.Buffer = v
			}
			if v, err := time.ParseDuration(os.Getenv("XGATE_SINK_LINGER")); err == nil && kind == "kafka" {
				sk.Kafka.Linger = v
			}
			cfg.Sinks = []sink.Spec{sk}
			sk.Buffer = sk.WithDefaults().Buffer // for the log lines
			g, stop := startGateway(t, pair.B, cfg, slog.LevelWarn)
			e := &tpEnv{t: t, mode: string(config.ModeAFXDP), napi: "inline", pair: pair, g: g, stop: stop}
			sinkRun(t, e, 200_000, 0, nil) // warm-up

			r, f := sinkRun(t, e, n, 0, nil)
			t.Logf("%s, buffer %d, max rate: %v", kind, sk.Buffer, r)
			t.Logf("%s, buffer %d, max rate: %v", kind, sk.Buffer, f)

			// The broker stopped for 5 s in an 8 s run at a paced rate.
			var stopped, restarted metrics.Stats
			r, f = sinkRun(t, e, uint64(rate*8), rate, func() {
				time.Sleep(time.Second)
				stopped, _ = g.Stats()
				b.stop()
				time.Sleep(5 * time.Second)
				b.start()
				restarted, _ = g.Stats()
			})
			t.Logf("%s, buffer %d, %.0f/s, broker stopped 5 s: %v", kind, sk.Buffer, rate, r)
			t.Logf("%s, buffer %d, %.0f/s, broker stopped 5 s: %v; dropped while stopped %d (the broker was down for %d passed events)",
				kind, sk.Buffer, rate, f, restarted.Sinks[0].Dropped-stopped.Sinks[0].Dropped, passedEvents(&restarted)-passedEvents(&stopped))
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			s, _ := g.Stats()
			st := s.Sinks[0]
			// Every passed event is acknowledged, dropped, too big or failed.
			if added := passedEvents(&s); st.Records+st.Dropped+st.TooBig+st.Failed != added || st.InFlight != 0 {
				t.Fatalf("%d passed, sink stats %+v", added, st)
			}
		})
	}
}
