package sink

// Event metadata on records (a sink's meta: key) and routing by rule (the
// rules' to: key). What the worker knows of an event besides its bytes —
// where the datagram came from, when and on which queue it arrived — comes
// in an Origin; which fields a sink adds is its MetaSpec.
//
// JSON records (file, stdout, udp). The fields are named "_" + the meta
// key:
//
//	"_src":"198.18.0.2:40000"          sender address and port ([v6]:port)
//	"_rx_time":"2026-01-02T03:04:05.123456789Z"
//	                                   receive time, UTC, always 9 digits
//	"_queue":3                         RX queue (afxdp) or socket (socket,
//	                                   plain) of the worker that decided it
//	"_gateway_id":"gw-1"               the gateway id
//	"_rule":"big-payment"              the deciding rule ("" when none fired)
//	"_verdict":"alert"                 pass | alert | drop | block
//
// A raw record (the event itself) gets them appended as members of the
// event's top-level object, in that order, and is written compact on one
// line. The names are the gateway's: a member of the same name the event
// itself carried is cut out of the record (reserved.go; Stats.Replaced), so
// a sender cannot forge or push aside the source, rule or verdict a
// consumer reads. An annotated record gets src, rx_time, queue and
// gateway_id beside "verdict" and "rule" (which it always has), before
// "event", where the event cannot reach them; an annotated reject gets
// them after "raw". A raw reject is not JSON and gets none. A field whose
// value is unknown (a datagram without a source, a queue of a code path
// that has none) is left out.
//
// Keyed records (kafka, nats) always carry the headers verdict, rule,
// gateway and rx_ns; meta adds "src", "queue" and "rx_time" (the texts
// above) as headers. The value stays the original event bytes.
//
// Nothing here allocates per event: the values are appended into the
// slab, the clash check scans the event's bytes in place.

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/output"
)

// MetaSpec (meta) selects the metadata a sink adds to its records; see the
// field list above.
type MetaSpec struct {
	Src       bool // src
	RxTime    bool // rx_time
	Queue     bool // queue
	GatewayID bool // gateway_id: the sink's gateway_id, else the config's, else the host name
	Rule      bool // rule
	Verdict   bool // verdict
}

// On reports whether any field is selected.
func (m MetaSpec) On() bool { return m != MetaSpec{} }

// Origin is what the worker knows of an event's datagram besides its bytes.
type Origin struct {
	Src   netip.AddrPort // the sender; invalid: unknown
	RxNs  uint64         // the XDP receive timestamp (CLOCK_MONOTONIC ns); 0: none
	Queue int            // the worker's RX queue or socket; < 0: unknown
}

// Meta field indexes, in the order the fields are written.
const (
	metaSrc = iota
	metaRxTime
	metaQueue
	metaGateway
	metaRule
	metaVerdict
	numMeta
)

// metaNames are the meta keys; a JSON field is "_" + its key.
var metaNames = [numMeta]string{"src", "rx_time", "queue", "gateway_id", "rule", "verdict"}

// IsMetaField reports whether name is the JSON name of a meta field ("_"
// + a meta key): the configuration lets no added field take one.
func IsMetaField(name string) bool {
	key, ok := strings.CutPrefix(name, "_")
	return ok && slices.Contains(metaNames[:], key)
}

func (m MetaSpec) bits() (b [numMeta]bool) {
	return [numMeta]bool{m.Src, m.RxTime, m.Queue, m.GatewayID, m.Rule, m.Verdict}
}

// appendRxTime appends the receive time (ns since the Unix epoch) as
// output.RxTimeLayout. A UTC time formats without allocating.
func appendRxTime(b []byte, ns int64) []byte {
	return time.Unix(0, ns).UTC().AppendFormat(b, output.RxTimeLayout)
}

// metaBound bounds what the meta fields of one record add.
func (sk *sink) metaBound(d *engine.Decision) int {
	if !sk.metaOn {
		return 0
	}
	// Per field at most ',"_' + name + '":' (~20, 90 leaves room), plus the
	// values: src 2+47, time 32, queue 20, verdict 8, and the escaped
	// gateway id and rule.
	return numMeta*90 + 120 + 6*(len(sk.gwJSON)+len(d.Rule)) + 4
}

// recOrigin is an Origin with the receive time resolved (ns since the
// Unix epoch; 0 when the sink needs none).
type recOrigin struct {
	o      *Origin
	rxWall int64
}

