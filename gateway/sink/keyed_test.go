package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/sinktest"
)

// ---------------------------------------------------------------------------
// helpers shared by the Kafka and NATS tests (the keyed sinks)

const testKeys = 53 // distinct user_ids in keyedEvent

// keyedEvent is event i of worker w: its id names both, its key is one of
// testKeys users.
func keyedEvent(w, i int) []byte {
	return fmt.Appendf(nil, `{"event_id":"w%d-%07d","user_id":"u-%d","amount":%d.5,"event_type":"payment"}`, w, i, i%testKeys, i%1000)
}

// keyedDecision is the decision for event i: every 10th an alert.
func keyedDecision(raw []byte, i int) engine.Decision {
	if i%10 == 0 {
		return engine.Decision{Raw: raw, Action: engine.ActionAlert, Rule: "big-payment", Value: 1}
	}
	return engine.Decision{Raw: raw, Action: engine.ActionPass}
}

// eventID splits an event id "w<worker>-<seq>".
func eventID(t *testing.T, value []byte) (w, seq int) {
	t.Helper()
	id := gjson.GetBytes(value, "event_id").Str
	ws, ss, ok := strings.Cut(strings.TrimPrefix(id, "w"), "-")
	w, err1 := strconv.Atoi(ws)
	seq, err2 := strconv.Atoi(ss)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("value %q: no event id w<n>-<seq>", value)
	}
	return w, seq
}

// feeder runs workers goroutines that Add keyed events to their
// Writer, a Flush every 64 (a receive batch), pausing between batches
// when pace > 0, until n events each or stop is closed. It returns the
// events added per worker (every one goes to the sink).
func feeder(s *Sinks, workers, n int, pace time.Duration, stop <-chan struct{}) func() []int {
	return feedFrom(s, workers, 0, n, pace, stop)
}

// feedFrom is feeder with the events of worker w made as those of worker
// wbase+w (so that two runs' events differ).
func feedFrom(s *Sinks, workers, wbase, n int, pace time.Duration, stop <-chan struct{}) func() []int {
	added := make([]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sw := s.Writer(w)
			n := n
			for i := 0; i < n; i++ {
				d := keyedDecision(keyedEvent(wbase+w, i), i)
				sw.AddAt(&d, 0)
				added[w]++
				if i%64 == 63 {
					sw.Flush()
					if pace > 0 {
						time.Sleep(pace)
					}
					select {
					case <-stop:
						n = i + 1
					default:
					}
				}
			}
			sw.FlushAll()
		}()
	}
	return func() []int { wg.Wait(); return added }
}

func sum(xs []int) (n uint64) {
	for _, x := range xs {
		n += uint64(x)
	}
	return n
}

// checkIdentity: every record added is acknowledged, dropped, too big or
// failed, and none is in flight (after Close).
func checkIdentity(t *testing.T, added uint64, st Stats) {
	t.Helper()
	if got := st.Records + st.Dropped + st.TooBig + st.Failed; got != added || st.InFlight != 0 {
		t.Fatalf("%d added, but records %d + dropped %d + too big %d + failed %d = %d, in flight %d (last error %q)",
			added, st.Records, st.Dropped, st.TooBig, st.Failed, got, st.InFlight, st.LastError)
	}
}

// keyedAllDelivered runs sp, named name, with OnFull block (nothing
// dropped: all must arrive) and 2 workers adding 5000 events each, closes
// it, and checks that every event was acknowledged. It returns the events
// added and the run's time span.
func keyedAllDelivered(t *testing.T, sp Spec, name string) (added uint64, from, to time.Time) {
	t.Helper()
	sp.OnFull, sp.BlockTimeout = "block", 10*time.Second
	s := newTestSinks(t, []Spec{sp}, 2)
	if st := s.Stats()[0]; st.Name != name {
		t.Fatalf("name %q, want %q", st.Name, name)
	}
	from = time.Now()
	added = sum(feeder(s, 2, 5000, 0, nil)())
	closeSinks(t, s)
	to = time.Now()
	st := s.Stats()[0]
	checkIdentity(t, added, st)
	if st.Records != added {
		t.Fatalf("%d added, stats %+v", added, st)
	}
	return added, from, to
}

