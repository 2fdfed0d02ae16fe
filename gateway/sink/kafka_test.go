package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/kafka"
	"github.com/xgate/xgate/gateway/sink/sinktest"
)

// ---------------------------------------------------------------------------
// Kafka

const testTopic = "events"

func newKfake(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func kafkaSpec(brokers []string) Spec {
	return Spec{
		Type: "kafka", What: "passed", KeyPath: "user_id", GatewayID: "gw-test",
		Kafka: kafka.Config{Brokers: brokers, Topic: testTopic, Linger: time.Millisecond},
	}
}

// consumeTopic reads every record of the topic: until want have come and
// then for another 300 ms, to see any beyond want; it gives up after 10s
// plus 1s per 20000 records wanted.
func consumeTopic(t *testing.T, brokers []string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(testTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(10*time.Second + time.Duration(want)*time.Second/20000)
	var extra time.Time
	for time.Now().Before(deadline) {
		if len(out) >= want {
			if extra.IsZero() {
				extra = time.Now().Add(300 * time.Millisecond)
			} else if time.Now().After(extra) {
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("fetch: %v", err)
			}
		})
		out = append(out, fs.Records()...)
	}
	return out
}

// checkRecords checks the record contract on what the topic holds: each
// event once, key = user_id, headers as documented, every key in one
// partition (the one Kafka's own partitioner picks) and, per partition,
// each worker's events of a key in the order they were added.
func checkRecords(t *testing.T, recs []*kgo.Record, partitions int, from, to time.Time) {
	t.Helper()
	seen, ids := map[string]bool{}, map[string]bool{}
	keyPart := map[string]int32{}
	last := map[string]int{} // key + worker → last seq
	late := 0
	kafkaPart := kgo.StickyKeyPartitioner(nil).ForTopic(testTopic)
	for _, r := range recs {
		w, seq := eventID(t, r.Value)
		id := fmt.Sprintf("w%d-%d", w, seq)
		if seen[id] {
			t.Fatalf("event %s produced twice", id)
		}
		seen[id] = true
		if want := keyedEvent(w, seq); !bytes.Equal(r.Value, want) {
			t.Fatalf("value %q, want the original bytes %q", r.Value, want)
		}
		key := string(r.Key)
		if key != fmt.Sprintf("u-%d", seq%testKeys) {
			t.Fatalf("event %s: key %q", id, key)
		}
		if p, ok := keyPart[key]; ok && p != r.Partition {
			t.Fatalf("key %s in partitions %d and %d", key, p, r.Partition)
		}
		keyPart[key] = r.Partition
		if want := kafkaPart.Partition(&kgo.Record{Key: r.Key}, partitions); int32(want) != r.Partition {
			t.Fatalf("key %s in partition %d, Kafka's partitioner says %d", key, r.Partition, want)
		}
		kw := key + "/" + strconv.Itoa(w)
		if l, ok := last[kw]; ok && seq <= l {
			late++
		} else {
			last[kw] = seq
		}
		h := map[string]string{}
		for _, hd := range r.Headers {
			h[hd.Key] = string(hd.Value)
		}
		wantVerdict, wantRule := "pass", ""
		if seq%10 == 0 {
			wantVerdict, wantRule = "alert", "big-payment"
		}
		if len(r.Headers) != 5 || h["verdict"] != wantVerdict || h["rule"] != wantRule || h["gateway"] != "gw-test" || !strings.HasPrefix(h["id"], "gw-test-") {
			t.Fatalf("event %s: headers %v", id, r.Headers)
		}
		if ids[h["id"]] {
			t.Fatalf("event %s: id %q twice", id, h["id"])
		}
		ids[h["id"]] = true
		rx, err := strconv.ParseInt(h["rx_ns"], 10, 64)
		if err != nil || rx < from.UnixNano() || rx > to.UnixNano() {
			t.Fatalf("event %s: rx_ns %q not a time in [%d, %d]", id, h["rx_ns"], from.UnixNano(), to.UnixNano())
		}
		if r.Timestamp.Before(from.Truncate(time.Millisecond)) || r.Timestamp.After(to) {
			t.Fatalf("event %s: timestamp %v not in [%v, %v]", id, r.Timestamp, from, to)
		}
	}
	used := map[int32]bool{}
	for _, p := range keyPart {
		used[p] = true
	}
	if len(keyPart) != testKeys || len(used) != partitions {
		t.Fatalf("%d keys over %d partitions, want %d keys over all %d", len(keyPart), len(used), testKeys, partitions)
	}
	if late > 0 {
		t.Fatalf("%d records after a later one of their key and worker", late)
	}
}

func TestKafkaSinkExactlyOnce(t *testing.T) {
	c := newKfake(t, kfake.SeedTopics(3, testTopic))
	brokers := c.ListenAddrs()
	sp := kafkaSpec(brokers)
	added, from, to := keyedAllDelivered(t, sp, "kafka:"+testTopic)
	recs := consumeTopic(t, brokers, int(added))
	if len(recs) != int(added) {
		t.Fatalf("topic holds %d records, %d acknowledged", len(recs), added)
	}
	checkRecords(t, recs, 3, from, to)
}

// TestKafkaSinkRxTime: a receive timestamp from XDP (CLOCK_MONOTONIC)
// becomes rx_ns since the epoch; rejects carry the error, no key.
func TestKafkaSinkRxTimeAndRejects(t *testing.T) {
	c := newKfake(t, kfake.SeedTopics(1, testTopic))
	sp := kafkaSpec(c.ListenAddrs())
	sp.What = "all"
	s := newTestSinks(t, []Spec{sp}, 1)
	w := s.Writer(0)
	mono := monotonicNs() - uint64(time.Hour) // received an hour ago
	d := engine.Decision{Raw: []byte(`{"user_id":42,"amount":1}`), Action: engine.ActionDrop, Rule: "limit"}
	w.AddAt(&d, mono)
	bad := engine.Decision{Raw: []byte(`{"user_id":`), Err: engine.ErrInvalidJSON, Action: engine.ActionDrop}
	w.AddAt(&bad, 0)
	esc := engine.Decision{Raw: []byte(`{"user_id":"a\"b\u00e9","meta":{}}`), Action: engine.ActionBlock, Rule: "flood"}
	w.AddAt(&esc, 0)
	none := engine.Decision{Raw: []byte(`{"user_id":null}`), Action: engine.ActionPass}
	w.AddAt(&none, 0)
	w.FlushAll()
	closeSinks(t, s)
	if st := s.Stats()[0]; st.Records != 4 {
		t.Fatalf("stats %+v", st)
	}
	recs := consumeTopic(t, c.ListenAddrs(), 4)
	if len(recs) != 4 {
		t.Fatalf("%d records", len(recs))
	}
	hdr := func(r *kgo.Record, k string) string {
		for _, h := range r.Headers {
			if h.Key == k {
				return string(h.Value)
			}
		}
		return "<none>"
	}
	want := time.Now().Add(-time.Hour).UnixNano()
	rx, _ := strconv.ParseInt(hdr(recs[0], "rx_ns"), 10, 64)
	if string(recs[0].Key) != "42" || hdr(recs[0], "verdict") != "drop" || hdr(recs[0], "rule") != "limit" ||
		rx < want-int64(time.Minute) || rx > want+int64(time.Minute) {
		t.Errorf("number key / XDP time: key %q headers %v (rx %d, want about %d)", recs[0].Key, recs[0].Headers, rx, want)
	}
	if recs[1].Key != nil || hdr(recs[1], "verdict") != "reject" || hdr(recs[1], "rule") != "invalid_json" || string(recs[1].Value) != `{"user_id":` {
		t.Errorf("reject: key %q value %q headers %v", recs[1].Key, recs[1].Value, recs[1].Headers)
	}
	if string(recs[2].Key) != "a\"b\u00e9" || hdr(recs[2], "verdict") != "block" {
		t.Errorf("escaped key: %q %v", recs[2].Key, recs[2].Headers)
	}
	if recs[3].Key != nil || hdr(recs[3], "rule") != "" {
		t.Errorf("null key: %q %v", recs[3].Key, recs[3].Headers)
	}
}

// TestKafkaSinkBrokerRestart stops the broker mid-stream and starts it
// again on the same port and data: what was acknowledged is there once,
// what the full buffer dropped is counted, and the producer resumes.
func TestKafkaSinkBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	port := sinktest.FreePort(t)
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(3, testTopic)}
	c1, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	var c2 *kfake.Cluster
	r := keyedOutage(t, kafkaSpec(c1.ListenAddrs()), c1.Close, func(*Sinks, Stats) {
		var err error
		if c2, err = kfake.NewCluster(opts...); err != nil {
			t.Fatalf("restart on port %d: %v", port, err)
		}
		t.Cleanup(c2.Close)
		time.Sleep(time.Second)
	})
	if r.end.Records <= r.during.Records {
		t.Fatalf("want records after the restart")
	}
	st := r.end
	recs := consumeTopic(t, c2.ListenAddrs(), int(st.Records))
	if len(recs) != int(st.Records) {
		t.Fatalf("topic holds %d records, the sink counted %d acknowledged", len(recs), st.Records)
	}
	checkRecords(t, recs, 3, r.from, r.to)
}