// appendMetaFields appends ,"_<name>":<value> for each field of sk's meta
// that want selects (want[i]) and whose value is known.
func (sk *sink) appendMetaFields(b []byte, d *engine.Decision, c uint8, ro *recOrigin, want *[numMeta]bool) []byte {
	o := ro.o
	for i := range numMeta {
		if !want[i] {
			continue
		}
		switch i {
		case metaSrc:
			if !o.Src.IsValid() {
				continue
			}
		case metaQueue:
			if o.Queue < 0 {
				continue
			}
		case metaRxTime:
			if ro.rxWall == 0 {
				continue
			}
		}
		b = append(b, ',', '"', '_')
		b = append(b, metaNames[i]...)
		b = append(b, '"', ':')
		switch i {
		case metaSrc:
			b = append(b, '"')
			b = o.Src.AppendTo(b)
			b = append(b, '"')
		case metaRxTime:
			b = append(b, '"')
			b = appendRxTime(b, ro.rxWall)
			b = append(b, '"')
		case metaQueue:
			b = strconv.AppendInt(b, int64(o.Queue), 10)
		case metaGateway:
			b = append(b, sk.gwJSON...)
		case metaRule:
			b = appendJSONString(b, unsafe.Slice(unsafe.StringData(d.Rule), len(d.Rule)))
		case metaVerdict:
			b = append(b, '"')
			if c == classReject {
				b = append(b, "reject"...)
			} else {
				b = append(b, d.Action.String()...)
			}
			b = append(b, '"')
		}
	}
	return b
}

// appendMetaRaw adds the meta fields to the raw record b[start:] (one
// compact line of a JSON object, the event's) before its closing brace.
// The event's own members of those names were cut out before
// (stripReserved), so the record has each name once, the gateway's. A
// record that does not end in '}' (not an object: cannot be, for a
// decoded event) is left as it is.
func (sk *sink) appendMetaRaw(b []byte, start int, d *engine.Decision, c uint8, ro *recOrigin) []byte {
	b, empty, ok := openObject(b, start)
	if !ok {
		return b
	}
	at := len(b)
	b = sk.appendMetaFields(b, d, c, ro, &sk.metaWant)
	if empty && len(b) > at {
		b = append(b[:at], b[at+1:]...) // no ',' after '{'
	}
	return append(b, '}')
}

// annotatedMeta are the fields an annotated record takes from meta (verdict
// and rule it always has).
func annotatedMeta(m [numMeta]bool) [numMeta]bool {
	m[metaRule], m[metaVerdict] = false, false
	return m
}

// unescapeKey writes the JSON string body s unescaped into dst; false when
// it does not fit or is not plain ASCII (no meta name is either).
func unescapeKey(dst, s []byte) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' {
			if i+1 >= len(s) {
				return 0, false
			}
			i++
			switch s[i] {
			case '"', '\\', '/':
				c = s[i]
			case 'u':
				if i+4 >= len(s) {
					return 0, false
				}
				v, err := strconv.ParseUint(unsafe.String(&s[i+1], 4), 16, 16)
				if err != nil || v >= utf8.RuneSelf {
					return 0, false
				}
				c = byte(v)
				i += 4
			default: // \b \f \n \r \t: in no meta name
				return 0, false
			}
		}
		if n == len(dst) || c >= utf8.RuneSelf {
			return 0, false
		}
		dst[n] = c
		n++
	}
	return n, true
}

// routeTable maps a rule name to the sinks its to: names (bit i: sinks[i]).
type routeTable struct {
	byRule map[string]uint64
}

// maxRouted is how many sinks (the first ones) rules can route to.
const maxRouted = 64

// Routes checks routes (rule name → the sink names, Spec.Label, its to:
// lists) against the sinks and returns the table SetRoutes takes.
func (s *Sinks) Routes(routes map[string][]string) (*RouteTable, error) {
	byLabel := map[string]int{}
	for i, sk := range s.sinks {
		byLabel[sk.name] = i
	}
	t := &routeTable{byRule: map[string]uint64{}}
	for rule, names := range routes {
		for _, n := range names {
			i, ok := byLabel[n]
			switch {
			case !ok:
				return nil, &RouteError{Rule: rule, Sink: n, Msg: "no such sink"}
			case i >= maxRouted:
				return nil, &RouteError{Rule: rule, Sink: n, Msg: "only the first 64 sinks can be routed to"}
			}
			t.byRule[rule] |= 1 << i
		}
	}
	return (*RouteTable)(t), nil
}

// RouteTable is a checked set of routes (Sinks.Routes).
type RouteTable routeTable

// RouteError is a to: entry that names no routable sink.
type RouteError struct {
	Rule, Sink, Msg string
}

func (e *RouteError) Error() string {
	return "rule " + strconv.Quote(e.Rule) + ": to " + strconv.Quote(e.Sink) + ": " + e.Msg
}

// SetRoutes makes t the routing by rule: from the next record on, an
// event whose deciding rule is in t also goes to that rule's sinks,
// whatever their what: (once per sink). nil routes nothing by rule.
func (s *Sinks) SetRoutes(t *RouteTable) { s.routes.Store((*routeTable)(t)) }

// routeSet is the Sinks' current routeTable, shared with the Writers.
type routeSet = atomic.Pointer[routeTable]

// routedTo returns the sinks d's deciding rule routes to.
func (w *Writer) routedTo(d *engine.Decision) uint64 {
	if d.Rule == "" || d.Err != engine.DecodeOK {
		return 0
	}
	t := w.routes.Load()
	if t == nil || len(t.byRule) == 0 {
		return 0
	}
	return t.byRule[d.Rule]
}
