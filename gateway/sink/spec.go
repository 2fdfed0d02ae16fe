package sink

// The sink configuration: one Spec per sink, as the config file's sinks:
// entries say it (the YAML decoder fills a Spec directly), one validator
// (Check) and one function that fills in the defaults (Spec.WithDefaults).
// What belongs to one sink type — its keys, checks and defaults — lives in
// that type's file (file.go, udp.go) or package (gateway/sink/kafka,
// gateway/sink/nats); this file has what every sink, or every keyed sink,
// shares.

import (
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/kafka"
	"github.com/xgate/xgate/gateway/sink/nats"
	"github.com/xgate/xgate/gateway/sink/output"
	"github.com/xgate/xgate/gateway/sink/spool"
)

// Spec configures one sink. Zero values take the defaults (WithDefaults).
// The comments give each field's config key; a field without one is set
// only by code.
type Spec struct {
	// Name (name) labels the sink in metrics, logs and /status
	// (xgate_sink_records_total{sink="<name>"}): letters, digits, '_', '-'
	// and '.', at most 64, unique among the sinks. Empty: derived from
	// the sink ("file:<path>", "stdout", "udp:<address>", "kafka:<topic>",
	// "nats:<subject>").
	Name string
	Type string // type: "file" | "stdout" | "udp" | "kafka" | "nats"
	// What (what) selects the records: "passed" (verdict pass or alert: an
	// alerted event passes), "alerts" (alert), "dropped" (drop and block),
	// "rejects" (decode errors), "all", or "routed" (none by verdict: only
	// the events of rules whose to: names this sink). Besides what selects,
	// a sink gets every event whose deciding rule names it in to:
	// (Sinks.SetRoutes), once. "aggregates" selects the window aggregates
	// of rules with emit (aggregate.go), and no event.
	What string
	// Meta (meta: {src: true, rx_time: true, …}) adds metadata to the
	// records: fields of JSON records, headers of Kafka and NATS records
	// (meta.go). GatewayID names the gateway for meta.gateway_id too.
	Meta MetaSpec
	// Reserved are the field names the configuration's enrich: may add to
	// an event (not a key of the sink: the config fills it in). An event's
	// own top-level members of those names are cut out of its records
	// (reserved.go), as are those named like a wanted meta field.
	Reserved []string
	// Format (no config key): "raw" (the original bytes plus '\n'; default
	// for passed) or "annotated" (default otherwise), one JSON object per
	// line:
	//	{"verdict":"alert","rule":"big-payment","value":51234.5,"event":{…}}
	//	{"verdict":"block","rule":"flood","value":0,"block_ms":30000,"event":{…}}
	//	{"error":"invalid_json","raw":"<the bytes as a JSON string>"}
	// Raw records are one line each: an event that spanned lines is
	// compacted (the same JSON), a reject has its CR and LF escaped.
	// In annotated events, newlines between the tokens of a pretty-printed
	// object become spaces, so each record is one line. A reject's raw
	// string keeps at most the first 4 KiB of the input (then
	// "truncated":true); invalid UTF-8 becomes U+FFFD. UDP sinks send the
	// same records without the trailing newline, one per datagram.
	Format string

	Path string // path (file): the file to append to
	// Fsync (fsync; file): "never", "interval" (default: when something
	// was written and the interval, default 1s, has passed since the last
	// fsync), "interval <duration>" (e.g. "interval 250ms") or "always"
	// (after every round of writes). Close fsyncs unless "never".
	Fsync string
	// RotateBytes (rotate_bytes; file): before a write that would take the
	// file past this size, Path becomes Path.1 (Path.1 becomes Path.2 …,
	// keeping RotateKeep old files). Records are never split across files;
	// a record larger than RotateBytes gets a file of its own. 0 = never
	// rotate; else at least 4 KiB.
	RotateBytes int64
	RotateKeep  int // no config key; file: default 5

	Address string // address (udp): host:port to forward to

	// OnFull (on_full): "drop" (default: count and drop the record) or
	// "block" (backpressure: the worker waits up to BlockTimeout for the
	// writer, then drops and counts; after such a timeout it drops without
	// waiting until the writer hands a slab back, so a stuck sink costs a
	// worker one BlockTimeout, not one per record).
	OnFull       string
	BlockTimeout time.Duration // no config key; default 100ms
	// Buffer (buffer) is the bytes of slab memory per worker for this sink
	// (8 KiB .. 1 GiB; default 1 MiB, 32 MiB for kafka and nats): the bound
	// on memory. A record larger than one slab (64 KiB, or Buffer/2 when
	// Buffer is below 128 KiB) is dropped and counted in TooBig. For Kafka
	// and NATS sinks it bounds the records waiting for the broker too
	// (queued and in flight).
	Buffer int64

	// Kafka and NATS sinks (keyed records; Format does not apply: the
	// value is always the original event bytes).
	//
	// KeyPath (no config key: the config copies schema.key) is the
	// schema's key field (a path as in the schema, e.g. "user_id");
	// required. GatewayID (gateway_id) names this gateway in the records'
	// "gateway" header (default: the host name). DeliveryTimeout
	// (delivery_timeout) is how long a record is retried (broker down, no
	// leader, no ack) before it counts as Failed (at least 1s, default 30s).
	KeyPath         string
	GatewayID       string
	DeliveryTimeout time.Duration
	TLS             TLS          // tls
	Kafka           kafka.Config // type kafka: its keys are the sink's (brokers, topic, …)
	NATS            nats.Config  // type nats: its keys are the sink's (urls, subject, …)

	// Spool (spool: {path, max_bytes, fsync}; kafka and nats) is the
	// sink's disk spool (gateway/sink/spool); off when Path is empty.
	Spool spool.Config
}

