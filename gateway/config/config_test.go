package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink"
)

const okListen = "listen: {ports: [9000]}\n"

// TestBadConfigs walks testdata/bad: each NAME.yaml must be refused (read
// as "c.yaml") with an error holding every line of NAME.want; the lines
// that start with "c.yaml" each start one error, so their count is the
// number of errors.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs under testdata/bad: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			wantText, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".want")
			if err != nil {
				t.Fatalf("%s has no .want file: %v", f, err)
			}
			want := strings.Split(strings.TrimSuffix(string(wantText), "\n"), "\n")
			c, err := Parse("c.yaml", data)
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			if c != nil {
				t.Errorf("config returned with an error")
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			w := 0 // the wants that start an error; the others continue one
			for _, s := range want {
				if strings.HasPrefix(s, "c.yaml") {
					w++
				}
			}
			if n := len(fieldErrors(t, err)); n != w {
				t.Errorf("%d errors, want %d:\n%v", n, w, err)
			}
		})
	}
}

// fieldErrors unpacks the joined error into its *FieldErrors.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T is not a joined error: %v", err, err)
	}
	var out []*FieldError
	for _, e := range j.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %T is not a *FieldError: %v", e, e)
		}
		out = append(out, fe)
	}
	return out
}

// TestBadFileAllErrors checks that every problem of testdata/bad.yaml is
// reported, on its line and key: the file marks them with "# ERR line key…".
func TestBadFileAllErrors(t *testing.T) {
	const file = "testdata/bad.yaml"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	type at struct {
		line int
		key  string
	}
	var want []at
	mark := regexp.MustCompile(`# ERR (\d+) (.*)$`)
	for _, l := range strings.Split(string(data), "\n") {
		m := mark.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		for _, k := range strings.Split(m[2], ",") {
			want = append(want, at{n, strings.TrimSpace(k)})
		}
	}
	_, err = Load(file)
	if err == nil {
		t.Fatal("no error")
	}
	var got []at
	for _, fe := range fieldErrors(t, err) {
		if fe.File != file {
			t.Errorf("file %q, want %q", fe.File, file)
		}
		got = append(got, at{fe.Line, fe.Key})
	}
	less := func(s []at) func(i, j int) bool {
		return func(i, j int) bool { return s[i].line < s[j].line || s[i].line == s[j].line && s[i].key < s[j].key }
	}
	sort.Slice(want, less(want))
	sort.Slice(got, less(got))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors at %v\nwant %v\nfull error:\n%v", got, want, err)
	}
	// The example of the design: a rule's condition error keeps its caret.
	var xe *engine.ExprError
	if !errors.As(fieldErrors(t, err)[5], &xe) || xe.Rule != "typo" {
		t.Errorf("sixth error does not wrap the rule's ExprError: %v", fieldErrors(t, err)[5])
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("min.yaml", []byte(okListen+"sinks:\n  - {type: file, path: /tmp/x, what: passed}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Listen.Ports = []uint16{9000}
	want.Sinks = []sink.Spec{{Type: "file", Path: "/tmp/x", What: "passed"}} // as written: sink.New fills in the defaults
	want.src = c.src
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
	for _, check := range []struct {
		name      string
		got, want any
	}{
		{"mode", c.Mode, ModeAuto},
		{"queues", c.Queues, 0},
		{"socket.batch", c.Socket.Batch, 64},
		{"socket.rcvbuf", c.Socket.RcvBuf, 4 << 20},
		{"http.listen", c.HTTP.Listen, "127.0.0.1:9717"},
		{"http.pprof", c.HTTP.Pprof, true},
		{"http.token", c.HTTP.Token, ""},
		{"pin.path", c.Pin.Path, "/sys/fs/bpf/xgate"},
		{"pin.keep", c.Pin.Keep, false},
		{"probes.enabled", c.Probes.Enabled, true},
		{"probes.sample", c.Probes.Sample, 256},
		{"probes.rx_timestamps", c.Probes.RxTimestamps, true},
		{"schema.key", c.Schema.Key, "user_id"},
		{"schema.required", c.Schema.Required, []string{"key"}},
		{"limits", c.Limits, Limits{MaxDatagram: 65535, MaxEvent: 16384, MaxDepth: 32}},
		{"xdp.payload_check", c.XDP.PayloadCheck, true},
		{"xdp.cost_sample", c.XDP.CostSample, 64},
		{"xdp.rate", c.XDP.RateLimit.PerSecond(), 0.0},
		{"afxdp", c.AFXDP, AFXDP{4096, 4096, 4096, 8192, 50 * time.Microsecond}},
		{"sinks[0] effective on_full", effectiveSink(t, c, 0).OnFull, "drop"},
		{"sinks[0].buffer", c.Sinks[0].Buffer, int64(0)}, // unset: the type's default, below
		{"sinks[0] effective buffer", effectiveSink(t, c, 0).Buffer, int64(1 << 20)},
		{"sinks[0] effective fsync", effectiveSink(t, c, 0).Fsync, "interval 1s"},
	} {
		if !reflect.DeepEqual(check.got, check.want) {
			t.Errorf("%s = %v, want %v", check.name, check.got, check.want)
		}
	}
	// Explicit values replace the defaults; a null leaves them.
	c, err = Parse("set.yaml", []byte(okListen+"mode: afxdp\ninterface: eth1\nsocket: {batch: 16, rcvbuf: 1MiB}\nhttp: {listen: ~}\n"+
		"schema: {src: ~, key: account}\nxdp: {rate_limit: {rate: 10000/s}}\n"+
		"sinks:\n  - {type: file, path: /a, what: all, fsync: interval 250ms}\n  - {type: file, path: /b, what: all, fsync: always}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != "afxdp" || c.Socket.Batch != 16 || c.Socket.RcvBuf != 1<<20 || c.HTTP.Listen != DefaultHTTPListen ||
		c.Schema.Src != "" || c.Schema.Key != "account" || c.Schema.Amount != "amount" || c.XDP.RateLimit.PerSecond() != 10000 {
		t.Errorf("explicit values: %+v", c)
	}
	if f := effectiveSink(t, c, 0).Fsync; f != "interval 250ms" {
		t.Errorf("fsync %q, want interval 250ms", f)
	}
	if f := effectiveSink(t, c, 1).Fsync; f != "always" {
		t.Errorf("fsync %q, want always", f)
	}
}

func TestExampleConfig(t *testing.T) {
	c, err := Load("../../examples/xgate.yaml")
	if err != nil {
		t.Fatalf("examples/xgate.yaml: %v", err)
	}
	// The example shows every key: collect the keys it sets, with list
	// indices dropped, and compare with all keys the decoder knows.
	set := map[string]bool{}
	for k := range c.src.lines {
		set[regexp.MustCompile(`\[\d+\]`).ReplaceAllString(k, "[]")] = true
	}
	for _, k := range allKeys {
		if !set[k] {
			t.Errorf("examples/xgate.yaml does not show %s", k)
		}
	}
	if len(c.Rules) != 4 || len(c.Sinks) != 7 {
		t.Errorf("%d rules and %d sinks, want 4 and 7", len(c.Rules), len(c.Sinks))
	}
	// And its rules really run.
	e, err := engine.New(c.EngineConfig())
	if err != nil {
		t.Fatal(err)
	}
	w := e.NewWorker()
	ds := w.Process([]byte(`{"user_id":"u1","amount":20000,"event_type":"payment","ts":1,"ip":"203.0.113.7"}`), netip.MustParseAddr("198.18.0.1"))
	if len(ds) != 1 || ds[0].Action != engine.ActionAlert || ds[0].Rule != "big-payment" {
		t.Errorf("decisions %+v, want one alert by big-payment", ds)
	}
}

// allKeys is every key the config knows, as paths with [] for list items.
var allKeys = []string{
	// enrichment lists (lists.go), with the example's list names
	"lists", "lists.partners", "lists.partners.type", "lists.partners.file", "lists.partners.max_entries",
	"lists.vip", "lists.vip.type", "lists.vip.file", "lists.risk_tier", "lists.risk_tier.type", "lists.risk_tier.file",
	"enrich", "enrich[].field", "enrich[].from", "rules[].enrich", "rules[].enrich[].field", "rules[].enrich[].from",
	"xdp.never_block_lists", "xdp.drop_lists",
	"interface", "mode", "listen", "listen.ports", "listen.address", "listen.vlans", "queues", "limits.allow_duplicate_keys", "limits.state_memory", "xdp.never_block", "xdp.drop", "rules[].rate_limit.on_full", "rules[].window.on_full",
	"schema", "schema.key", "schema.amount", "schema.type", "schema.ts", "schema.src", "schema.required",
	"limits", "limits.max_datagram", "limits.max_event", "limits.max_depth",
	"rules", "rules[].name", "rules[].when", "rules[].filter", "rules[].action",
	"rules[].rate_limit", "rules[].rate_limit.key", "rules[].rate_limit.rate", "rules[].rate_limit.burst", "rules[].rate_limit.max_keys",
	"rules[].window", "rules[].window.key", "rules[].window.size", "rules[].window.slide", "rules[].window.agg", "rules[].window.max_keys",
	"rules[].window.emit", "rules[].window.emit_min_change", "rules[].window.emit_max_keys", "rules[].window.max_key_bytes",
	"xdp", "xdp.rate_limit", "xdp.rate_limit.rate", "xdp.rate_limit.burst", "xdp.payload_check", "xdp.cost_sample",
	"xdp.blocklist_size", "xdp.block_max",
	"socket", "socket.rcvbuf", "socket.batch",
	"afxdp", "afxdp.frame_size", "afxdp.rx_ring", "afxdp.fill_ring", "afxdp.frames", "afxdp.spin",
	"sinks", "sinks[].type", "sinks[].path", "sinks[].what", "sinks[].fsync", "sinks[].rotate_bytes",
	"sinks[].address", "sinks[].on_full", "sinks[].buffer",
	"sinks[].gateway_id", "sinks[].delivery_timeout", "sinks[].tls", "sinks[].tls.enable", "sinks[].tls.ca_file",
	"sinks[].tls.cert_file", "sinks[].tls.key_file", "sinks[].tls.server_name", "sinks[].tls.insecure_skip_verify",
	"sinks[].spool", "sinks[].spool.path", "sinks[].spool.max_bytes", "sinks[].spool.fsync",
	"sinks[].brokers", "sinks[].topic", "sinks[].client_id", "sinks[].acks", "sinks[].idempotent", "sinks[].compression",
	"sinks[].linger", "sinks[].batch_max_bytes", "sinks[].create_topic", "sinks[].partitions",
	"sinks[].sasl", "sinks[].sasl.mechanism", "sinks[].sasl.user", "sinks[].sasl.password", "sinks[].sasl.password_file",
	"sinks[].urls", "sinks[].subject", "sinks[].stream", "sinks[].create_stream", "sinks[].stream_subjects",
	"sinks[].max_pending", "sinks[].ack_timeout", "sinks[].user", "sinks[].password", "sinks[].password_file",
	"sinks[].token_file", "sinks[].creds_file", "gateway_id",
	"http", "http.listen", "http.pprof", "http.token", "http.token_file", "pin", "pin.path", "pin.keep",
	"probes", "probes.enabled", "probes.sample", "probes.rx_timestamps",
	"workers", "workers.realtime_priority", "workers.cpus",
	// multicast input, branches, event metadata
	"listen.groups", "rules[].to", "sinks[].name", "sinks[].meta", "sinks[].meta.src", "sinks[].meta.rx_time",
	"sinks[].meta.queue", "sinks[].meta.gateway_id", "sinks[].meta.rule", "sinks[].meta.verdict",
}

// TestAllKeysKnown keeps allKeys honest: each must be accepted by the
// decoder, and a made-up key next to it must not.
func TestAllKeysKnown(t *testing.T) {
	c, err := Load("../../examples/xgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, k := range allKeys {
		known[k] = true
	}
	for k := range c.src.lines {
		k = regexp.MustCompile(`\[\d+\]`).ReplaceAllString(k, "[]")
		if k != "" && !known[k] && !strings.HasSuffix(k, "[]") {
			t.Errorf("the example sets %s, which allKeys lacks", k)
		}
	}
}

// TestDesignSketch: the config sketched in DESIGN.md loads as written.
func TestDesignSketch(t *testing.T) {
	const sketch = `listen: {ports: [9000]}
interface: eth0            # or the veth of a test host
mode: afxdp                # afxdp | socket | auto
schema: {key: user_id, amount: amount, type: event_type, ts: ts}
rules:
  - name: big-payment
    when: event_type == "payment" && amount > 10000
    action: alert
  - name: per-user-rate
    rate_limit: {key: user_id, rate: 100/s, burst: 200}
    action: drop
  - name: velocity
    window: {key: user_id, size: 60s, slide: 5s, agg: sum(amount)}
    when: value > 50000
    action: alert
  - name: flood-source
    rate_limit: {key: src_ip, rate: 10000/s}
    action: block 30s      # pushed into the XDP blocklist
sinks:
  - {type: file, path: /var/lib/xgate/events.ndjson, what: passed}
  - {type: stdout, what: alerts}
http: {listen: 127.0.0.1:9717}
`
	c, err := Parse("DESIGN.md", []byte(sketch))
	if err != nil {
		t.Fatal(err)
	}
	if c.File() != "DESIGN.md" || c.Mode != ModeAFXDP || len(c.Rules) != 4 || c.Rules[2].Window.Slide != 5*time.Second {
		t.Errorf("sketch: %+v", c)
	}
}

func TestAnchorsAndMerge(t *testing.T) {
	src := okListen + `
limits: &lim {max_event: 1000}
rl: &rl {key: user_id, rate: 10/s}
`
	if _, err := Parse("m.yaml", []byte(src)); err == nil || !strings.Contains(err.Error(), "m.yaml:4: rl: unknown key") {
		t.Errorf("want unknown key rl, got %v", err)
	}
	src = okListen + `
rules:
  - &base
    name: a
    rate_limit: &rl {key: user_id, rate: 10/s}
    action: drop
  - <<: *base
    name: b
    rate_limit: {<<: *rl, rate: 20/s}
`
	c, err := Parse("m.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Rules) != 2 || c.Rules[1].Name != "b" || c.Rules[1].Action != "drop" ||
		c.Rules[1].RateLimit.Key != "user_id" || c.Rules[1].RateLimit.Rate != "20/s" {
		t.Errorf("merged rules: %+v %+v", c.Rules[1], c.Rules[1].RateLimit)
	}
	// A mapping that merges itself must end, not recurse forever, nor
	// blow up when it merges itself many times.
	src = okListen + "xdp: &x\n  <<: [*x, *x, *x, *x, *x, *x, *x, *x, *x, *x]\n"
	start := time.Now()
	_, err = Parse("m.yaml", []byte(src))
	if err == nil || !strings.Contains(err.Error(), "m.yaml:3: xdp: merge keys (<<) nested or repeated too much") {
		t.Errorf("self-merge: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("self-merge took %v", d)
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	c := Default()
	c.Listen.Ports = []uint16{9000}
	c.Rules = []Rule{{Name: "r", When: "amount >", Action: "drop"}}
	err := c.Validate()
	if err == nil || !strings.HasPrefix(err.Error(), `config: rules[0].when: rule "r": column 9: `) {
		t.Fatalf("got %v", err)
	}
	c.Rules[0].When = "amount > 5"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	ec := c.EngineConfig()
	if len(ec.Rules) != 1 || ec.Rules[0].When != "amount > 5" || ec.Schema.Key != "user_id" ||
		!reflect.DeepEqual(ec.Schema.Required, []engine.Role{engine.RoleKey}) || ec.Limits.MaxEvent != 16384 {
		t.Errorf("engine config %+v", ec)
	}
}

func TestEngineConfigConverts(t *testing.T) {
	c, err := Parse("e.yaml", []byte(okListen+`
schema: {key: account.id, required: [key, amount]}
limits: {max_datagram: 9000, max_event: 4KiB, max_depth: 8}
rules:
  - name: w
    window: {key: src_ip, size: 10s, slide: 500ms, agg: distinct(account.id), max_keys: 1024}
    filter: amount > 0
    when: value > 3
    action: block 1m
  - name: rl
    rate_limit: {key: account.id, rate: 6000/m, burst: 50, max_keys: 4096}
    when: amount > 1
    action: drop
`))
	if err != nil {
		t.Fatal(err)
	}
	ec := c.EngineConfig()
	want := engine.Config{
		Schema: &engine.Schema{Key: "account.id", Amount: "amount", Type: "event_type", TS: "ts", Src: "ip",
			Required: []engine.Role{engine.RoleKey, engine.RoleAmount}},
		Limits:       engine.Limits{MaxDatagram: 9000, MaxEvent: 4096, MaxDepth: 8},
		MemoryBudget: c.StateBudget(),
		Rules: []engine.RuleSpec{
			{Name: "w", When: "value > 3", Filter: "amount > 0", Action: "block 1m",
				Window: &engine.WindowSpec{Key: "src_ip", Size: 10 * time.Second, Slide: 500 * time.Millisecond, Agg: "distinct(account.id)", MaxKeys: 1024}},
			{Name: "rl", When: "amount > 1", Action: "drop",
				RateLimit: &engine.RateLimitSpec{Key: "account.id", Rate: "6000/m", Burst: 50, MaxKeys: 4096}},
		},
	}
	if !reflect.DeepEqual(ec, want) {
		t.Errorf("got  %+v\nwant %+v", ec, want)
	}
	if _, err := engine.New(ec); err != nil {
		t.Fatal(err)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"4096", 4096, true}, {"4KiB", 4096, true}, {"4 MiB", 4 << 20, true},
		{"1GiB", 1 << 30, true}, {"2M", 2 << 20, true}, {"3kB", 3000, true}, {"1_000", 1000, true},
		{"-1", 0, false}, {"1.5MiB", 0, false}, {"MiB", 0, false}, {"99999999999GiB", 0, false}, {"", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v", err)
	}
}

// FuzzParseConfig: any input ends in a config or an error, never a panic;
// an accepted config validates again and converts for the engine.
func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{"../../examples/xgate.yaml", "testdata/bad.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			if c != nil {
				t.Fatal("config and error")
			}
			for _, fe := range fieldErrors(t, err) {
				if fe.File != "fuzz.yaml" || fe.Line < 0 {
					t.Fatalf("bad position in %v", fe)
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		_ = c.EngineConfig()
		// The sinks take what the config took.
		if errs := sink.Check(c.SinkSpecs(), nil); len(errs) != 0 {
			t.Fatalf("accepted config's sinks fail sink.Check: %v", errs)
		}
	})
}

// TestSinkSpecsKeyed: kafka and nats sinks get the schema's key and the
// gateway id (the sink's, else the top-level one); other sinks neither.
func TestSinkSpecsKeyed(t *testing.T) {
	c, err := Parse("k.yaml", []byte(okListen+`schema: {key: account.id}
gateway_id: edge-7
sinks:
  - {type: kafka, what: passed, brokers: ["k1:9092", "k2:9092"], topic: ev, idempotent: false, acks: leader, linger: 5ms}
  - {type: nats, what: alerts, urls: ["nats://n:4222"], subject: "a.{key}", stream: A, gateway_id: own, delivery_timeout: 5s}
  - {type: stdout, what: all}
`))
	if err != nil {
		t.Fatal(err)
	}
	sp := c.SinkSpecs()
	k, n, o := sp[0], sp[1], sp[2]
	if k.KeyPath != "account.id" || k.GatewayID != "edge-7" || !k.Kafka.NoIdempotence || k.Kafka.Acks != "leader" ||
		k.Kafka.Linger != 5*time.Millisecond || strings.Join(k.Kafka.Brokers, ",") != "k1:9092,k2:9092" {
		t.Errorf("kafka spec %+v", k)
	}
	if n.KeyPath != "account.id" || n.GatewayID != "own" || n.DeliveryTimeout != 5*time.Second || n.NATS.Stream != "A" {
		t.Errorf("nats spec %+v", n)
	}
	if o.KeyPath != "" || o.GatewayID != "" {
		t.Errorf("stdout spec %+v", o)
	}
	// sink.New accepts what Validate accepted (up to connecting).
	if errs := sink.Check(sp, nil); len(errs) != 0 {
		t.Errorf("sink.Check: %v", errs)
	}
}

// effectiveSink is sink i of c as sink.New runs it: checked, with the
// config's schema key and gateway id, and the defaults filled in.
func effectiveSink(t *testing.T, c *Config, i int) sink.Spec {
	t.Helper()
	sp := c.SinkSpecs()
	if errs := sink.Check(sp, nil); len(errs) != 0 {
		t.Fatal(errs)
	}
	return sp[i].WithDefaults()
}

// TestConfigStateMemory: a config whose tables would exceed the budget is
// refused by validation, naming the rule and its bytes, without allocating
// them; on_full and allow_duplicate_keys reach the engine.
func TestConfigStateMemory(t *testing.T) {
	yml := `listen: {ports: [9000]}
limits: {state_memory: 64MiB}
rules:
  - name: velocity
    window: {key: user_id, size: 1024s, slide: 1s, agg: sum(amount), max_keys: 1073741824}
    when: value > 5
    action: alert
`
	_, err := Parse("m.yaml", []byte(yml))
	if err == nil || !strings.Contains(err.Error(), "m.yaml:2") || !strings.Contains(err.Error(), "velocity") {
		t.Fatalf("over the budget: %v", err)
	}
	c, err := Parse("m.yaml", []byte(`listen: {ports: [9000]}
limits: {allow_duplicate_keys: true}
rules:
  - name: per-user
    rate_limit: {key: user_id, rate: 10/s, on_full: allow, max_keys: 1024}
    action: drop
`))
	if err != nil {
		t.Fatal(err)
	}
	ec := c.EngineConfig()
	if !ec.Limits.AllowDuplicateKeys || ec.Rules[0].RateLimit.OnFull != "allow" || ec.MemoryBudget == 0 {
		t.Errorf("engine config %+v", ec)
	}
	if _, err := Parse("m.yaml", []byte("listen: {ports: [9000]}\nrules:\n  - name: r\n    rate_limit: {key: user_id, rate: 1/s, on_full: maybe}\n    action: drop\n")); err == nil ||
		!strings.Contains(err.Error(), "on_full") {
		t.Errorf("on_full: maybe: %v", err)
	}
}

// TestConfigBounds: a huge file is refused without reading it all, and a
// file with thousands of problems lists MaxErrors of them and counts the
// rest.
func TestConfigBounds(t *testing.T) {
	if _, err := Load("/dev/zero"); err == nil || !strings.Contains(err.Error(), "larger than 4 MiB") {
		t.Errorf("Load(/dev/zero): %v", err)
	}
	var b strings.Builder
	b.WriteString("listen: {ports: [9000]}\nrules:\n")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&b, "  - {name: r%d, when: \"amount >\", action: drop}\n", i)
	}
	_, err := Parse("many.yaml", []byte(b.String()))
	if err == nil {
		t.Fatal("500 broken rules: no error")
	}
	if n := len(fieldErrors(t, err)); n != MaxErrors+1 || !strings.Contains(err.Error(), "and 400 more problems") {
		t.Errorf("%d errors listed, want %d and a count of the rest:\n%.300s", n, MaxErrors+1, err)
	}
}
