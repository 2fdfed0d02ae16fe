package sink

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xgate/xgate/gateway/sink/sinktest"
	"github.com/xgate/xgate/gateway/sink/spool"
)

// spoolFeeder is feeder with worker numbers from wbase on (so that two
// runs' events differ) and no count: it feeds until stop is closed.
func spoolFeeder(s *Sinks, workers, wbase int, pace time.Duration, stop <-chan struct{}) func() []int {
	return feedFrom(s, workers, wbase, math.MaxInt, pace, stop)
}

// checkSpoolIdentity: after Close, added + recovered = records + dropped
// + too big + failed + spooled, none in flight.
func checkSpoolIdentity(t *testing.T, added uint64, st Stats) {
	t.Helper()
	if got := st.Records + st.Dropped + st.TooBig + st.Failed + st.Spooled; got != added+st.SpoolRecovered || st.InFlight != 0 {
		t.Fatalf("%d added + %d recovered, but records %d + dropped %d + too big %d + failed %d + spooled %d = %d, in flight %d (last error %q)",
			added, st.SpoolRecovered, st.Records, st.Dropped, st.TooBig, st.Failed, st.Spooled, got, st.InFlight, st.LastError)
	}
}

// spoolOutage is how long TestNATSSpoolOutageRestart and
// TestKafkaSpoolOutageRestart keep the broker down: 12s by default,
// XGATE_SPOOL_OUTAGE (a duration, e.g. 60s) to change it.
func spoolOutage(t *testing.T) time.Duration {
	if s := os.Getenv("XGATE_SPOOL_OUTAGE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("XGATE_SPOOL_OUTAGE: %v", err)
		}
		return d
	}
	return 12 * time.Second
}

// TestNATSSpoolOutageRestart: the server is down for spoolOutage (12s
// here, the 60s with XGATE_SPOOL_OUTAGE=60s) while 2 workers keep
// adding events; half way through the outage the sinks are closed and
// made again on the same spool (a daemon restart), and the feed goes on.
// Once the server is back, the spool is replayed: every event added in
// either run is in the stream exactly once (the message ids the spool
// kept make the stream drop replays of what it had), nothing was dropped
// or failed, and each run's identity holds with the spool's terms.
func TestNATSSpoolOutageRestart(t *testing.T) {
	srv := sinktest.StartNATS(t)
	outage := spoolOutage(t)
	sp := natsSpec(srv.URL())
	sp.Buffer = 128 << 10 // two slabs per worker: the outage overflows it at once
	sp.OnFull, sp.BlockTimeout = "block", 10*time.Second
	sp.DeliveryTimeout = 3 * time.Second // in-flight records fail during the outage: they go back to the spool
	sp.NATS.AckTimeout = time.Second
	sp.Spool = spool.Config{Path: t.TempDir() + "/spool", MaxBytes: 256 << 20}
	const workers = 2
	from := time.Now()

	// Run 1: traffic, then the server dies.
	added1, st1 := spoolRun1(t, sp, workers, outage/2, srv.Kill)

	// Run 2: the restarted daemon finds the spool, the outage goes on.
	s2 := newTestSinks(t, []Spec{sp}, workers)
	if st := s2.Stats()[0]; st.SpoolRecovered != st1.Spooled || st.Spooled != st1.Spooled {
		t.Fatalf("run 2 recovered %d (spooled %d), run 1 left %d", st.SpoolRecovered, st.Spooled, st1.Spooled)
	}
	stop := make(chan struct{})
	wait := spoolFeeder(s2, workers, workers, 10*time.Millisecond, stop)
	time.Sleep(outage / 2)
	if st := s2.Stats()[0]; st.SpoolOldest.IsZero() || time.Since(st.SpoolOldest) < outage/2 || !st.Down {
		t.Fatalf("during the outage: %+v", st)
	}
	srv.Start(t)
	added2, _, to := spoolRun2End(t, s2, st1, stop, wait, 2*outage+30*time.Second, "server")

	msgs := sinktest.StreamMessages(t, srv.URL(), "EVENTS")
	if uint64(len(msgs)) != added1+added2 {
		t.Fatalf("stream holds %d messages, %d events added", len(msgs), added1+added2)
	}
	checkMessages(t, msgs, from, to) // each event once, ids unique
	checkOrder(t, msgs)
}