// SpecError is one problem of one sink's Spec: Index is its position in
// the slice given to Check or New (0-based), Key the offending key as in
// the config file ("what", "on_full", "sasl.mechanism", …), Msg what is
// wrong and what to write instead.
type SpecError struct {
	Index int
	Key   string
	Msg   string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("sinks[%d].%s: %s", e.Index, e.Key, e.Msg)
}

// Defaults every sink type shares (the types' own are in their files).
const (
	defaultBuffer       = 1 << 20 // file, stdout, udp
	minBuffer           = 8 << 10
	maxBuffer           = 1 << 30
	defaultBlockTimeout = 100 * time.Millisecond
	// defaultKeyedBuffer is the default buffer of kafka and nats sinks:
	// their records hold slab memory until acknowledged, so a sink needs
	// room for rate × (linger + round trip); TestSinkGatewayThroughput
	// measures it (BENCHMARKS.md, "Why the defaults").
	defaultKeyedBuffer = 32 << 20
	defaultDelivery    = 30 * time.Second // kafka, nats
)

// kind is what one sink type adds to the shared checks and defaults.
type kind struct {
	name string
	// keys are the keys of this type that no other type has.
	keys []typeKey
	// check returns the type's first problem (later ones often follow
	// from it), key "" for none; given reports whether the config file set
	// a key (see Check).
	check func(sp *Spec, given func(string) bool) (key, msg string)
	// defaults fills in the type's defaults (after the shared ones).
	defaults func(sp *Spec)
}

// kinds are the sink types, in the order their problems are reported.
var kinds = []kind{
	{"file", fileKeys, checkFile, fileDefaults},
	{"stdout", nil, nil, nil},
	{"udp", udpKeys, checkUDP, nil},
	{"kafka", typeKeys(kafka.Keys, func(sp *Spec) *kafka.Config { return &sp.Kafka }), checkKafka, kafkaDefaults},
	{"nats", typeKeys(nats.Keys, func(sp *Spec) *nats.Config { return &sp.NATS }), checkNATS, natsDefaults},
}

// checkKafka checks sp.Kafka, then sp.TLS.
func checkKafka(sp *Spec, given func(string) bool) (key, msg string) {
	if key, msg = kafka.Check(&sp.Kafka, given); key != "" {
		return key, msg
	}
	return checkTLS(sp.TLS)
}

// kafkaDefaults fills in sp.Kafka's defaults (after sp.GatewayID's).
func kafkaDefaults(sp *Spec) { kafka.Defaults(&sp.Kafka, sp.GatewayID) }

// checkNATS checks sp.NATS, then sp.TLS.
func checkNATS(sp *Spec, given func(string) bool) (key, msg string) {
	if key, msg = nats.Check(&sp.NATS, given); key != "" {
		return key, msg
	}
	return checkTLS(sp.TLS)
}

func natsDefaults(sp *Spec) { nats.Defaults(&sp.NATS) }

// kindOf returns the kind of sink type typ.
func kindOf(typ string) (kind, bool) {
	i := slices.IndexFunc(kinds, func(k kind) bool { return k.name == typ })
	if i < 0 {
		return kind{}, false
	}
	return kinds[i], true
}

// typeKey is a key that only some sink types have.
type typeKey struct {
	key string
	// msg is the problem when another type has it; "" for "only <owners>
	// sinks have <key>".
	msg string
	set func(sp *Spec) bool // whether sp sets it (to a non-zero value)
}

