// Package kafka is the Kafka output of the sinks: one record per event,
// produced with franz-go. The sink (gateway/sink) builds it from its
// Spec.Kafka (Config) and drives it through the contract of
// gateway/sink/output.
//
// Record contract (what consumers, examples/consumer and docs/deploy.md
// rely on; change it only with them):
//
//	key        the schema's key field (schema.key, e.g. user_id): a string's
//	           text (unescaped), a number's literal as written; no key (null)
//	           when the event has none (rejects never have one)
//	value      the original event bytes, exactly as received
//	headers    "verdict"  pass | alert | drop | block | reject (decode error)
//	           "rule"     the deciding rule ("" when no rule fired); for a
//	                      reject the decode error's kind, e.g. invalid_json
//	           "gateway"  the gateway id (gateway_id; default the host name)
//	           "rx_ns"    receive time, decimal ns since the Unix epoch (the
//	                      XDP timestamp on the afxdp path; otherwise when the
//	                      worker's batch was read)
//	           "id"       the message id, <gateway id>-<start>-<sequence>:
//	                      unique per record, the same when a spool sends it
//	                      again (a consumer drops what it has)
//	           with meta (the sink's meta.go), also:
//	           "src"      sender address:port ([v6]:port for IPv6)
//	           "queue"    the worker's RX queue (afxdp) or socket, decimal
//	           "rx_time"  the receive time, RFC 3339 UTC with 9 digits
//	timestamp  when the sink produced it (franz-go's; not the receive
//	           time, since franz-go times delivery_timeout from it)
//	partition  franz-go's default partitioner: a keyed record goes to
//	           murmur2(key) mod partitions, as with the Java client, so all
//	           records of one key land in one partition, in order
//
// Delivery. The writer goroutine produces each record of a slab
// asynchronously (Client.Produce with a promise; records are views into
// the slab, which is held until every promise of it has run). franz-go
// batches per partition (linger, batch_max_bytes), compresses, and retries
// retriable errors and lost connections for up to delivery_timeout; what
// is still unacknowledged then is Failed. The idempotent producer (on by
// default) makes those retries free of duplicates and keeps each
// partition's order. The slab pool bounds what is buffered and in flight
// (MaxBufferedRecords is set above it, so Produce never blocks the writer):
// a slow or absent broker holds the slabs, and the workers drop and count
// (or block up to block_timeout) — memory stays bounded.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/xgate/xgate/gateway/sink/output"
)

const kafkaCloseWait = 10 * time.Second // for the promises after Close

// kafkaStartTimeout bounds reaching the brokers and checking the topic at
// start (a variable so that a test can shorten it).
var kafkaStartTimeout = 10 * time.Second

// kafkaOutput produces a sink's records to one topic.
//
// Concurrency: Write, Finish and the start-up run on the sink's writer
// goroutine; the promises on franz-go's promise goroutine (one, serially);
// Abort on Close's. The promises share with the writer only atomics, the
// slab's release and the per-slab state, which the writer fills before it
// produces the slab's first record and does not touch again until the
// slab has been released.
type kafkaOutput struct {
	cnt    output.Counts
	cl     *kgo.Client
	topic  string
	gw     []byte
	ctx    context.Context // canceled by abort
	cancel context.CancelFunc
	ids    output.IDGen // message ids (writer goroutine only)

	output.Acks // pending: records produced, promise not yet run
}

var _ output.Output = (*kafkaOutput)(nil)

// kafkaSlab is the per-slab state of a kafkaOutput (output.Slab.State): one Record
// and up to kafkaHeaders headers per record the slab can hold, reused every time the
// slab comes round, and the promise, made once, that counts them down.
type kafkaSlab struct {
	output.Left // left: records of the slab whose promise has not run
	recs        []kgo.Record
	hdrs        []kgo.RecordHeader
	ids         output.MsgIDs // the records' ids without a spool (with one: Slab.IDs)
	promise     func(*kgo.Record, error)
}

// kafkaHeaders is the most headers a record has: five always, three with
// meta.
const kafkaHeaders = 8