// spoolRun2End ends the run of the restarted daemon once the broker (what)
// is back: the feed goes on while the replay starts, then stops (on a
// loaded machine, or under the race detector, the replay may run slower
// than the feed, and the spool must still empty); it waits up to within
// for the spool to be replayed, closes the sinks and checks that the run
// delivered everything, its identity holding. It returns what the run
// added, its last counts, and when it ended.
func spoolRun2End(t *testing.T, s2 *Sinks, st1 Stats, stop chan struct{}, wait func() []int, within time.Duration, what string) (added2 uint64, st2 Stats, to time.Time) {
	t.Helper()
	back := time.Now()
	backed := s2.Stats()[0]
	time.Sleep(2 * time.Second)
	close(stop)
	added2 = sum(wait())
	waitFor(t, "the spool replayed", within, func() bool {
		st := s2.Stats()[0]
		return st.Spooled == 0 && st.SpoolReplayed > st1.Spooled
	})
	took := time.Since(back)
	replayed := s2.Stats()[0].SpoolReplayed - backed.SpoolReplayed
	t.Logf("%s back: %d records spooled, the spool empty %v later (%d replayed meanwhile: %.0f records/s, the feed going on for 2s)",
		what, backed.Spooled, took.Round(time.Millisecond), replayed, float64(replayed)/took.Seconds())
	closeSinks(t, s2)
	to = time.Now()
	st2 = s2.Stats()[0]
	t.Logf("run 2: added %d: %+v", added2, st2)
	checkSpoolIdentity(t, added2, st2)
	if st2.Dropped+st2.Failed+st2.Spooled+st2.SpoolBytes != 0 {
		t.Fatalf("run 2 did not deliver everything: %+v", st2)
	}
	return added2, st2, to
}

// checkOrder: each key's messages of a worker are in the order they were
// added.
func checkOrder(t *testing.T, msgs []jetstream.Msg) {
	t.Helper()
	last := map[string]int{}
	late := 0
	for _, m := range msgs {
		w, seq := eventID(t, m.Data())
		k := m.Subject() + "/" + strconv.Itoa(w)
		if l, ok := last[k]; ok && seq < l {
			late++
		} else {
			last[k] = seq
		}
	}
	if late > 0 {
		t.Fatalf("%d of %d messages after a later one of their key and worker", late, len(msgs))
	}
}

// TestNATSSpoolFull: with the server down and a spool of 1 MiB, on_full
// drop drops what the spool cannot take, counted; the identity holds, and
// the next run finds exactly what was spooled.
func TestNATSSpoolFull(t *testing.T) {
	srv := sinktest.StartNATS(t)
	sp := natsSpec(srv.URL())
	sp.Buffer = 128 << 10
	sp.Spool = spool.Config{Path: t.TempDir(), MaxBytes: spool.MinBytes}
	s := newTestSinks(t, []Spec{sp}, 1)
	srv.Kill()
	waitFor(t, "the sink down", 5*time.Second, func() bool { return s.Stats()[0].Down })
	stop := make(chan struct{})
	wait := spoolFeeder(s, 1, 0, 0, stop)
	waitFor(t, "spool drops", 20*time.Second, func() bool { return s.Stats()[0].SpoolDropped > 1000 })
	close(stop)
	added := sum(wait())
	closeSinks(t, s)
	st := s.Stats()[0]
	t.Logf("added %d: %+v", added, st)
	checkSpoolIdentity(t, added, st)
	if st.SpoolBytes > spool.MinBytes || st.SpoolBytes < spool.MinBytes*3/4 || st.Dropped < st.SpoolDropped || st.Records != 0 {
		t.Fatalf("stats %+v", st)
	}
	q, err := spool.Open(sp.Spool.Path, spool.MinBytes, true)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if uint64(q.Unread()) != st.Spooled {
		t.Fatalf("reopened: %d records, the sink said %d", q.Unread(), st.Spooled)
	}
}