// typeKeys are the keys of an output's package (C: its Config, which
// of(sp) is) as the sink's checks want them.
func typeKeys[C any](keys []output.Key[C], of func(sp *Spec) *C) []typeKey {
	tks := make([]typeKey, len(keys))
	for i, k := range keys {
		tks[i] = typeKey{key: k.Name, set: func(sp *Spec) bool { return k.Set(of(sp)) }}
	}
	return tks
}

// keyedKeys are the keys only kafka and nats sinks have.
var keyedKeys = []typeKey{
	{"key_path", "", func(sp *Spec) bool { return sp.KeyPath != "" }},
	{"delivery_timeout", "", func(sp *Spec) bool { return sp.DeliveryTimeout != 0 }},
	{"tls", "", func(sp *Spec) bool { return sp.TLS.On() }},
	{"spool", "", func(sp *Spec) bool { return sp.Spool.On() }},
}

// keyed reports whether the sink writes keyed records (kafka, nats).
func (sp *Spec) keyed() bool { return sp.Type == "kafka" || sp.Type == "nats" }

// Check returns every problem of specs, in order: each sink's and those
// between them (two file sinks on one path). given, when not nil, reports
// whether the config file set key of sinks[i]: a key set to zero is then a
// problem where zero would otherwise mean "the default" (linger: 0s), and
// a key of another sink type is one even when its value is zero. With
// given nil, only the values count.
//
// Of the keys of the sink's own type (brokers, subject, …) Check reports
// the first problem; of the rest, every one.
func Check(specs []Spec, given func(i int, key string) bool) []*SpecError {
	var errs []*SpecError
	paths := map[string]int{}
	names := map[string]int{}
	spools := map[string]int{}
	for i := range specs {
		sp := &specs[i]
		add := func(key, format string, args ...any) {
			errs = append(errs, &SpecError{i, key, fmt.Sprintf(format, args...)})
		}
		sp.check(func(key string) bool { return given != nil && given(i, key) }, add)
		if sp.Name != "" {
			if !validName(sp.Name) {
				add("name", "%q: want letters, digits, '_', '-' or '.', at most 64", sp.Name)
			} else if j, dup := names[sp.Name]; dup {
				add("name", "%q is also the name of sinks[%d]; names label the metrics and must differ", sp.Name, j)
			} else {
				names[sp.Name] = i
			}
		}
		if p := sp.Spool.Path; sp.keyed() && p != "" {
			if j, dup := spools[p]; dup {
				add("spool.path", "%q is also the spool of sinks[%d]; each sink needs a spool directory of its own", p, j)
			} else {
				spools[p] = i
			}
		}
		if sp.Type == "file" && sp.Path != "" {
			if j, dup := paths[sp.Path]; dup {
				add("path", "%q is also the path of sinks[%d]; two sinks cannot share a file", sp.Path, j)
			} else {
				paths[sp.Path] = i
			}
		}
	}
	return errs
}

func (sp *Spec) check(given func(string) bool, add func(key, format string, args ...any)) {
	k, known := kindOf(sp.Type)
	switch {
	case sp.Type == "":
		add("type", "missing: want file, stdout, udp, kafka or nats")
	case !known:
		add("type", "%q: want file, stdout, udp, kafka or nats", sp.Type)
	}
	switch sp.What {
	case "passed", "alerts", "dropped", "rejects", "all", "routed", "aggregates":
	case "":
		add("what", "missing: want passed, alerts, dropped, rejects, all, routed or aggregates")
	default:
		add("what", "%q: want passed, alerts, dropped, rejects, all, routed or aggregates", sp.What)
	}
	// gateway_id names the gateway in keyed records (checkKeyed) and in
	// meta.gateway_id.
	switch {
	case sp.keyed():
	case (sp.GatewayID != "" || given("gateway_id")) && !sp.Meta.GatewayID && sp.What != "aggregates":
		add("gateway_id", "only kafka and nats sinks, and sinks with meta.gateway_id or what: aggregates, have gateway_id")
	case sp.GatewayID != "":
		if err := ValidGatewayID(sp.GatewayID); err != nil {
			add("gateway_id", "%v", err)
		}
	}
	foreign := false
	if known {
		foreign = sp.checkForeign(given, add)
	}
	if sp.keyed() {
		sp.checkKeyed(given, add)
	}
	// A key of another type suggests a wrong type: the type's own
	// problems would only add noise.
	if known && !foreign && k.check != nil {
		if key, msg := k.check(sp, given); key != "" {
			add(key, "%s", msg)
		}
	}
	switch {
	case sp.keyed():
		if sp.Format != "" {
			add("format", "kafka and nats sinks send the original event bytes (verdict and rule go in headers): leave format out")
		}
	case sp.Format == "", sp.Format == "raw", sp.Format == "annotated":
	default:
		add("format", "%q: want raw or annotated", sp.Format)
	}
	switch sp.OnFull {
	case "drop", "block":
	case "":
		if !given("on_full") {
			break
		}
		fallthrough
	default:
		add("on_full", "%q: want drop (count and drop events) or block (backpressure)", sp.OnFull)
	}
	if sp.BlockTimeout < 0 {
		add("block_timeout", "%v: want a positive duration", sp.BlockTimeout)
	}
	if sp.Buffer != 0 && (sp.Buffer < minBuffer || sp.Buffer > maxBuffer) {
		add("buffer", "%d: want a size in 8KiB..1GiB", sp.Buffer)
	}
}