// New makes the client for the brokers of k and checks the topic (making
// it if asked to); with sk.Spooled it starts while no broker is reachable.
func New(sk output.Sink, k Config) (output.Output, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(k.Brokers...),
		kgo.ClientID(k.ClientID),
		kgo.ProducerLinger(k.Linger),
		kgo.ProducerBatchMaxBytes(int32(k.BatchMaxBytes)),
		kgo.RecordDeliveryTimeout(sk.DeliveryTimeout),
		// Above what the slabs can hold, so that Produce never waits.
		kgo.MaxBufferedRecords(sk.Slabs*sk.SlabRecords + 1),
		kgo.DialTimeout(5 * time.Second),
		// A produce error or a lost broker makes franz-go reload metadata
		// before it retries; its default minimum age of 5s would keep a
		// restarted broker idle that long, and delivery_timeout is only
		// checked around requests.
		kgo.MetadataMinAge(500 * time.Millisecond),
		kgo.RetryBackoffFn(kafkaBackoff),
	}
	switch k.Acks {
	case "leader":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()))
	case "none":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()))
	default:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	if k.NoIdempotence {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	codec := map[string]kgo.CompressionCodec{
		"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(), "snappy": kgo.SnappyCompression(),
		"gzip": kgo.GzipCompression(), "none": kgo.NoCompression(),
	}[k.Compression]
	opts = append(opts, kgo.ProducerBatchCompression(codec))
	if sk.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(sk.TLS))
	}
	if s := k.SASL; s.Mechanism != "" {
		pass, err := output.Secret(s.Password, s.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("sasl password: %w", err)
		}
		switch s.Mechanism {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: s.User, Pass: pass}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: s.User, Pass: pass}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: s.User, Pass: pass}.AsSha512Mechanism()))
		}
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	o := &kafkaOutput{
		cnt:   sk.Counts,
		cl:    cl,
		topic: k.Topic,
		gw:    []byte(sk.GatewayID),
		ids:   output.NewIDGen(sk.GatewayID),
	}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	if err := o.checkTopic(k); err != nil {
		var unreachable *kafkaUnreachable
		if sk.Spooled && errors.As(err, &unreachable) {
			// With a spool the sink starts while no broker is reachable
			// (a restart during an outage): records go to the spool.
			o.NoteError(err)
			return o, nil
		}
		o.cancel()
		cl.Close()
		return nil, err
	}
	return o, nil
}

// kafkaUnreachable is checkTopic's error when no broker answered.
type kafkaUnreachable struct{ err error }

func (e *kafkaUnreachable) Error() string { return e.err.Error() }
func (e *kafkaUnreachable) Unwrap() error { return e.err }

// kafkaBackoff is the wait before retry number tries (from 1): 100ms
// doubling up to 1s, with up to 20% jitter, so that a broker that comes
// back is used within about a second.
func kafkaBackoff(tries int) time.Duration {
	d := min(100*time.Millisecond<<min(tries-1, 4), time.Second)
	return d - time.Duration(rand.Int64N(int64(d/5)))
}

// checkTopic makes sure the topic exists (creating it if asked to), so
// that a typo or a missing topic is an error at start, not a stream of
// failed records.
func (o *kafkaOutput) checkTopic(k Config) error {
	ctx, cancel := context.WithTimeout(o.ctx, kafkaStartTimeout)
	defer cancel()
	brokers := strings.Join(k.Brokers, ",")
	req := kmsg.NewPtrMetadataRequest()
	t := kmsg.NewMetadataRequestTopic()
	t.Topic = kmsg.StringPtr(k.Topic)
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, o.cl)
	if err != nil {
		return &kafkaUnreachable{fmt.Errorf("kafka brokers %s: %w", brokers, err)}
	}
	var terr error = kerr.UnknownTopicOrPartition
	for _, rt := range resp.Topics {
		if rt.Topic != nil && *rt.Topic == k.Topic {
			terr = kerr.ErrorForCode(rt.ErrorCode)
		}
	}
	switch {
	case terr == nil:
		return nil
	case !errors.Is(terr, kerr.UnknownTopicOrPartition):
		return fmt.Errorf("topic %s on brokers %s: %w", k.Topic, brokers, terr)
	case !k.CreateTopic:
		return fmt.Errorf("topic %s does not exist on brokers %s: create it or set create_topic: true", k.Topic, brokers)
	}
	creq := kmsg.NewPtrCreateTopicsRequest()
	ct := kmsg.NewCreateTopicsRequestTopic()
	ct.Topic = k.Topic
	ct.NumPartitions = -1 // the broker's default
	if k.Partitions > 0 {
		ct.NumPartitions = int32(k.Partitions)
	}
	ct.ReplicationFactor = -1
	creq.Topics = append(creq.Topics, ct)
	creq.TimeoutMillis = int32(kafkaStartTimeout / time.Millisecond)
	cresp, err := creq.RequestWith(ctx, o.cl)
	if err != nil {
		return fmt.Errorf("create topic %s on brokers %s: %w", k.Topic, brokers, err)
	}
	for _, rt := range cresp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			msg := ""
			if rt.ErrorMessage != nil {
				msg = " (" + *rt.ErrorMessage + ")"
			}
			return fmt.Errorf("create topic %s on brokers %s: %w%s", k.Topic, brokers, err, msg)
		}
	}
	return nil
}

