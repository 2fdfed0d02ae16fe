package sink

// Aggregate records: the window aggregates of rules with emit (engine
// emit.go) go to the sinks of what: aggregates, and to no other (an event
// stream keeps one shape; routing by to: moves events, not aggregates).
//
// A record is one compact JSON object:
//
//	{"type":"aggregate","rule":"velocity","key":"u1","agg":"sum(amount)",
//	 "value":1234.5,"window_start":"2026-01-02T03:04:00.000000000Z",
//	 "window_end":"2026-01-02T03:05:00.000000000Z","gateway_id":"gw-1"}
//
// plus "key_truncated":true when the key was cut to the window's
// max_key_bytes. Times are UTC with nine fraction digits. every_slide
// records cover [window_start, window_end); on_alert records cover
// [window_start, window_end] with window_end the deciding event's time.
//
// File, stdout and UDP sinks write the object as a line (a datagram). For
// Kafka and NATS it is the value of a keyed record whose key is the window
// key (the Kafka record key, the NATS subject's {key}), whose verdict (the
// verdict header, the subject's {verdict}) is "aggregate" and whose rule
// is the window rule; the other headers are as for events.
//
// Who adds them: a worker adds its on_alert aggregates with its own Writer
// (Writer.AddAggregate, no allocation, like Add); the gateway's emitter
// goroutine adds every_slide aggregates with Sinks.EmitWriter, a Writer of
// its own whose slab pool exists only in sinks of aggregates. Either way a
// full sink applies its on_full policy and counts, as for any record.

import (
	"encoding/binary"
	"strconv"
	"unsafe"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/output"
)

// EmitWriter returns the Writer of the gateway's emitter goroutine (every_slide
// aggregates); it has slabs only in sinks of what: aggregates.
func (s *Sinks) EmitWriter() *Writer { return s.writers[len(s.writers)-1] }

// WantsAggregates reports whether any sink takes aggregate records.
func (s *Sinks) WantsAggregates() bool {
	for _, sk := range s.sinks {
		if sk.classes&classAggregate != 0 {
			return true
		}
	}
	return false
}

// AddAggregate encodes a for every sink of aggregates, copying what it
// keeps (a's views may be reused as soon as it returns). Like Add it does
// not allocate and blocks only for sinks with on_full: block.
func (w *Writer) AddAggregate(a *engine.Aggregate) {
	var rxWall int64 // read once, by the first keyed sink
	for i, sk := range w.sinks {
		if sk.classes&classAggregate == 0 {
			continue
		}
		need := aggregateBound(sk, a)
		if sk.keyed {
			need += output.HeaderLen + len(a.Rule) + len(a.Key) + 20
		}
		sl := w.slabFor(i, sk, need)
		if sl == nil {
			continue
		}
		if sk.keyed {
			if rxWall == 0 {
				rxWall = w.rxWall(0)
			}
			sl.buf = sk.encodeKeyedAggregate(sl.buf, a, rxWall)
		} else {
			sl.buf = sk.encodeAggregate(sl.buf, a)
			if sk.newline {
				sl.buf = append(sl.buf, '\n')
			}
		}
		sl.ends = append(sl.ends, uint32(len(sl.buf)))
	}
}

// aggregateBound bounds what encodeAggregate appends (plus a newline).
func aggregateBound(sk *sink, a *engine.Aggregate) int {
	// The names and punctuation are 130 bytes, the two times 60, the
	// value 26, key_truncated 21.
	return 240 + 6*(len(a.Rule)+len(a.Key)+len(a.Agg)) + len(sk.gwJSON)
}

// encodeAggregate appends a as the record's JSON object.
func (sk *sink) encodeAggregate(b []byte, a *engine.Aggregate) []byte {
	b = append(b, `{"type":"aggregate","rule":`...)
	b = appendJSONString(b, unsafe.Slice(unsafe.StringData(a.Rule), len(a.Rule)))
	b = append(b, `,"key":`...)
	b = appendJSONString(b, unsafe.Slice(unsafe.StringData(a.Key), len(a.Key)))
	if a.Truncated {
		b = append(b, `,"key_truncated":true`...)
	}
	b = append(b, `,"agg":`...)
	b = appendJSONString(b, unsafe.Slice(unsafe.StringData(a.Agg), len(a.Agg)))
	b = append(b, `,"value":`...)
	b = appendJSONFloat(b, a.Value)
	b = append(b, `,"window_start":"`...)
	b = appendRxTime(b, a.Start)
	b = append(b, `","window_end":"`...)
	b = appendRxTime(b, a.End)
	b = append(b, '"')
	if len(sk.gwJSON) > 0 {
		b = append(b, `,"gateway_id":`...)
		b = append(b, sk.gwJSON...)
	}
	return append(b, '}')
}

// encodeKeyedAggregate appends a as a keyed record (output.HeaderLen's
// layout): verdict output.VerdictAggregate, the rule, the window key, the
// emit time, and the JSON object as the value.
func (sk *sink) encodeKeyedAggregate(b []byte, a *engine.Aggregate, now int64) []byte {
	at := len(b)
	b = b[:at+output.HeaderLen]
	b = append(b, a.Rule...)
	b = append(b, a.Key...)
	t := len(b)
	b = strconv.AppendInt(b, now, 10)
	tl := len(b) - t
	b = sk.encodeAggregate(b, a)
	h := b[at : at+output.HeaderLen]
	h[0], h[1] = output.VerdictAggregate, 0
	binary.LittleEndian.PutUint16(h[2:], uint16(len(a.Rule)))
	binary.LittleEndian.PutUint16(h[4:], uint16(len(a.Key)))
	h[6], h[7] = uint8(tl), 0
	binary.LittleEndian.PutUint64(h[8:], uint64(now))
	return b
}
