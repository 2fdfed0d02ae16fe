package sink

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/sink/kafka"
	"github.com/xgate/xgate/gateway/sink/nats"
)

// validSpecs is one accepted spec per sink type, with only what is required.
func validSpecs() []Spec {
	return []Spec{
		{Type: "file", Path: "/tmp/xgate-spec-test", What: "passed"},
		{Type: "stdout", What: "alerts"},
		{Type: "udp", Address: "127.0.0.1:9500", What: "dropped"},
		{Type: "kafka", What: "all", KeyPath: "user_id", Kafka: kafka.Config{Brokers: []string{"b:9092"}, Topic: "t"}},
		{Type: "nats", What: "rejects", KeyPath: "user_id", NATS: nats.Config{URLs: []string{"nats://n:4222"}, Subject: "a.{key}", Stream: "S", CreateStream: true}},
	}
}

// TestSpecDefaults: every default in one place, and a defaulted spec is
// still valid and fills in nothing more.
func TestSpecDefaults(t *testing.T) {
	specs := validSpecs()
	if errs := Check(specs, nil); len(errs) != 0 {
		t.Fatalf("valid specs rejected: %v", errs)
	}
	var got []Spec
	for _, sp := range specs {
		d := sp.WithDefaults()
		if again := d.WithDefaults(); !reflect.DeepEqual(again, d) {
			t.Errorf("%s: defaults not stable:\n%+v\n%+v", sp.Type, d, again)
		}
		got = append(got, d)
	}
	if errs := Check(got, nil); len(errs) != 0 {
		t.Fatalf("defaulted specs rejected: %v", errs)
	}
	file, stdout, udp, kafka, nats := got[0], got[1], got[2], got[3], got[4]
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"file fsync", file.Fsync, "interval 1s"},
		{"file rotate_keep", file.RotateKeep, 5},
		{"file format (passed)", file.Format, "raw"},
		{"file buffer", file.Buffer, int64(1 << 20)},
		{"on_full", file.OnFull, "drop"},
		{"block timeout", file.BlockTimeout, 100 * time.Millisecond},
		{"stdout format (alerts)", stdout.Format, "annotated"},
		{"stdout fsync", stdout.Fsync, ""},
		{"stdout rotate_keep", stdout.RotateKeep, 0},
		{"udp buffer", udp.Buffer, int64(1 << 20)},
		{"kafka buffer", kafka.Buffer, int64(32 << 20)},
		{"kafka format", kafka.Format, ""},
		{"kafka delivery_timeout", kafka.DeliveryTimeout, 30 * time.Second},
		{"kafka gateway_id", kafka.GatewayID != "" && ValidGatewayID(kafka.GatewayID) == nil, true},
		{"kafka client_id", kafka.Kafka.ClientID, "xgate-" + kafka.GatewayID},
		{"kafka acks", kafka.Kafka.Acks, "all"},
		{"kafka compression", kafka.Kafka.Compression, "lz4"},
		{"kafka linger", kafka.Kafka.Linger, 5 * time.Millisecond},
		{"kafka batch_max_bytes", kafka.Kafka.BatchMaxBytes, 1000012},
		{"nats stream_subjects", nats.NATS.StreamSubjects, []string{"a.*"}},
		{"nats max_pending", nats.NATS.MaxPending, 4096},
		{"nats ack_timeout", nats.NATS.AckTimeout, 5 * time.Second},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// Set values stay.
	k := specs[3]
	k.Buffer, k.GatewayID, k.Kafka.Linger = 64<<10, "gw", 20*time.Millisecond
	if d := k.WithDefaults(); d.Buffer != 64<<10 || d.Kafka.ClientID != "xgate-gw" || d.Kafka.Linger != 20*time.Millisecond {
		t.Errorf("set values replaced: %+v", d)
	}
	f := specs[0]
	f.Fsync = "interval 250ms"
	if d := f.WithDefaults(); d.Fsync != "interval 250ms" {
		t.Errorf("fsync %q, want interval 250ms", d.Fsync)
	}
}

// problems renders Check's answer as "index key: msg" lines.
func problems(errs []*SpecError) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}

// TestCheckEveryProblem: Check reports every problem of a sink (but of the
// type's own keys the first), in a fixed order, and those between sinks.
func TestCheckEveryProblem(t *testing.T) {
	specs := []Spec{
		{Type: "stdout", What: "everything", Path: "/x", Fsync: "always", OnFull: "wait", Buffer: 100},
		{Type: "kafka", What: "all", Kafka: kafka.Config{Topic: "no/slash"}, GatewayID: "a b", DeliveryTimeout: time.Millisecond},
		{Type: "file", Path: "/a", What: "all"},
		{Type: "file", Path: "/a", What: "all", Address: "x:1", Kafka: kafka.Config{Linger: time.Second}},
	}
	want := []string{
		`sinks[0].what: "everything": want passed, alerts, dropped, rejects, all, routed or aggregates`,
		"sinks[0].path: only file sinks have a path",
		"sinks[0].fsync: only file sinks fsync",
		`sinks[0].on_full: "wait": want drop (count and drop events) or block (backpressure)`,
		"sinks[0].buffer: 100: want a size in 8KiB..1GiB",
		"sinks[1].key_path: missing: want the schema's key field, e.g. user_id",
		`sinks[1].gateway_id: "a b": want printable ASCII without spaces`,
		"sinks[1].delivery_timeout: 1ms: want at least 1s (default 30s)",
		"sinks[1].brokers: missing: want host:port of at least one broker", // the first of kafka's own
		"sinks[3].address: only udp sinks have an address",
		"sinks[3].linger: only kafka sinks have linger",
		`sinks[3].path: "/a" is also the path of sinks[2]; two sinks cannot share a file`,
	}
	if got := problems(Check(specs, nil)); !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestCheckGiven: with given, a key the config file set to zero is a
// problem where zero would mean the default, and a key of another type is
// one even when zero; without given (a Spec built in code) neither is.
func TestCheckGiven(t *testing.T) {
	specs := validSpecs()
	given := map[string]bool{"0 linger": true, "3 linger": true, "3 delivery_timeout": true, "1 on_full": true, "2 tls": true}
	has := func(i int, key string) bool { return given[string(rune('0'+i))+" "+key] }
	want := []string{
		"sinks[0].linger: only kafka sinks have linger",
		`sinks[1].on_full: "": want drop (count and drop events) or block (backpressure)`,
		"sinks[2].tls: only kafka and nats sinks have tls",
		"sinks[3].delivery_timeout: 0s: want at least 1s (default 30s)",
		"sinks[3].linger: 0s: want a positive duration up to 1m (default 5ms)",
	}
	if got := problems(Check(specs, has)); !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if errs := Check(specs, nil); len(errs) != 0 {
		t.Errorf("without given: %v", errs)
	}
}
