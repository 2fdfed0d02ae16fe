package kafka

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/xgate/xgate/gateway/sink/output"
)

// Config configures a Kafka sink (the sink's Spec.Kafka). Zero values take
// the defaults (Defaults). Its config keys are the sink's own: brokers,
// topic, client_id, acks, idempotent, compression, linger,
// batch_max_bytes, create_topic, partitions, sasl.
type Config struct {
	Brokers  []string // host:port of one or more seed brokers; required
	Topic    string   // required; must exist unless CreateTopic
	ClientID string   // default "xgate-" + the gateway id
	// Acks: "all" (default: every in-sync replica has the record), "leader"
	// or "none". The idempotent producer needs "all".
	Acks string
	// NoIdempotence turns the idempotent producer off (config:
	// idempotent: false). Idempotence makes the producer's retries free of
	// duplicates and keeps order per partition; it needs acks all.
	NoIdempotence bool
	// Compression of record batches: "lz4" (default), "zstd", "snappy",
	// "gzip" or "none". lz4 because the gateway's CPU is the scarce thing
	// (its workers decide events on the same cores): it is the cheapest
	// codec per byte and still shrinks JSON events a few times; zstd
	// shrinks them more for more CPU, worth it when the network or the
	// brokers' disks are the limit (BENCHMARKS.md, "Why the defaults").
	Compression string
	// Linger is how long a partition's batch waits for more records
	// before it is sent (default 5ms, Kafka 4's linger.ms): bigger
	// batches compress better and cost the brokers less, and at low rates
	// it bounds the added latency. Not longer (franz-go's default is
	// 10ms) because a record holds its share of the sink's buffer until
	// it is acknowledged: the records in flight are bounded by the buffer,
	// so the throughput is about buffer / (linger + round trip). With a
	// buffer large enough not to be the bound, a longer linger is a
	// little cheaper (fewer, larger requests); figures in BENCHMARKS.md,
	// "Why the defaults".
	Linger time.Duration
	// BatchMaxBytes is the largest record batch (default 1000012 bytes,
	// Kafka's default max.message.bytes: larger batches need the topic's
	// max.message.bytes raised).
	BatchMaxBytes int
	// CreateTopic creates Topic at start when it does not exist, with
	// Partitions partitions (0: the broker's num.partitions) and the
	// broker's default replication factor. Off by default: a missing
	// topic is an error at start.
	CreateTopic bool
	Partitions  int
	SASL        SASL
}

// SASL (sasl: mechanism, user, password, password_file) is SASL
// authentication to Kafka.
type SASL struct {
	Mechanism    string // PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
	User         string
	Password     string // or PasswordFile (its first line)
	PasswordFile string
}

const (
	kafkaDefaultAcks        = "all"
	kafkaDefaultCompression = "lz4"
	kafkaDefaultLinger      = 5 * time.Millisecond
	kafkaDefaultBatchBytes  = 1000012
)

// Keys are the keys only kafka sinks have.
var Keys = []output.Key[Config]{
	{Name: "brokers", Set: func(k *Config) bool { return len(k.Brokers) > 0 }},
	{Name: "topic", Set: func(k *Config) bool { return k.Topic != "" }},
	{Name: "client_id", Set: func(k *Config) bool { return k.ClientID != "" }},
	{Name: "acks", Set: func(k *Config) bool { return k.Acks != "" }},
	{Name: "idempotent", Set: func(k *Config) bool { return k.NoIdempotence }},
	{Name: "compression", Set: func(k *Config) bool { return k.Compression != "" }},
	{Name: "linger", Set: func(k *Config) bool { return k.Linger != 0 }},
	{Name: "batch_max_bytes", Set: func(k *Config) bool { return k.BatchMaxBytes != 0 }},
	{Name: "create_topic", Set: func(k *Config) bool { return k.CreateTopic }},
	{Name: "partitions", Set: func(k *Config) bool { return k.Partitions != 0 }},
	{Name: "sasl", Set: func(k *Config) bool { return k.SASL != SASL{} }},
}

// Check checks k (the sink checks its tls): the first problem, as the
// config key and the message. given reports whether the config file set
// a key (see the sink's Check): linger: 0s is a problem, no linger is not.
func Check(k *Config, given func(string) bool) (key, msg string) {
	if len(k.Brokers) == 0 {
		return "brokers", "missing: want host:port of at least one broker"
	}
	for _, b := range k.Brokers {
		if err := checkHostPort(b); err != nil {
			return "brokers", err.Error()
		}
	}
	if err := validTopic(k.Topic); err != nil {
		return "topic", err.Error()
	}
	acks := cmp.Or(k.Acks, kafkaDefaultAcks)
	switch acks {
	case "all", "leader", "none":
	default:
		return "acks", fmt.Sprintf("%q: want all, leader or none", k.Acks)
	}
	if !k.NoIdempotence && acks != "all" {
		return "idempotent", fmt.Sprintf("the idempotent producer needs acks: all (acks is %s); set idempotent: false to use it", acks)
	}
	switch k.Compression {
	case "", "lz4", "zstd", "snappy", "gzip", "none":
	default:
		return "compression", fmt.Sprintf("%q: want lz4, zstd, snappy, gzip or none", k.Compression)
	}
	if k.Linger < 0 || k.Linger > time.Minute || k.Linger == 0 && given("linger") {
		return "linger", fmt.Sprintf("%v: want a positive duration up to 1m (default %v)", k.Linger, kafkaDefaultLinger)
	}
	if b := k.BatchMaxBytes; b != 0 && (b < 1<<10 || b > 64<<20) {
		return "batch_max_bytes", fmt.Sprintf("%d: want 1KiB..64MiB", b)
	}
	if k.Partitions < 0 || k.Partitions > 1<<20 {
		return "partitions", fmt.Sprintf("%d: want a partition count (0: the broker's default)", k.Partitions)
	}
	if k.Partitions != 0 && !k.CreateTopic {
		return "partitions", "only with create_topic: true (xgate does not change an existing topic)"
	}
	return checkSASL(k.SASL)
}

// Defaults fills in k's defaults; gatewayID is the sink's (after its own
// default).
func Defaults(k *Config, gatewayID string) {
	if k.ClientID == "" {
		k.ClientID = "xgate-" + gatewayID
	}
	k.Acks = cmp.Or(k.Acks, kafkaDefaultAcks)
	k.Compression = cmp.Or(k.Compression, kafkaDefaultCompression)
	k.Linger = cmp.Or(k.Linger, kafkaDefaultLinger)
	k.BatchMaxBytes = cmp.Or(k.BatchMaxBytes, kafkaDefaultBatchBytes)
}

func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return fmt.Errorf("%q: want host:port", a)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port %q is not in 1..65535", a, port)
	}
	return nil
}

// validTopic checks a Kafka topic name as the brokers do.
func validTopic(t string) error {
	if t == "" {
		return errors.New("missing: want the topic to produce to")
	}
	if len(t) > 249 || t == "." || t == ".." {
		return fmt.Errorf("%q is not a valid topic name", t)
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%q: a topic name has only letters, digits, '.', '_' and '-'", t)
		}
	}
	return nil
}

func checkSASL(s SASL) (field, msg string) {
	if s == (SASL{}) {
		return "", ""
	}
	switch s.Mechanism {
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	case "":
		return "sasl.mechanism", "missing: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
	default:
		return "sasl.mechanism", fmt.Sprintf("%q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
	}
	if s.User == "" {
		return "sasl.user", "missing: SASL needs a user"
	}
	if (s.Password == "") == (s.PasswordFile == "") {
		return "sasl.password", "want exactly one of password and password_file"
	}
	return "", ""
}