// TestSpoolSinkStartErrors: a spool in use by another sink is an error at
// New, and the spool is released when a sink fails to start.
func TestSpoolSinkStartErrors(t *testing.T) {
	srv := sinktest.StartNATS(t)
	sp := natsSpec(srv.URL())
	sp.Spool = spool.Config{Path: t.TempDir()}
	s := newTestSinks(t, []Spec{sp}, 1)
	_, err := New([]Spec{sp}, 1)
	if err == nil || err.Error() != fmt.Sprintf("sinks[0] (nats:xgate.events.{key}): spool %s is in use by another sink or daemon: give each sink a spool directory of its own", sp.Spool.Path) {
		t.Fatalf("second sink on the spool: %v", err)
	}
	closeSinks(t, s)
	bad := sp
	bad.NATS.Stream = "OTHER" // missing, not created: the output fails
	bad.NATS.CreateStream = false
	if _, err := New([]Spec{bad}, 1); err == nil {
		t.Fatal("no error for a missing stream")
	}
	closeSinks(t, newTestSinks(t, []Spec{sp}, 1)) // the spool was released
}

// TestKafkaSpoolOutageRestart is TestNATSSpoolOutageRestart for Kafka,
// with the broker down two ways (kfake keeps running, so that what the
// topic holds stays): "refused" answers every produce request with
// NOT_ENOUGH_REPLICAS, so the records in flight fail after
// delivery_timeout and go back to the spool; "unreachable" closes the
// connection on every produce request, so the client holds the records
// in flight (it cannot know whether they were written) until the broker
// is back or the sink gives up on them at Close. For spoolOutage 2
// workers keep adding events; half way through it the sinks are closed
// and made again on the same spool (a daemon restart), and the feed goes
// on. The spool takes records while half the memory buffer waits for
// acks, and those the client fails; once the broker takes requests again
// the spool is replayed. Kafka records have no message id to
// de-duplicate a replay, so exactly once rests on the idempotent producer
// and on a refused request writing nothing: every event added in either
// run is in the topic exactly once, with the record contract, nothing
// was dropped or failed, and each run's identity holds with the spool's
// terms.
func TestKafkaSpoolOutageRestart(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		kafkaSpoolOutageRestart(t, func(c *kfake.Cluster) (stop func() int) {
			f := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
			return func() int { f.Remove(); return f.Hits() }
		})
	})
	t.Run("unreachable", func(t *testing.T) {
		kafkaSpoolOutageRestart(t, func(c *kfake.Cluster) (stop func() int) {
			var down atomic.Bool
			var hits atomic.Int64
			down.Store(true)
			c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				if !down.Load() {
					c.DropControl() // and the request is handled as usual
					return nil, nil, false
				}
				c.KeepControl()
				hits.Add(1)
				return nil, errors.New("broker down"), true // closes the connection
			})
			return func() int { down.Store(false); return int(hits.Load()) }
		})
	})
}