// outageRun is what keyedOutage saw: the events added, the sink's stats
// before the outage, during it and at the end, and the run's time span.
type outageRun struct {
	added               uint64
	before, during, end Stats
	from, to            time.Time
}

// keyedOutage runs sp (its buffer two slabs per worker, so that the outage
// overflows it; delivery_timeout 20 s) with 2 workers feeding it; after a
// second it calls down, 1.5 s later up, then stops the feed and closes the
// sinks. It checks the identity, that records were acknowledged before the
// outage and that the full buffer dropped records during it.
func keyedOutage(t *testing.T, sp Spec, down func(), up func(s *Sinks, during Stats)) outageRun {
	t.Helper()
	sp.Buffer = 128 << 10
	sp.DeliveryTimeout = 20 * time.Second
	s := newTestSinks(t, []Spec{sp}, 2)
	stop := make(chan struct{})
	var r outageRun
	r.from = time.Now()
	wait := feeder(s, 2, 1<<30, time.Millisecond, stop)

	time.Sleep(time.Second)
	r.before = s.Stats()[0]
	down()
	time.Sleep(1500 * time.Millisecond)
	r.during = s.Stats()[0]
	up(s, r.during)
	close(stop)
	r.added = sum(wait())
	closeSinks(t, s)
	r.to = time.Now()
	r.end = s.Stats()[0]
	t.Logf("added %d; before the outage %+v; during it %+v; at the end %+v", r.added, r.before, r.during, r.end)
	checkIdentity(t, r.added, r.end)
	if r.before.Records == 0 || r.during.Dropped <= r.before.Dropped {
		t.Fatalf("want records before the outage, drops while the broker was down")
	}
	return r
}

// benchKeyedSink runs the benchmark loop of a keyed sink: sp (its buffer,
// OnFull block) from one worker, a Flush every 64 records, every record
// acknowledged by Close; it reports records/s.
func benchKeyedSink(b *testing.B, sp Spec) {
	b.Helper()
	s, err := New([]Spec{sp}, 1)
	if err != nil {
		b.Fatal(err)
	}
	w := s.Writer(0)
	ds := make([]engine.Decision, 1024)
	for i := range ds {
		ds[i] = keyedDecision(keyedEvent(0, i), i)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(ds[1].Raw)))
	start := time.Now()
	i := 0
	for b.Loop() {
		w.AddAt(&ds[i%len(ds)], 0)
		if i++; i%64 == 0 {
			w.Flush()
		}
	}
	w.FlushAll()
	if err := s.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	st := s.Stats()[0]
	if st.Records != uint64(i) {
		b.Fatalf("%d added, stats %+v", i, st)
	}
	b.ReportMetric(float64(st.Records)/time.Since(start).Seconds(), "records/s")
	benchSinkStats = st
}

// TestKeyedSinkCloseWhileDown: Close with a deadline while the broker is
// down and delivery_timeout is long returns at the deadline; the writer
// then gives up on the client, and every record ends counted.
func TestKeyedSinkCloseWhileDown(t *testing.T) {
	for _, typ := range []string{"kafka", "nats"} {
		t.Run(typ, func(t *testing.T) {
			var sp Spec
			var down func()
			if typ == "kafka" {
				c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, testTopic))
				if err != nil {
					t.Fatal(err)
				}
				sp, down = kafkaSpec(c.ListenAddrs()), c.Close
			} else {
				srv := sinktest.StartNATS(t)
				sp, down = natsSpec(srv.URL()), srv.Kill
				sp.NATS.AckTimeout = time.Second
			}
			sp.DeliveryTimeout = time.Minute
			s, err := New([]Spec{sp}, 1)
			if err != nil {
				t.Fatal(err)
			}
			down()
			added := sum(feeder(s, 1, 2000, 0, nil)())
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			if err := s.Close(ctx); err == nil || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Close: %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("Close took %v past its deadline", d)
			}
			select {
			case <-s.sinks[0].done:
			case <-time.After(15 * time.Second):
				t.Fatal("the writer did not end after Close gave up")
			}
			st := s.Stats()[0]
			checkIdentity(t, added, st)
			if st.Failed == 0 {
				t.Fatalf("nothing failed with the broker down: %+v", st)
			}
		})
	}
}