// state returns sl's kafkaSlab, making it on the slab's first use.
func (o *kafkaOutput) state(sl *output.Slab) *kafkaSlab {
	if ks, ok := sl.State.(*kafkaSlab); ok {
		return ks
	}
	n := cap(sl.Ends)
	ks := &kafkaSlab{recs: make([]kgo.Record, n), hdrs: make([]kgo.RecordHeader, kafkaHeaders*n)}
	ks.Slab = sl
	ks.promise = func(r *kgo.Record, err error) { o.resolve(ks, r, err) }
	sl.State = ks
	return ks
}

func (o *kafkaOutput) Write(sl *output.Slab) {
	ks := o.state(sl)
	n := len(sl.Ends)
	o.Handed(&ks.Left, n)
	// The ids first: the headers are views into ids, which must not grow
	// under them. A record from the spool keeps the id it was given.
	ids := &ks.ids
	if sl.IDs != nil {
		ids = sl.IDs
	}
	if !sl.Replay {
		ids.Reset()
		for range n {
			ids.AddNext(&o.ids)
		}
	}
	var kr output.Record
	from := 0
	for i, end := range sl.Ends {
		output.Parse(sl.Buf[from:end], &kr)
		from = int(end)
		j := kafkaHeaders * i
		h := append(ks.hdrs[j:j:j+kafkaHeaders], // within capacity: no allocation
			kgo.RecordHeader{Key: output.HdrVerdict, Value: output.Verdicts[kr.Verdict]},
			kgo.RecordHeader{Key: output.HdrRule, Value: kr.Rule},
			kgo.RecordHeader{Key: output.HdrGateway, Value: o.gw},
			kgo.RecordHeader{Key: output.HdrRxNs, Value: kr.RxText},
			kgo.RecordHeader{Key: output.HdrID, Value: ids.At(i)})
		if kr.Src != nil {
			h = append(h, kgo.RecordHeader{Key: output.HdrSrc, Value: kr.Src})
		}
		if kr.Queue != nil {
			h = append(h, kgo.RecordHeader{Key: output.HdrQueue, Value: kr.Queue})
		}
		if kr.RxTime != nil {
			h = append(h, kgo.RecordHeader{Key: output.HdrRxTime, Value: kr.RxTime})
		}
		r := &ks.recs[i]
		*r = kgo.Record{Key: kr.Key, Value: kr.Value, Headers: h, Topic: o.topic}
		o.cl.Produce(o.ctx, r, ks.promise)
	}
}

// NewMsgID appends the next message id to b (writer goroutine only): the
// spooler's, for the records it stores.
func (o *kafkaOutput) NewMsgID(b []byte) []byte { return o.ids.Next(b) }

// Down is false: a Kafka client gives no sign of an absent broker short
// of failed records (the spooler goes by the slabs it holds instead).
func (o *kafkaOutput) Down() bool { return false }

// resolve is the promise of every record (franz-go calls promises
// serially, on one goroutine).
func (o *kafkaOutput) resolve(ks *kafkaSlab, r *kgo.Record, err error) {
	cnt := &o.cnt
	if err != nil {
		cnt.Errors.Add(1)
		// With a spool, the record goes back to it (the sink's
		// spooler.go); r is ks.recs[i], and i its index in the slab.
		i := int((uintptr(unsafe.Pointer(r)) - uintptr(unsafe.Pointer(&ks.recs[0]))) / unsafe.Sizeof(ks.recs[0]))
		if !ks.Slab.SpoolFailed(i) {
			cnt.Failed.Add(1)
		}
		o.NoteError(err)
	} else {
		cnt.Records.Add(1)
		cnt.Bytes.Add(uint64(len(r.Key) + len(r.Value)))
	}
	o.Settled(&ks.Left)
}

// Finish waits until every record produced is acknowledged or failed
// (franz-go gives up on a record after delivery_timeout), or until Abort,
// then closes the client, which fails what is left; it returns once every
// promise has run, so the counts are final.
func (o *kafkaOutput) Finish() error {
	ferr := o.cl.Flush(o.ctx)
	o.cl.Close()
	deadline := time.Now().Add(kafkaCloseWait)
	for o.InFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	o.cancel()
	if n := o.InFlight(); n > 0 {
		return fmt.Errorf("%d records still unresolved %v after closing the client", n, kafkaCloseWait)
	}
	if ferr != nil && !errors.Is(ferr, context.Canceled) {
		return fmt.Errorf("flush: %w", ferr)
	}
	return nil
}

// Abort makes Finish stop waiting for the brokers.
func (o *kafkaOutput) Abort() { o.cancel() }

// GiveUp (spool): Finish fails every record not yet acknowledged at once
// (the client's Close fails them), so that they go to the spool.
func (o *kafkaOutput) GiveUp() { o.cancel() }