// kafkaSpoolOutageRestart runs TestKafkaSpoolOutageRestart with the
// outage that outage starts; the function it returns ends it and
// returns how many produce requests the broker refused.
func kafkaSpoolOutageRestart(t *testing.T, outage func(*kfake.Cluster) (stop func() int)) {
	c := newKfake(t, kfake.SeedTopics(3, testTopic))
	brokers := c.ListenAddrs()
	length := spoolOutage(t)
	sp := kafkaSpec(brokers)
	sp.Buffer = 128 << 10 // two slabs per worker: the outage overflows it at once
	sp.OnFull, sp.BlockTimeout = "block", 10*time.Second
	sp.DeliveryTimeout = 3 * time.Second // in-flight records fail during the outage: they go back to the spool
	sp.Spool = spool.Config{Path: t.TempDir() + "/spool", MaxBytes: 256 << 20}
	const workers = 2
	from := time.Now()

	// Run 1: traffic, then the broker goes down.
	var up func() int
	var down time.Time
	added1, st1 := spoolRun1(t, sp, workers, length/2, func() { up, down = outage(c), time.Now() })

	// Run 2: the restarted daemon finds the spool, the outage goes on.
	// Unlike NATS's, a Kafka sink does not know the broker is down: it
	// may have begun to replay already (those records fail or wait).
	s2 := newTestSinks(t, []Spec{sp}, workers)
	if st := s2.Stats()[0]; st.SpoolRecovered != st1.Spooled || st.Spooled > st1.Spooled {
		t.Fatalf("run 2 recovered %d (spooled %d), run 1 left %d", st.SpoolRecovered, st.Spooled, st1.Spooled)
	}
	stop := make(chan struct{})
	wait := spoolFeeder(s2, workers, workers, 10*time.Millisecond, stop)
	time.Sleep(length - time.Since(down))
	if st := s2.Stats()[0]; st.SpoolOldest.IsZero() || time.Since(st.SpoolOldest) < length/2 || st.Spooled <= st1.Spooled {
		t.Fatalf("during the outage: %+v", st)
	}
	refused := up()
	t.Logf("broker down for %v (%d produce requests refused)", time.Since(down).Round(time.Millisecond), refused)
	added2, st2, to := spoolRun2End(t, s2, st1, stop, wait, 2*length+30*time.Second, "broker")
	if st1.Records+st2.Records != added1+added2 {
		t.Fatalf("acknowledged %d + %d records, %d + %d events added", st1.Records, st2.Records, added1, added2)
	}

	recs := consumeTopic(t, brokers, int(added1+added2))
	if uint64(len(recs)) != added1+added2 {
		t.Fatalf("topic holds %d records, %d events added", len(recs), added1+added2)
	}
	checkRecords(t, recs, 3, from, to) // each event once, each key's in order
}

// spoolRun1 is the run of a daemon that a restart will end: workers feed
// a spooling sink of sp until the broker has taken records, then down
// takes the broker down; the feed goes on for half of the outage, and the
// sinks close with the broker still down. Every record is accounted for
// and none lost; some are spooled for the next run.
func spoolRun1(t *testing.T, sp Spec, workers int, half time.Duration, down func()) (uint64, Stats) {
	t.Helper()
	s1 := newTestSinks(t, []Spec{sp}, workers)
	stop := make(chan struct{})
	// 64 events per worker every 10ms: 12800/s, well below what the
	// broker takes, so that the replay catches up with the feed.
	wait := spoolFeeder(s1, workers, 0, 10*time.Millisecond, stop)
	waitFor(t, "records before the outage", 5*time.Second, func() bool { return s1.Stats()[0].Records > 1000 })
	down()
	at := time.Now()
	waitFor(t, "records spooled", 5*time.Second, func() bool { return s1.Stats()[0].Spooled > 0 })
	time.Sleep(half - time.Since(at))
	close(stop)
	added1 := sum(wait())
	start := time.Now()
	closeSinks(t, s1)
	st1 := s1.Stats()[0]
	t.Logf("run 1: added %d, closed in %v with the broker down: %+v", added1, time.Since(start).Round(time.Millisecond), st1)
	checkSpoolIdentity(t, added1, st1)
	if st1.Dropped+st1.Failed != 0 || st1.Spooled == 0 {
		t.Fatalf("run 1 lost records or spooled none: %+v", st1)
	}
	return added1, st1
}