// TestKafkaSinkDeliveryTimeout: while every produce fails, records are
// retried until delivery_timeout and then counted failed; afterwards the
// sink goes on, and the identity holds.
func TestKafkaSinkDeliveryTimeout(t *testing.T) {
	c := newKfake(t, kfake.SeedTopics(1, testTopic))
	sp := kafkaSpec(c.ListenAddrs())
	sp.DeliveryTimeout = time.Second
	s := newTestSinks(t, []Spec{sp}, 1)
	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	stop := make(chan struct{})
	wait := feeder(s, 1, 1<<30, time.Millisecond, stop)
	waitFor(t, "failed records", 5*time.Second, func() bool { return s.Stats()[0].Failed > 0 })
	fault.Remove()
	failed := s.Stats()[0].Failed
	waitFor(t, "records after the fault", 5*time.Second, func() bool { return s.Stats()[0].Records > 0 })
	close(stop)
	added := sum(wait())
	closeSinks(t, s)
	st := s.Stats()[0]
	checkIdentity(t, added, st)
	if st.Failed < failed || st.Errors < st.Failed || !strings.Contains(st.LastError, "timed out") {
		t.Fatalf("stats %+v", st)
	}
	if recs := consumeTopic(t, c.ListenAddrs(), int(st.Records)); len(recs) != int(st.Records) {
		t.Fatalf("topic holds %d records, the sink counted %d acknowledged", len(recs), st.Records)
	}
}