// checkForeign reports every key of another sink type that sp sets.
func (sp *Spec) checkForeign(given func(string) bool, add func(key, format string, args ...any)) bool {
	found := false
	report := func(owners string, keys []typeKey) {
		for _, tk := range keys {
			if !tk.set(sp) && !given(tk.key) {
				continue
			}
			if tk.msg != "" {
				add(tk.key, "%s", tk.msg)
			} else {
				add(tk.key, "only %s sinks have %s", owners, tk.key)
			}
			found = true
		}
	}
	for _, k := range kinds {
		if k.name != sp.Type {
			report(k.name, k.keys)
		}
	}
	if !sp.keyed() {
		report("kafka and nats", keyedKeys)
	}
	return found
}

// checkKeyed checks what kafka and nats sinks share.
func (sp *Spec) checkKeyed(given func(string) bool, add func(key, format string, args ...any)) {
	switch {
	case sp.KeyPath == "":
		add("key_path", "missing: want the schema's key field, e.g. user_id")
	case engine.ValidPath(sp.KeyPath) != nil:
		add("key_path", "%v: want the schema's key field, e.g. user_id", engine.ValidPath(sp.KeyPath))
	}
	if sp.GatewayID != "" {
		if err := ValidGatewayID(sp.GatewayID); err != nil {
			add("gateway_id", "%v", err)
		}
	}
	if d := sp.DeliveryTimeout; d < 0 || (d != 0 || given("delivery_timeout")) && d < time.Second {
		add("delivery_timeout", "%v: want at least 1s (default %v)", d, defaultDelivery)
	}
	if key, msg := sp.Spool.Check(); key != "" {
		add(key, "%s", msg)
	}
}

// WithDefaults returns sp with every unset field at its default. It
// expects a spec that Check accepts.
func (sp Spec) WithDefaults() Spec {
	if sp.OnFull == "" {
		sp.OnFull = "drop"
	}
	if sp.BlockTimeout == 0 {
		sp.BlockTimeout = defaultBlockTimeout
	}
	switch {
	case sp.Buffer != 0:
	case sp.keyed():
		sp.Buffer = defaultKeyedBuffer
	default:
		sp.Buffer = defaultBuffer
	}
	if (sp.keyed() || sp.Meta.GatewayID || sp.What == "aggregates") && sp.GatewayID == "" {
		sp.GatewayID = defaultGatewayID()
	}
	switch {
	case sp.keyed():
		if sp.DeliveryTimeout == 0 {
			sp.DeliveryTimeout = defaultDelivery
		}
	case sp.Format != "":
	case sp.What == "passed":
		sp.Format = "raw"
	default:
		sp.Format = "annotated"
	}
	if k, _ := kindOf(sp.Type); k.defaults != nil {
		k.defaults(&sp)
	}
	if sp.keyed() {
		sp.Spool = sp.Spool.WithDefaults()
	}
	return sp
}

// defaultGatewayID is the host name ("xgate" if there is none).
func defaultGatewayID() string {
	if h, err := os.Hostname(); err == nil && ValidGatewayID(h) == nil {
		return h
	}
	return "xgate"
}

// ValidGatewayID checks a gateway id (a sink's gateway_id, or the config's
// default for them): it goes into headers and NATS message ids, so it is
// printable ASCII without spaces, at most 128 bytes.
func ValidGatewayID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%q: want 1..128 characters", id)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%q: want printable ASCII without spaces", id)
		}
	}
	return nil
}

// validName says whether name may name a sink: a Prometheus label value
// that reads well in logs and needs no quoting.
func validName(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// Label is the sink's name: Name, or one derived from what it writes to.
func (sp *Spec) Label() string {
	switch {
	case sp.Name != "":
		return sp.Name
	case sp.Type == "file":
		return "file:" + sp.Path
	case sp.Type == "udp":
		return "udp:" + sp.Address
	case sp.Type == "kafka":
		return "kafka:" + sp.Kafka.Topic
	case sp.Type == "nats":
		return "nats:" + sp.NATS.Subject
	}
	return sp.Type
}
