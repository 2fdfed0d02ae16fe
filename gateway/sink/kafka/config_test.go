package kafka

import (
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/sink/output"
	"github.com/xgate/xgate/gateway/sink/sinktest"
)

// TestCheck: each config's first problem, as the config key and the
// message the config file's error carries.
func TestCheck(t *testing.T) {
	ok := func() Config { return Config{Brokers: []string{"b:9092"}, Topic: "events"} }
	for _, c := range []struct {
		name     string
		edit     func(k *Config)
		given    string // a key the config file set
		key, msg string
	}{
		{"valid", func(*Config) {}, "", "", ""},
		{"no brokers", func(k *Config) { k.Brokers = nil }, "", "brokers", "missing: want host:port of at least one broker"},
		{"broker port", func(k *Config) { k.Brokers = []string{"b:0"} }, "", "brokers", `"b:0": port "0" is not in 1..65535`},
		{"topic", func(k *Config) { k.Topic = "a/b" }, "", "topic", `"a/b": a topic name has only letters, digits, '.', '_' and '-'`},
		{"acks", func(k *Config) { k.Acks = "some" }, "", "acks", `"some": want all, leader or none`},
		{"idempotent", func(k *Config) { k.Acks = "leader" }, "", "idempotent", "the idempotent producer needs acks: all (acks is leader); set idempotent: false to use it"},
		{"linger 0 given", func(*Config) {}, "linger", "linger", "0s: want a positive duration up to 1m (default 5ms)"},
		{"partitions", func(k *Config) { k.Partitions = 3 }, "", "partitions", "only with create_topic: true (xgate does not change an existing topic)"},
		{"sasl user", func(k *Config) { k.SASL = SASL{Mechanism: "PLAIN"} }, "", "sasl.user", "missing: SASL needs a user"},
	} {
		k := ok()
		c.edit(&k)
		given := func(key string) bool { return key == c.given }
		if key, msg := Check(&k, given); key != c.key || msg != c.msg {
			t.Errorf("%s: %s: %s\nwant %s: %s", c.name, key, msg, c.key, c.msg)
		}
	}
}

func TestDefaults(t *testing.T) {
	k := Config{Brokers: []string{"b:9092"}, Topic: "events"}
	Defaults(&k, "gw-1")
	want := Config{Brokers: k.Brokers, Topic: "events", ClientID: "xgate-gw-1", Acks: "all",
		Compression: "lz4", Linger: 5 * time.Millisecond, BatchMaxBytes: 1000012}
	if !reflect.DeepEqual(k, want) {
		t.Fatalf("defaults %+v\nwant %+v", k, want)
	}
}

// TestNewUnreachable: without a spool, no broker answering is an error
// at start that names the brokers.
func TestNewUnreachable(t *testing.T) {
	defer func(d time.Duration) { kafkaStartTimeout = d }(kafkaStartTimeout)
	kafkaStartTimeout = time.Second
	addr := fmt.Sprintf("127.0.0.1:%d", sinktest.FreePort(t))
	k := Config{Brokers: []string{addr}, Topic: "events"}
	Defaults(&k, "gw-test")
	var records, bytes, errs, failed atomic.Uint64
	sk := output.Sink{Slabs: 2, SlabRecords: 512, GatewayID: "gw-test", DeliveryTimeout: time.Second,
		Counts: output.Counts{Records: &records, Bytes: &bytes, Errors: &errs, Failed: &failed}}
	if _, err := New(sk, k); err == nil || !strings.Contains(err.Error(), "kafka brokers "+addr+": ") {
		t.Fatalf("error %v", err)
	}
}
