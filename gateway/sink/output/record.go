package output

import (
	"encoding/binary"

	"github.com/xgate/xgate/engine"
)

// A keyed record is what the workers write into a slab for a Kafka or
// NATS sink (the sink's encodeKeyed and encodeKeyedAggregate): more than
// the bytes of a line, since the broker wants the key, the verdict, the
// rule and the receive time apart from the event. HeaderLen is the size
// of its fixed start:
//
//	[0]     verdict: an engine.Action, VerdictReject for a decode error or
//	        VerdictAggregate for a window aggregate
//	[1]     length of the source as text (meta src; 0: none)
//	[2:4]   length of the rule: the deciding rule, "" when none fired; for
//	        a reject the decode error's name (little endian, as all below)
//	[4:6]   length of the key ("" when the event has no usable key; a
//	        reject has none)
//	[6]     length of the receive time as decimal text
//	[7]     bits 0-6: length of the queue as decimal text (meta queue; 0:
//	        none); bit 7: the receive time as RxTimeLayout follows (meta
//	        rx_time, 30 bytes)
//	[8:16]  receive time, ns since the Unix epoch
//
// followed by the rule, the key, the receive time as decimal text, the
// source, the queue and the receive time as text (those three only with
// meta) and the event's original bytes, which run to the record's end
// (Slab.Ends). The lengths fit: a record is at most a slab (64 KiB) long.
const HeaderLen = 16

// Verdict codes beside engine.Action's.
const (
	VerdictReject    = 0xff // a decode error
	VerdictAggregate = 0xfe // a window aggregate (its value is the aggregate's JSON)
)

// RxTimeLayout is RFC 3339 in UTC with all nine fraction digits: always 30
// bytes for years 1000..9999.
const RxTimeLayout = "2006-01-02T15:04:05.000000000Z"

// Verdicts are the values of the "verdict" header, by verdict code.
var Verdicts = func() (v [256][]byte) {
	for a := range engine.NumActions {
		v[a] = []byte(engine.Action(a).String())
	}
	v[VerdictReject] = []byte("reject")
	v[VerdictAggregate] = []byte("aggregate")
	return v
}()

// Header keys of the record contract (gateway/sink/kafka's package
// comment), for Kafka and NATS alike.
const (
	HdrVerdict = "verdict"
	HdrRule    = "rule"
	HdrGateway = "gateway"
	HdrRxNs    = "rx_ns"
	// HdrID (Kafka) is the record's message id, "<gateway>-<start>-<sequence>"
	// (IDGen): unique per record, and the same when a spool sends it
	// again, so a consumer can drop what it has (at least once). NATS
	// carries it as Nats-Msg-Id.
	HdrID = "id"
	// With meta (the sink's meta.go).
	HdrSrc    = "src"
	HdrQueue  = "queue"
	HdrRxTime = "rx_time"
)

// Record is one keyed record of a slab, as views into it.
type Record struct {
	Verdict uint8
	Rule    []byte
	Key     []byte // nil: none
	RxText  []byte
	RxNs    int64
	Value   []byte
	// Meta (nil: not asked for or unknown).
	Src, Queue, RxTime []byte
}

// Parse splits the keyed record b (one record of a slab, header
// included) into its parts. The worker wrote it, so it is well formed.
func Parse(b []byte, r *Record) {
	rl := int(binary.LittleEndian.Uint16(b[2:]))
	kl := int(binary.LittleEndian.Uint16(b[4:]))
	tl := int(b[6])
	sl, ql, tt := int(b[1]), int(b[7]&0x7f), 0
	if b[7]&0x80 != 0 {
		tt = len(RxTimeLayout)
	}
	r.Verdict = b[0]
	r.RxNs = int64(binary.LittleEndian.Uint64(b[8:]))
	p := HeaderLen
	r.Rule = b[p : p+rl : p+rl]
	p += rl
	r.Key = nil
	if kl > 0 {
		r.Key = b[p : p+kl : p+kl]
	}
	p += kl
	r.RxText = b[p : p+tl : p+tl]
	p += tl
	r.Src, r.Queue, r.RxTime = nil, nil, nil
	if sl > 0 {
		r.Src = b[p : p+sl : p+sl]
	}
	p += sl
	if ql > 0 {
		r.Queue = b[p : p+ql : p+ql]
	}
	p += ql
	if tt > 0 {
		r.RxTime = b[p : p+tt : p+tt]
	}
	p += tt
	r.Value = b[p:len(b):len(b)]
}
