package gateway

import (
	"errors"
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

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // substrings, each in the error
	}{
		{"unknown top-level key", okListen + "rulez: []\n",
			[]string{"c.yaml:2: rulez: unknown key; did you mean rules?"}},
		{"unknown key without a near match", okListen + "colour: blue\n",
			[]string{"c.yaml:2: colour: unknown key (want one of afxdp, gateway_id, http, interface,"}},
		{"unknown nested key", okListen + "rules:\n  - name: r\n    when: amount > 1\n    action: drop\n    rate_limt: {}\n",
			[]string{"c.yaml:6: rules[0].rate_limt: unknown key; did you mean rate_limit?"}},
		{"repeated key", okListen + "queues: 1\nqueues: 2\n",
			[]string{"c.yaml:3: queues: repeated key (first on line 2)"}},
		{"ports not a list", "listen: {ports: 9000}\n",
			[]string{"c.yaml:1: listen.ports: want a list of UDP ports, got the integer 9000"}},
		{"port out of range", "listen:\n  ports:\n    - 9000\n    - 70000\n",
			[]string{"c.yaml:4: listen.ports[1]: port 70000 is not in 1..65535"}},
		{"port twice", "listen: {ports: [9000, 9000]}\n",
			[]string{"c.yaml:1: listen.ports[1]: port 9000 is listed twice"}},
		{"no ports", "mode: auto\n",
			[]string{"c.yaml:1: listen.ports: missing: name at least one UDP port"}},
		{"empty file", "",
			[]string{"c.yaml: listen.ports: missing"}},
		{"bad listen address", "listen: {ports: [1], address: example.com}\n",
			[]string{`c.yaml:1: listen.address: "example.com" is not an IP address`}},
		{"bad mode", okListen + "mode: turbo\n",
			[]string{`c.yaml:2: mode: "turbo": want afxdp, socket, plain or auto`}},
		{"socket mode without interface", okListen + "mode: socket\n",
			[]string{"c.yaml:2: interface: missing: mode socket attaches to an interface"}},
		{"queues wrong type", okListen + "queues: all\n",
			[]string{`c.yaml:2: queues: want an integer, got the string "all"`}},
		{"queues negative", okListen + "queues: -1\n",
			[]string{"c.yaml:2: queues: -1: want 0 (all) .. 4096"}},
		{"section not a mapping", okListen + "xdp: [1]\n",
			[]string{"c.yaml:2: xdp: want a mapping of block_max, blocklist_size, cost_sample, payload_check, rate_limit, got a list"}},
		{"rate unit", okListen + "rules:\n  - name: a\n    when: amount > 1\n    action: alert\n  - name: b\n    when: amount > 2\n    action: alert\n  - name: c\n    rate_limit: {key: user_id, rate: 100/x}\n    action: drop\n",
			[]string{`c.yaml:10: rules[2].rate_limit.rate: "100/x": unit "x" is not one of ms, s, m, h`}},
		{"rate missing", okListen + "rules:\n  - name: a\n    rate_limit: {key: user_id}\n    action: drop\n",
			[]string{"c.yaml:4: rules[0].rate_limit.rate: missing: want N/unit"}},
		{"burst wrong type", okListen + "rules:\n  - name: a\n    rate_limit: {key: user_id, rate: 1/s, burst: lots}\n    action: drop\n",
			[]string{`c.yaml:4: rules[0].rate_limit.burst: want a number, got the string "lots"`}},
		{"burst below one", okListen + "rules:\n  - name: a\n    rate_limit: {key: user_id, rate: 1/s, burst: 0.5}\n    action: drop\n",
			[]string{"c.yaml:4: rules[0].rate_limit.burst: 0.5: want >= 1"}},
		{"max_keys too large", okListen + "rules:\n  - name: a\n    rate_limit: {key: user_id, rate: 1/s, max_keys: 2000000000}\n    action: drop\n",
			[]string{"c.yaml:4: rules[0].rate_limit.max_keys: 2000000000: want 1..1073741824"}},
		{"condition syntax", okListen + "rules:\n  - name: r\n    when: amount >> 3\n    action: alert\n",
			[]string{"c.yaml:4: rules[0].when: rule \"r\": column 9: ", "    amount >> 3\n            ^"}},
		{"condition over lines", okListen + "rules:\n  - name: r\n    when: |\n      amount > 1 &&\n      event_type ==\n    action: alert\n",
			[]string{"c.yaml:4: rules[0].when: rule \"r\": column 28: expected operand, found end of condition\n    amount > 1 && event_type ==\n    " + strings.Repeat(" ", 27) + "^"}},
		{"condition in filter", okListen + "rules:\n  - name: w\n    window: {key: user_id, size: 10s, slide: 1s, agg: count}\n    filter: event_type ==\n    when: value > 3\n    action: alert\n",
			[]string{"c.yaml:5: rules[0].filter: rule \"w\": column"}},
		{"window needs when", okListen + "rules:\n  - name: w\n    window: {key: user_id, size: 10s, slide: 1s, agg: count}\n    action: alert\n",
			[]string{"c.yaml:3: rules[0].when: a window needs when"}},
		{"window bad agg", okListen + "rules:\n  - name: w\n    window: {key: user_id, size: 10s, slide: 1s, agg: median(amount)}\n    when: value > 1\n    action: alert\n",
			[]string{`c.yaml:4: rules[0].window.agg: "median(amount)": `, `unknown aggregation "median"`}},
		{"window size not a duration", okListen + "rules:\n  - name: w\n    window: {key: user_id, size: 60, slide: 1s, agg: count}\n    when: value > 1\n    action: alert\n",
			[]string{`c.yaml:4: rules[0].window.size: "60" is not a duration`}},
		{"window size not a multiple", okListen + "rules:\n  - name: w\n    window: {key: user_id, size: 7s, slide: 2s, agg: count}\n    when: value > 1\n    action: alert\n",
			[]string{"c.yaml:4: rules[0].window.size: 7s is not a multiple of slide 2s"}},
		{"window too many slides", okListen + "rules:\n  - name: w\n    window: {key: user_id, size: 1h, slide: 1s, agg: count}\n    when: value > 1\n    action: alert\n",
			[]string{"c.yaml:4: rules[0].window.slide: size/slide = 3600 segments: at most 1024"}},
		{"rate limit and window", okListen + "rules:\n  - name: x\n    rate_limit: {key: user_id, rate: 1/s}\n    window: {key: user_id, size: 10s, slide: 1s, agg: count}\n    when: value > 1\n    action: drop\n",
			[]string{"c.yaml:5: rules[0].window: a rule has rate_limit or window, not both"}},
		{"bad key path", okListen + "rules:\n  - name: x\n    rate_limit: {key: a..b, rate: 1/s}\n    action: drop\n",
			[]string{`c.yaml:4: rules[0].rate_limit.key: path "a..b" has an empty component`}},
		{"bucket refill too long", okListen + "rules:\n  - name: x\n    rate_limit: {key: user_id, rate: 1/h, burst: 1e12}\n    action: drop\n",
			[]string{"c.yaml:4: rules[0].rate_limit: invalid rate limit: burst"}},
		{"filter rule with filter", okListen + "rules:\n  - name: x\n    filter: amount > 1\n    action: drop\n",
			[]string{"c.yaml:4: rules[0].filter: filter belongs to window rules; use when"}},
		{"rule without a condition", okListen + "rules:\n  - name: x\n    action: drop\n",
			[]string{"c.yaml:3: rules[0]: needs when, rate_limit or window"}},
		{"action missing", okListen + "rules:\n  - name: x\n    when: amount > 1\n",
			[]string{"c.yaml:3: rules[0].action: missing: want pass, drop, alert or block <duration>"}},
		{"block without duration", okListen + "rules:\n  - name: x\n    when: amount > 1\n    action: block\n",
			[]string{`c.yaml:5: rules[0].action: "block": block needs a duration, e.g. block 30s`}},
		{"rule name missing", okListen + "rules:\n  - when: amount > 1\n    action: drop\n",
			[]string{"c.yaml:3: rules[0].name: missing: every rule has a name"}},
		{"rule not a mapping", okListen + "rules: [big-payment]\n",
			[]string{`c.yaml:2: rules[0]: want a rule (a mapping with name, when, rate_limit or window, action), got the string "big-payment"`}},
		{"duplicate rule name", okListen + "rules:\n  - {name: x, when: amount > 1, action: drop}\n  - {name: x, when: amount > 2, action: drop}\n",
			[]string{`c.yaml:4: rules[1].name: "x" is already the name of rules[0]`}},
		{"unknown required role", okListen + "schema: {required: [key, colour]}\n",
			[]string{`c.yaml:2: schema.required[1]: "colour" is not a role`}},
		{"required role without a path", okListen + "schema: {ts: \"\", required: [key, ts]}\n",
			[]string{"c.yaml:2: schema.required: role ts is required but schema.ts is empty"}},
		{"bad schema path", okListen + "schema:\n  key: user..id\n",
			[]string{`c.yaml:3: schema.key: path "user..id" has an empty component`}},
		{"limits", okListen + "limits: {max_datagram: 100000, max_event: 0, max_depth: 5000}\n",
			[]string{"c.yaml:2: limits.max_datagram: 100000: want 1..65535", "c.yaml:2: limits.max_event: 0: want 1..max_datagram", "c.yaml:2: limits.max_depth: 5000: want 1..1024"}},
		{"xdp rate below 1/s", okListen + "xdp: {rate_limit: {rate: 30/m}}\n",
			[]string{`c.yaml:2: xdp.rate_limit.rate: "30/m" is 0.5/s: the kernel bucket counts whole packets per second`}},
		{"xdp burst without rate", okListen + "xdp: {rate_limit: {burst: 10}}\n",
			[]string{"c.yaml:2: xdp.rate_limit.burst: burst without a rate"}},
		{"xdp block_max", okListen + "xdp:\n  blocklist_size: 100\n  block_max: 200\n  payload_check: yes\n",
			[]string{"c.yaml:4: xdp.block_max: 200: want 1..blocklist_size (100)", `c.yaml:5: xdp.payload_check: want true or false, got the string "yes"`}},
		{"socket", okListen + "socket: {rcvbuf: 4XB, batch: 0}\n",
			[]string{`c.yaml:2: socket.rcvbuf: "4XB" is not a size`, "c.yaml:2: socket.batch: 0: want 1..1024"}},
		{"realtime priority too high", okListen + "workers:\n  realtime_priority: 100\n",
			[]string{"c.yaml:3: workers.realtime_priority: 100: want 0 (off) or a SCHED_FIFO priority 1..99"}},
		{"realtime priority negative", okListen + "workers: {realtime_priority: -1}\n",
			[]string{"c.yaml:2: workers.realtime_priority: -1: want 0 (off) or a SCHED_FIFO priority 1..99"}},
		{"realtime priority not a number", okListen + "workers: {realtime_priority: high}\n",
			[]string{"c.yaml:2: workers.realtime_priority: want an integer"}},
		{"afxdp spin too long", okListen + "afxdp: {spin: 1s}\n",
			[]string{"c.yaml:2: afxdp.spin: 1s: want 0 (sleep at once) .. 10ms"}},
		{"afxdp spin negative", okListen + "afxdp: {spin: -1us}\n",
			[]string{"c.yaml:2: afxdp.spin: -1µs: want 0 (sleep at once) .. 10ms"}},
		{"worker cpus not a cpulist", okListen + "workers: {cpus: 1-x}\n",
			[]string{`c.yaml:2: workers.cpus: cpulist "1-x": "x" is not a CPU number`}},
		{"worker cpus range backwards", okListen + "workers: {cpus: 3-1}\n",
			[]string{`c.yaml:2: workers.cpus: cpulist "3-1": range 3-1 ends before it starts`}},
		{"worker cpus empty list", okListen + "workers: {cpus: \",\"}\n",
			[]string{`c.yaml:2: workers.cpus: cpulist ",": "" is not a CPU number`}},
		{"afxdp", okListen + "afxdp: {frame_size: 3000, rx_ring: 1000, fill_ring: 4096, frames: 100}\n",
			[]string{"c.yaml:2: afxdp.frame_size: 3000: want 2048 or 4096", "c.yaml:2: afxdp.rx_ring: 1000: want a power of two", "c.yaml:2: afxdp.frames: 100: want fill_ring (4096)"}},
		{"sink problems", okListen + "sinks:\n  - {type: udp, what: alerts}\n  - {type: stdout, what: everything, path: /x, fsync: always}\n  - {type: file, path: /a, what: all, fsync: sometimes, on_full: wait, buffer: 1000}\n  - {type: file, path: /a, what: all}\n  - {what: all}\n",
			[]string{
				"c.yaml:3: sinks[0].address: missing: a udp sink sends to host:port",
				`c.yaml:4: sinks[1].what: "everything": want passed, alerts`,
				"c.yaml:4: sinks[1].path: only file sinks have a path",
				"c.yaml:4: sinks[1].fsync: only file sinks fsync",
				`c.yaml:5: sinks[2].fsync: "sometimes": want never, interval`,
				`c.yaml:5: sinks[2].on_full: "wait": want drop`,
				"c.yaml:5: sinks[2].buffer: 1000: want a size in 8KiB..1GiB",
				`c.yaml:6: sinks[3].path: "/a" is also the path of sinks[2]`,
				"c.yaml:7: sinks[4].type: missing: want file, stdout, udp, kafka or nats",
			}},
		{"kafka sink problems", okListen + `sinks:
  - {type: kafka, what: passed}
  - {type: kafka, what: passed, brokers: [b1], topic: t}
  - {type: kafka, what: passed, brokers: ["b1:9092"], topic: "no/slash"}
  - {type: kafka, what: passed, brokers: ["b1:9092"], topic: t, acks: leader}
  - {type: kafka, what: passed, brokers: ["b1:9092"], topic: t, compression: brotli}
  - {type: kafka, what: passed, brokers: ["b1:9092"], topic: t, partitions: 3}
  - {type: kafka, what: passed, brokers: ["b1:9092"], topic: t, sasl: {mechanism: SCRAM-SHA-1, user: u, password: p}}
  - {type: kafka, what: passed, brokers: ["b1:9092"], topic: t, sasl: {mechanism: PLAIN, user: u}}
  - {type: kafka, what: passed, brokers: ["b1:9092"], topic: t, tls: {cert_file: /c.pem}}
  - {type: kafka, what: passed, brokers: ["b1:9092"], topic: t, linger: 0s}
  - {type: kafka, what: passed, brokers: ["b1:9092"], topic: t, subject: x.y}
  - {type: file, path: /f, what: passed, topic: t}
  - {type: kafka, what: passed, brokers: ["b1:9092"], topic: t, gateway_id: "has space", delivery_timeout: 0s}
  - {type: kafka, what: passed, brokers: b1, topic: t, idempotent: maybe}
`,
			[]string{
				"c.yaml:3: sinks[0].brokers: missing: want host:port of at least one broker",
				`c.yaml:4: sinks[1].brokers: "b1": want host:port`,
				`c.yaml:5: sinks[2].topic: "no/slash": a topic name has only letters`,
				"c.yaml:6: sinks[3].idempotent: the idempotent producer needs acks: all (acks is leader); set idempotent: false",
				`c.yaml:7: sinks[4].compression: "brotli": want lz4, zstd, snappy, gzip or none`,
				"c.yaml:8: sinks[5].partitions: only with create_topic: true",
				`c.yaml:9: sinks[6].sasl.mechanism: "SCRAM-SHA-1": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`,
				"c.yaml:10: sinks[7].sasl.password: want exactly one of password and password_file",
				"c.yaml:11: sinks[8].tls.cert_file: want both cert_file and key_file",
				"c.yaml:12: sinks[9].linger: 0s: want a positive duration up to 1m (default 5ms)",
				"c.yaml:13: sinks[10].subject: only nats sinks have subject",
				"c.yaml:14: sinks[11].topic: only kafka sinks have topic",
				`c.yaml:15: sinks[12].gateway_id: "has space": want printable ASCII without spaces`,
				"c.yaml:15: sinks[12].delivery_timeout: 0s: want at least 1s (default 30s)",
				`c.yaml:16: sinks[13].brokers: want a list of strings, got the string "b1"`,
				`c.yaml:16: sinks[13].idempotent: want true or false, got the string "maybe"`,
			}},
		{"nats sink problems", okListen + `sinks:
  - {type: nats, what: all}
  - {type: nats, what: all, urls: ["http://x:4222"], subject: a, stream: S}
  - {type: nats, what: all, urls: ["nats://x:4222"], subject: "a.{user}", stream: S}
  - {type: nats, what: all, urls: ["nats://x:4222"], subject: "a.*", stream: S}
  - {type: nats, what: all, urls: ["nats://x:4222"], subject: "a..b", stream: S}
  - {type: nats, what: all, urls: ["nats://x:4222"], subject: "a.{key}", stream: "S.1"}
  - {type: nats, what: all, urls: ["nats://x:4222"], subject: "a.{key}", stream: S, stream_subjects: [a.>]}
  - {type: nats, what: all, urls: ["nats://x:4222"], subject: "a.{key}", stream: S, create_stream: true, stream_subjects: [b.>]}
  - {type: nats, what: all, urls: ["nats://x:4222"], subject: "a.{key}", stream: S, user: u}
  - {type: nats, what: all, urls: ["nats://x:4222"], subject: "a.{key}", stream: S, token_file: /t, creds_file: /c}
  - {type: nats, what: all, urls: ["nats://x:4222"], subject: "a.{key}", stream: S, max_pending: -1, brokers: ["b:1"]}
  - {type: udp, address: "127.0.0.1:1", what: all, stream: S}
gateway_id: ""
`,
			[]string{
				"c.yaml:3: sinks[0].urls: missing: want at least one server URL",
				`c.yaml:4: sinks[1].urls: "http://x:4222": want nats://host:port or tls://host:port`,
				`c.yaml:5: sinks[2].subject: "a.{user}": unknown placeholder {user}: want {key}, {verdict} or {rule}`,
				`c.yaml:6: sinks[3].subject: "a.*": a subject to publish to has no wildcards`,
				`c.yaml:7: sinks[4].subject: "a..b" has an empty token`,
				`c.yaml:8: sinks[5].stream: "S.1": a stream name has no whitespace, '.'`,
				"c.yaml:9: sinks[6].stream_subjects: only with create_stream: true",
				"c.yaml:10: sinks[7].stream_subjects: [b.>] do not take every subject of a.{key}",
				"c.yaml:11: sinks[8].password: a user wants exactly one of password and password_file",
				"c.yaml:12: sinks[9].user: want one of user/password, token_file and creds_file",
				"c.yaml:13: sinks[10].brokers: only kafka sinks have brokers",
				"c.yaml:14: sinks[11].stream: only nats sinks have stream",
			}},
		{"keyed sinks need schema.key", okListen + "schema: {key: null, required: []}\nsinks:\n  - {type: kafka, what: passed, brokers: [\"b:9092\"], topic: t}\ngateway_id: \"a b\"\n",
			[]string{
				"c.yaml:4: sinks[0].type: kafka sinks key records by schema.key, which is empty: set it",
				`c.yaml:5: gateway_id: "a b": want printable ASCII without spaces`,
			}},
		{"http listen", okListen + "http: {listen: \"example.com:80\"}\n",
			[]string{`c.yaml:2: http.listen: "example.com:80": host "example.com" is not an IP address or localhost`}},
		{"probes enabled not a bool", okListen + "probes: {enabled: 1}\n",
			[]string{"c.yaml:2: probes.enabled: want true or false"}},
		{"probes sample 0", okListen + "probes: {sample: 0}\n",
			[]string{"c.yaml:2: probes.sample: 0: want 1 (time every datagram) .. 1048576"}},
		{"http non-loopback without token", okListen + "http: {listen: \"198.18.0.1:9100\"}\n",
			[]string{`c.yaml:2: http.token: required when http.listen "198.18.0.1:9100" is not a loopback address`}},
		{"http every address without token", okListen + "http: {listen: \":9100\"}\n",
			[]string{`c.yaml:2: http.token: required when http.listen ":9100" listens on every address`}},
		{"http unspecified address without token", okListen + "http: {listen: \"0.0.0.0:9100\"}\n",
			[]string{`c.yaml:2: http.token: required when http.listen "0.0.0.0:9100" is not a loopback address`}},
		{"http token too short", okListen + "http: {listen: \"198.18.0.1:9100\", token: abc}\n",
			[]string{"c.yaml:2: http.token: want at least 16 characters"}},
		{"http pprof not a bool", okListen + "http: {pprof: off}\n",
			[]string{"c.yaml:2: http.pprof: want true or false"}},
		{"pin path", okListen + "pin: {path: /}\n",
			[]string{`c.yaml:2: pin.path: "/": want an absolute directory on bpffs`}},
		{"yaml syntax", "listen: {ports: [9000]\nmode: auto\n",
			[]string{"c.yaml:1: invalid YAML: did not find expected ',' or '}'"}},
		{"yaml tab indent", "listen:\n\tports: [9000]\n",
			[]string{"c.yaml:2: invalid YAML: found character that cannot start any token"}},
		{"root is a list", "- listen\n",
			[]string{"c.yaml:1: want a mapping of afxdp, gateway_id, http,", "got a list"}},
		{"two documents", okListen + "---\nmode: auto\n",
			[]string{"c.yaml:2: more than one YAML document"}},
		{"non-scalar key", okListen + "? [a, b]\n: 1\n",
			[]string{"c.yaml:2: a key must be a plain name, got a list"}},
		{"merge of a scalar", okListen + "xdp:\n  <<: 3\n",
			[]string{"c.yaml:3: xdp: << merges a mapping, not the integer 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("c.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			if c != nil {
				t.Errorf("config returned with an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			w := 0 // the wants that start an error; the others continue one
			for _, s := range tc.want {
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
	_, err = LoadConfig(file)
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
	c, err := ParseConfig("min.yaml", []byte(okListen+"sinks:\n  - {type: file, path: /tmp/x, what: passed}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
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
		{"mode", c.Mode, "auto"},
		{"queues", c.Queues, 0},
		{"socket.batch", c.Socket.Batch, 64},
		{"socket.rcvbuf", c.Socket.RcvBuf, 4 << 20},
		{"http.listen", c.HTTP.Listen, "127.0.0.1:9100"},
		{"http.pprof", c.HTTP.Pprof, true},
		{"http.token", c.HTTP.Token, ""},
		{"pin.path", c.Pin.Path, "/sys/fs/bpf/xgate"},
		{"pin.keep", c.Pin.Keep, false},
		{"probes.enabled", c.Probes.Enabled, true},
		{"probes.sample", c.Probes.Sample, 64},
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
	c, err = ParseConfig("set.yaml", []byte(okListen+"mode: afxdp\ninterface: eth1\nsocket: {batch: 16, rcvbuf: 1MiB}\nhttp: {listen: ~}\n"+
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
	c, err := LoadConfig("../examples/xgate.yaml")
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
	if len(c.Rules) != 4 || len(c.Sinks) != 5 {
		t.Errorf("%d rules and %d sinks, want 4 and 5", len(c.Rules), len(c.Sinks))
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
	"interface", "mode", "listen", "listen.ports", "listen.address", "listen.vlans", "queues", "limits.allow_duplicate_keys", "limits.state_memory", "rules[].rate_limit.on_full", "rules[].window.on_full",
	"schema", "schema.key", "schema.amount", "schema.type", "schema.ts", "schema.src", "schema.required",
	"limits", "limits.max_datagram", "limits.max_event", "limits.max_depth",
	"rules", "rules[].name", "rules[].when", "rules[].filter", "rules[].action",
	"rules[].rate_limit", "rules[].rate_limit.key", "rules[].rate_limit.rate", "rules[].rate_limit.burst", "rules[].rate_limit.max_keys",
	"rules[].window", "rules[].window.key", "rules[].window.size", "rules[].window.slide", "rules[].window.agg", "rules[].window.max_keys",
	"xdp", "xdp.rate_limit", "xdp.rate_limit.rate", "xdp.rate_limit.burst", "xdp.payload_check", "xdp.cost_sample",
	"xdp.blocklist_size", "xdp.block_max",
	"socket", "socket.rcvbuf", "socket.batch",
	"afxdp", "afxdp.frame_size", "afxdp.rx_ring", "afxdp.fill_ring", "afxdp.frames", "afxdp.spin",
	"sinks", "sinks[].type", "sinks[].path", "sinks[].what", "sinks[].fsync", "sinks[].rotate_bytes",
	"sinks[].address", "sinks[].on_full", "sinks[].buffer",
	"sinks[].gateway_id", "sinks[].delivery_timeout", "sinks[].tls", "sinks[].tls.enable", "sinks[].tls.ca_file",
	"sinks[].tls.cert_file", "sinks[].tls.key_file", "sinks[].tls.server_name", "sinks[].tls.insecure_skip_verify",
	"sinks[].brokers", "sinks[].topic", "sinks[].client_id", "sinks[].acks", "sinks[].idempotent", "sinks[].compression",
	"sinks[].linger", "sinks[].batch_max_bytes", "sinks[].create_topic", "sinks[].partitions",
	"sinks[].sasl", "sinks[].sasl.mechanism", "sinks[].sasl.user", "sinks[].sasl.password", "sinks[].sasl.password_file",
	"sinks[].urls", "sinks[].subject", "sinks[].stream", "sinks[].create_stream", "sinks[].stream_subjects",
	"sinks[].max_pending", "sinks[].ack_timeout", "sinks[].user", "sinks[].password", "sinks[].password_file",
	"sinks[].token_file", "sinks[].creds_file", "gateway_id",
	"http", "http.listen", "http.pprof", "http.token", "http.token_file", "pin", "pin.path", "pin.keep",
	"probes", "probes.enabled", "probes.sample", "probes.rx_timestamps",
	"workers", "workers.realtime_priority", "workers.cpus",
}

// TestAllKeysKnown keeps allKeys honest: each must be accepted by the
// decoder, and a made-up key next to it must not.
func TestAllKeysKnown(t *testing.T) {
	c, err := LoadConfig("../examples/xgate.yaml")
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
http: {listen: 127.0.0.1:9100}
`
	c, err := ParseConfig("DESIGN.md", []byte(sketch))
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
	if _, err := ParseConfig("m.yaml", []byte(src)); err == nil || !strings.Contains(err.Error(), "m.yaml:4: rl: unknown key") {
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
	c, err := ParseConfig("m.yaml", []byte(src))
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
	_, err = ParseConfig("m.yaml", []byte(src))
	if err == nil || !strings.Contains(err.Error(), "m.yaml:3: xdp: merge keys (<<) nested or repeated too much") {
		t.Errorf("self-merge: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("self-merge took %v", d)
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	c := DefaultConfig()
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
	c, err := ParseConfig("e.yaml", []byte(okListen+`
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
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v", err)
	}
}

// FuzzParseConfig: any input ends in a config or an error, never a panic;
// an accepted config validates again and converts for the engine.
func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{"../examples/xgate.yaml", "testdata/bad.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz.yaml", data)
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
		if errs := sink.Check(c.sinkSpecs(), nil); len(errs) != 0 {
			t.Fatalf("accepted config's sinks fail sink.Check: %v", errs)
		}
	})
}

// TestSinkSpecsKeyed: kafka and nats sinks get the schema's key and the
// gateway id (the sink's, else the top-level one); other sinks neither.
func TestSinkSpecsKeyed(t *testing.T) {
	c, err := ParseConfig("k.yaml", []byte(okListen+`schema: {key: account.id}
gateway_id: edge-7
sinks:
  - {type: kafka, what: passed, brokers: ["k1:9092", "k2:9092"], topic: ev, idempotent: false, acks: leader, linger: 5ms}
  - {type: nats, what: alerts, urls: ["nats://n:4222"], subject: "a.{key}", stream: A, gateway_id: own, delivery_timeout: 5s}
  - {type: stdout, what: all}
`))
	if err != nil {
		t.Fatal(err)
	}
	sp := c.sinkSpecs()
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
	sp := c.sinkSpecs()
	if errs := sink.Check(sp, nil); len(errs) != 0 {
		t.Fatal(errs)
	}
	return sp[i].WithDefaults()
}

func TestConfigListenVLANs(t *testing.T) {
	c, err := ParseConfig("v.yaml", []byte("listen: {ports: [9000], vlans: [100, 4094]}\n"))
	if err != nil || len(c.Listen.VLANs) != 2 || c.Listen.AnyVLAN {
		t.Fatalf("vlans [100, 4094]: %+v, %v", c.Listen, err)
	}
	if b := xdpConfig(c, PathSocket); len(b.VLANs) != 2 || !b.NoIPv6 {
		t.Errorf("xdp config %+v: want the VLANs and no IPv6 (IPv4 sockets)", b)
	}
	c, err = ParseConfig("v.yaml", []byte("listen: {ports: [9000], vlans: any, address: \"::\"}\n"))
	if err != nil || !c.Listen.AnyVLAN {
		t.Fatalf("vlans any: %+v, %v", c.Listen, err)
	}
	if b := xdpConfig(c, PathSocket); !b.AnyVLAN || b.NoIPv6 {
		t.Errorf("xdp config %+v: want any VLAN and IPv6 served (\"::\")", b)
	}
	if b := xdpConfig(c, PathAFXDP); b.NoIPv6 {
		t.Error("afxdp serves IPv6 whatever the address")
	}
	_, err = ParseConfig("v.yaml", []byte("listen:\n  ports: [9000]\n  vlans: [100, 5000]\n"))
	if err == nil || !strings.Contains(err.Error(), "v.yaml:3") || !strings.Contains(err.Error(), "5000") {
		t.Errorf("VLAN 5000: %v", err)
	}
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
	_, err := ParseConfig("m.yaml", []byte(yml))
	if err == nil || !strings.Contains(err.Error(), "m.yaml:2") || !strings.Contains(err.Error(), "velocity") {
		t.Fatalf("over the budget: %v", err)
	}
	c, err := ParseConfig("m.yaml", []byte(`listen: {ports: [9000]}
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
	if _, err := ParseConfig("m.yaml", []byte("listen: {ports: [9000]}\nrules:\n  - name: r\n    rate_limit: {key: user_id, rate: 1/s, on_full: maybe}\n    action: drop\n")); err == nil ||
		!strings.Contains(err.Error(), "on_full") {
		t.Errorf("on_full: maybe: %v", err)
	}
}