func TestKafkaSinkTopicCheck(t *testing.T) {
	c := newKfake(t)
	sp := kafkaSpec(c.ListenAddrs())
	sp.Kafka.Topic = "missing"
	_, err := New([]Spec{sp}, 1)
	want := fmt.Sprintf("sinks[0] (kafka:missing): topic missing does not exist on brokers %s: create it or set create_topic: true", c.ListenAddrs()[0])
	if err == nil || err.Error() != want {
		t.Fatalf("error %v\nwant %s", err, want)
	}

	sp.Kafka.CreateTopic, sp.Kafka.Partitions = true, 4
	s := newTestSinks(t, []Spec{sp}, 1)
	closeSinks(t, s)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr("missing")
	req.Topics = append(req.Topics, mt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil || len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) != 4 {
		t.Fatalf("created topic: %v %+v", err, resp)
	}
}

// BenchmarkKafkaSink measures records/s from one worker through the sink
// (4 MiB buffer) to a kfake broker in the same process on loopback (one
// partition, acks all, idempotent), every record acknowledged (OnFull
// block), per codec and linger. kfake stores nothing (BlackholeProduce),
// but it shares the machine's cores with the producer.
func BenchmarkKafkaSink(b *testing.B) {
	for _, bc := range []struct {
		codec  string
		linger time.Duration
	}{{"lz4", 0}, {"zstd", 0}, {"none", 0}, {"lz4", 10 * time.Millisecond}} {
		name := bc.codec
		if bc.linger != 0 {
			name += "/linger=" + bc.linger.String()
		}
		b.Run(name, func(b *testing.B) {
			c := newKfake(b, kfake.SeedTopics(1, testTopic), kfake.BlackholeProduce())
			sp := kafkaSpec(c.ListenAddrs())
			sp.Kafka.Compression = bc.codec
			sp.Kafka.Linger = bc.linger
			sp.OnFull, sp.BlockTimeout, sp.Buffer = "block", time.Minute, 4<<20
			benchKeyedSink(b, sp)
		})
	}
}
