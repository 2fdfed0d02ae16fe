package gateway

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xgate/xgate/gateway/host"

	"go.yaml.in/yaml/v3"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink"
)

// Config is the daemon's configuration, as read from YAML (see
// examples/xgate.yaml for every key, its default and its meaning).
//
// ParseConfig and LoadConfig start from DefaultConfig and overwrite what
// the file sets, then Validate. A Config built in code should start from
// DefaultConfig too: Validate is strict and treats zero values as set.
//
// A Config remembers the file and the line of every key it was read from,
// so that Validate's errors name them; copying a Config keeps that.
type Config struct {
	Interface string // the NIC to attach to; required for afxdp and socket modes
	Mode      string // afxdp | socket | auto
	Listen    Listen
	Queues    int // RX queues to serve; 0 = every active RX queue of the interface (host.ActiveRxQueues)
	Schema    Schema
	Limits    Limits
	Rules     []Rule
	XDP       XDP
	Socket    Socket
	AFXDP     AFXDP
	Sinks     []sink.Spec // as the file says: defaults are filled in by sink.New
	// GatewayID names this gateway in the records of Kafka and NATS
	// sinks (their "gateway" header, NATS message ids); "" = the host name.
	// A sink's own gateway_id overrides it.
	GatewayID string
	HTTP      HTTP
	Pin       Pin
	Probes    Probes
	Workers   Workers

	src *configSource // where it was read from; nil for a Config built in code
}

// File returns the name of the file c was read from ("" for a Config
// built in code).
func (c *Config) File() string {
	if c.src == nil {
		return ""
	}
	return c.src.file
}

// Modes of Config.Mode.
const (
	ModeAFXDP  = "afxdp"
	ModeSocket = "socket"
	ModeAuto   = "auto"
	// ModePlain: plain UDP sockets, no BPF at all (no XDP policing, no
	// kernel blocks); what auto falls back to, asked for by name.
	ModePlain = "plain"
)

// Listen is where events arrive.
type Listen struct {
	Ports   []uint16 // UDP destination ports; at least one
	Address string   // bind address of the sockets (socket and plain modes); "" = all IPv4
	// VLANs are the VLAN IDs served (the outer tag): a datagram to our
	// port tagged with another VLAN is dropped in XDP as vlan_not_served
	// (in socket mode only a VLAN device of the host would deliver it).
	// Untagged frames are always served. AnyVLAN ("vlans: any") serves all.
	VLANs   []uint16
	AnyVLAN bool
}

// Schema maps the engine's roles to JSON paths (engine.Schema).
// An empty path leaves the role unused.
type Schema struct {
	Key, Amount, Type, TS, Src string
	Required                   []string // role names: key, amount, type, ts, src
}

// Limits bound the work one datagram can cause (engine.Limits).
type Limits struct {
	MaxDatagram int
	MaxEvent    int
	MaxDepth    int
	// AllowDuplicateKeys lets an event name a key the rules read twice
	// (the first value counts); by default such an event is a
	// duplicate_key decode error (I-JSON), since downstream parsers read
	// the last one and the rules would judge another event than they see.
	AllowDuplicateKeys bool
	// StateMemory bounds the bytes of all rate-limit and window tables
	// together; a config over it is refused by validate, run and reload
	// with each rule's figure. 0: half the host's memory (MemTotal).
	StateMemory int64
}

// Rule is one rule (engine.RuleSpec).
type Rule struct {
	Name      string
	When      string
	Filter    string
	RateLimit *RuleRateLimit
	Window    *RuleWindow
	Action    string // pass | drop | alert | block <duration>
}

// RuleRateLimit is a per-key token bucket of a rule.
type RuleRateLimit struct {
	Key     string  // a field path or src_ip
	Rate    string  // "100/s", "6000/m", "10/ms", "1/h"
	Burst   float64 // 0: one second's worth of Rate (at least 1)
	MaxKeys int     // 0: 1<<20
	OnFull  string  // deny (default: a new key with the table full is limited) | allow
}

// RuleWindow is a per-key sliding window of a rule.
type RuleWindow struct {
	Key     string
	Size    time.Duration
	Slide   time.Duration
	Agg     string // count | sum(f) | min(f) | max(f) | avg(f) | distinct(f)
	MaxKeys int
	OnFull  string // deny (default: an event that cannot be counted fires the rule) | allow
}

// XDP is the policy of the XDP program.
type XDP struct {
	RateLimit     XDPRateLimit // per-source kernel token bucket
	PayloadCheck  bool         // drop UDP payloads that do not start with '{'
	CostSample    int          // time one packet in N per CPU; 0 = off
	BlocklistSize int          // entries of the blocklist LRU map
	BlockMax      int          // most live blocks the feedback path keeps; <= BlocklistSize
}

// XDPRateLimit is the per-source token bucket in the XDP program.
type XDPRateLimit struct {
	Rate  string  // "" = off; else N/unit, at least 1/s
	Burst float64 // 0: one second's worth of Rate (at least 1)
}

// PerSecond returns the configured rate in packets per second, 0 when off
// or invalid (Validate reports the latter).
func (r XDPRateLimit) PerSecond() float64 {
	if r.Rate == "" {
		return 0
	}
	v, err := engine.ParseRate(r.Rate)
	if err != nil {
		return 0
	}
	return v
}

// Socket configures the socket mode (and the plain UDP fallback).
type Socket struct {
	RcvBuf int // SO_RCVBUF bytes per socket; 0 = the kernel's default
	Batch  int // datagrams per recvmmsg
}

// AFXDP configures the AF_XDP sockets, one per RX queue.
type AFXDP struct {
	FrameSize int // 2048 or 4096
	RxRing    int // descriptors, power of two
	FillRing  int // descriptors, power of two
	Frames    int // UMEM frames per socket, >= FillRing
	// Spin: how long a worker spins on its empty RX ring before it sleeps
	// in poll(2); 0 sleeps at once. Default DefaultRxSpin, whose comment
	// has the trade.
	Spin time.Duration
}

// HTTP is the metrics, status and pprof endpoint.
type HTTP struct {
	Listen string // host:port; "" = no HTTP server
	// Pprof serves /debug/pprof/* and /debug/trace (default true).
	Pprof bool
	// Token, when set, is the bearer token every request but /healthz and
	// /readyz must carry (Authorization: Bearer <token>). Required when
	// Listen is not a loopback address.
	Token string
	// TokenFile names a file whose first line is the token (instead of
	// Token; read when the config is loaded: config_env.go).
	TokenFile string
}

// Workers configures the worker threads (one per socket or queue).
type Workers struct {
	// CPUs, a cpulist ("2-7", "1,3"), are the CPUs the workers may run
	// on; "" (the default) is every online CPU. Socket and plain modes
	// open one socket (and worker) per listed CPU; in afxdp mode a queue's
	// worker runs on the CPU that serves the queue when it is listed, else
	// on a listed CPU of the same NUMA node (see plan.restrict). Keep the
	// CPUs that take the NIC's interrupts, and other busy work, out of it.
	// The process's other threads are kept on the CPUs left over
	// (host.Housekeeping.go).
	CPUs string
	// RealtimePriority, 1..99, runs each worker's pinned thread SCHED_FIFO
	// at that priority; 0 (the default) leaves it SCHED_OTHER. host.Needs
	// CAP_SYS_NICE or RLIMIT_RTPRIO; see gateway/realtime.go for the cost.
	RealtimePriority int
}

// Probes are the kernel-side latency and drop probes (bpf.LoadProbes).
type Probes struct {
	// Enabled loads them (needs CAP_PERFMON as well as CAP_BPF); a probe
	// the kernel cannot run is logged and left out.
	Enabled bool
	// Sample: on the socket and plain paths, one datagram in Sample (per
	// CPU in the kernel, per socket for receive → verdict) is timed; 1
	// times every one.
	Sample int
	// RxTimestamps keeps the host's software receive timestamping on: the
	// receive time both socket-path latencies start from (kernel queueing
	// and receive → verdict). On by default: without it both histograms
	// stay empty (unless something else on the host, such as an NTP
	// daemon, turned timestamping on). It is host-wide, a clock read per
	// packet received on any interface (≈ 30 ns, ≈ 3% of the socket path's
	// softirq work on the test VM; socket/rawsock 0.856× with it and 0.855×
	// without, within noise); turn it off where that matters more.
	RxTimestamps bool
}

// DefaultProbeSample is probes.sample's default.
const DefaultProbeSample = 64

// Pin is where BPF objects are pinned.
type Pin struct {
	Path string // a directory on bpffs
	Keep bool   // leave pins in place on a clean stop
}

// Defaults (also documented in examples/xgate.yaml).
const (
	DefaultPinPath      = "/sys/fs/bpf/xgate"
	DefaultHTTPListen   = "127.0.0.1:9100"
	DefaultSocketBatch  = 64
	DefaultSocketRcvBuf = 4 << 20
)

// DefaultConfig returns a Config with every default set and no ports,
// interface, rules or sinks.
func DefaultConfig() *Config {
	return &Config{
		Mode: ModeAuto,
		Schema: Schema{
			Key: "user_id", Amount: "amount", Type: "event_type", TS: "ts", Src: "ip",
			Required: []string{"key"},
		},
		Limits: Limits{MaxDatagram: 65535, MaxEvent: 16384, MaxDepth: 32},
		XDP: XDP{
			PayloadCheck:  true,
			CostSample:    64,
			BlocklistSize: 65536,
			BlockMax:      16384,
		},
		Socket: Socket{RcvBuf: DefaultSocketRcvBuf, Batch: DefaultSocketBatch},
		AFXDP:  AFXDP{FrameSize: 4096, RxRing: 4096, FillRing: 4096, Frames: 8192, Spin: DefaultRxSpin},
		HTTP:   HTTP{Listen: DefaultHTTPListen, Pprof: true},
		Pin:    Pin{Path: DefaultPinPath},
		Probes: Probes{Enabled: true, Sample: DefaultProbeSample, RxTimestamps: true},
	}
}

// FieldError is one configuration error: the file, the line (0 when
// unknown) and the key, as a path like rules[2].rate_limit.rate.
type FieldError struct {
	File string
	Line int
	Key  string
	Msg  string
	Err  error // the underlying error, e.g. an *engine.ExprError; may be nil
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// source is where a Config was read from.
type configSource struct {
	file  string
	lines map[string]int // key path → line of the key
}

func (s *configSource) line(key string) int {
	if s == nil {
		return 0
	}
	for {
		if l, ok := s.lines[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i <= 0 {
			return s.lines[""]
		}
		key = key[:i]
	}
}

// LoadConfig reads and validates the YAML config at path. The error lists
// every problem found, one per line.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes and validates a YAML config; name is used in error
// messages. The error joins one *FieldError per problem (errors.Join),
// ordered by line.
func ParseConfig(name string, data []byte) (*Config, error) {
	return ParseConfigEnv(name, data, nil)
}

// ParseConfigEnv is ParseConfig with ${VAR} in values taken from lookup
// (os.LookupEnv: --expand-env); a nil lookup rejects them (config_env.go).
func ParseConfigEnv(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	if name == "" {
		name = "config"
	}
	d := &configDecoder{src: &configSource{file: name, lines: map[string]int{}}, bad: map[string]bool{}}
	c := DefaultConfig()
	c.src = d.src

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case err == io.EOF:
		// an empty file: defaults only; Validate says what is missing
	case err != nil:
		return nil, joinErrors([]*FieldError{yamlSyntaxError(name, err)})
	default:
		var extra yaml.Node
		if err := dec.Decode(&extra); err != io.EOF {
			line := extra.Line
			if err != nil {
				return nil, joinErrors([]*FieldError{yamlSyntaxError(name, err)})
			}
			return nil, joinErrors([]*FieldError{{File: name, Line: line, Msg: "more than one YAML document; a config is one"}})
		}
		root := &doc
		if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
			root = root.Content[0]
		}
		d.src.lines[""] = root.Line
		if errs := expandEnv(name, root, lookup); len(errs) > 0 {
			return nil, joinErrors(errs)
		}
		d.config(c, root)
	}
	errs := append(d.errs, c.check(d.bad)...)
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	return c, nil
}

// yamlSyntaxError turns "yaml: line 3: did not find expected key" into a
// FieldError on line 3.
func yamlSyntaxError(file string, err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ": "); ok {
			if v, err := strconv.Atoi(n); err == nil {
				line, msg = v, tail
			}
		}
	}
	return &FieldError{File: file, Line: line, Msg: "invalid YAML: " + msg, Err: err}
}

func joinErrors(errs []*FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

// ---------------------------------------------------------------------------
// Decoding: YAML nodes → Config, with type errors.

type configDecoder struct {
	src  *configSource
	errs []*FieldError
	bad  map[string]bool // keys whose value could not be decoded
	// merges counts << expansions: a mapping may merge itself, and a list
	// of aliases per level would otherwise grow exponentially.
	merges int
}

func (d *configDecoder) errAt(n *yaml.Node, key, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &FieldError{File: d.src.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
	d.bad[key] = true
}

func keyJoin(p, k string) string {
	if p == "" {
		return k
	}
	return p + "." + k
}

func keyIndex(p string, i int) string { return fmt.Sprintf("%s[%d]", p, i) }

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 64; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int":
			return "the integer " + n.Value
		case "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unexpected node"
}

type yamlPair struct{ k, v *yaml.Node }

// pairs lists the entries of a mapping with YAML merge keys (<<) expanded:
// explicit entries win over merged ones.
func (d *configDecoder) pairs(n *yaml.Node, p string, depth int) []yamlPair {
	var explicit, merged []yamlPair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.ShortTag() == "!!merge") {
			d.merges++
			if depth > 8 || d.merges > 1000 {
				if !d.bad[p] {
					d.errAt(k, p, "merge keys (<<) nested or repeated too much")
				}
				continue
			}
			v = resolve(v)
			srcs := []*yaml.Node{v}
			if v != nil && v.Kind == yaml.SequenceNode {
				srcs = v.Content
			}
			for _, s := range srcs {
				s = resolve(s)
				if s == nil || s.Kind != yaml.MappingNode {
					d.errAt(k, p, "<< merges a mapping, not %s", kindName(v))
					continue
				}
				merged = append(merged, d.pairs(s, p, depth+1)...)
			}
			continue
		}
		explicit = append(explicit, yamlPair{k, v})
	}
	if len(merged) == 0 {
		return explicit
	}
	seen := map[string]bool{}
	for _, e := range explicit {
		seen[e.k.Value] = true
	}
	out := explicit
	for _, m := range merged {
		if !seen[m.k.Value] {
			seen[m.k.Value] = true
			out = append(out, m)
		}
	}
	return out
}

// mapping decodes a mapping node: for every key in fields it records the
// line and calls the handler with the value and the key's path; unknown
// and repeated keys are errors.
func (d *configDecoder) mapping(n *yaml.Node, p string, fields map[string]func(v *yaml.Node, p string)) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errAt(n, p, "want a mapping of %s, got %s", keyList(fields), kindName(n))
		return
	}
	seen := map[string]int{}
	for _, e := range d.pairs(n, p, 0) {
		k := resolve(e.k)
		if k == nil || k.Kind != yaml.ScalarNode {
			d.errAt(e.k, p, "a key must be a plain name, got %s", kindName(k))
			continue
		}
		kp := keyJoin(p, k.Value)
		if line, dup := seen[k.Value]; dup {
			d.errAt(e.k, kp, "repeated key (first on line %d)", line)
			continue
		}
		seen[k.Value] = e.k.Line
		fn, ok := fields[k.Value]
		if !ok {
			msg := "unknown key"
			if s := closest(k.Value, fields); s != "" {
				msg += fmt.Sprintf("; did you mean %s?", s)
			} else {
				msg += " (want one of " + keyList(fields) + ")"
			}
			d.errAt(e.k, kp, "%s", msg)
			continue
		}
		d.src.lines[kp] = e.k.Line
		fn(resolve(e.v), kp)
	}
}

func keyList(fields map[string]func(*yaml.Node, string)) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// closest returns the known key nearest to k by edit distance, if close.
func closest(k string, fields map[string]func(*yaml.Node, string)) string {
	best, bestD := "", 3
	if len(k) > 64 {
		return ""
	}
	for f := range fields {
		if d := editDistance(k, f); d < bestD || d == bestD && f < best {
			best, bestD = f, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sequence calls fn for each item of a list.
func (d *configDecoder) sequence(n *yaml.Node, p, what string, fn func(i int, item *yaml.Node, p string)) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errAt(n, p, "want a list of %s, got %s", what, kindName(n))
		return
	}
	for i, item := range n.Content {
		ip := keyIndex(p, i)
		d.src.lines[ip] = item.Line
		fn(i, resolve(item), ip)
	}
}

func (d *configDecoder) scalar(n *yaml.Node, p, want string) bool {
	if n == nil || n.Kind != yaml.ScalarNode {
		if n == nil {
			d.errAt(n, p, "want %s", want)
		} else {
			d.errAt(n, p, "want %s, got %s", want, kindName(n))
		}
		return false
	}
	return true
}

// str sets *dst to a scalar's text; null leaves it unchanged.
func (d *configDecoder) str(dst *string) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if isNull(n) {
			return
		}
		if d.scalar(n, p, "a string") {
			*dst = strings.TrimSpace(n.Value)
		}
	}
}

// condition is a when or filter string. A YAML block scalar (| or >) may
// span lines; the condition language reads newlines as blanks, and so
// does the caret of an error message once they are blanks.
func (d *configDecoder) condition(dst *string) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		d.str(dst)(n, p)
		*dst = strings.Map(func(r rune) rune {
			if r == '\n' || r == '\r' || r == '\t' {
				return ' '
			}
			return r
		}, *dst)
	}
}

func (d *configDecoder) boolean(dst *bool) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if isNull(n) {
			return
		}
		if !d.scalar(n, p, "true or false") {
			return
		}
		var v bool
		if n.ShortTag() != "!!bool" || n.Decode(&v) != nil {
			d.errAt(n, p, "want true or false, got %s", kindName(n))
			return
		}
		*dst = v
	}
}

func (d *configDecoder) integer(n *yaml.Node, p string) (int64, bool) {
	if !d.scalar(n, p, "an integer") {
		return 0, false
	}
	var v int64
	if n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		d.errAt(n, p, "want an integer, got %s", kindName(n))
		return 0, false
	}
	return v, true
}

func (d *configDecoder) intField(dst *int) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if isNull(n) {
			return
		}
		v, ok := d.integer(n, p)
		if !ok {
			return
		}
		if v < math.MinInt32 || v > math.MaxInt32 {
			d.errAt(n, p, "%d is out of range", v)
			return
		}
		*dst = int(v)
	}
}

func (d *configDecoder) floatField(dst *float64) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if isNull(n) || !d.scalar(n, p, "a number") {
			return
		}
		var v float64
		if t := n.ShortTag(); t != "!!int" && t != "!!float" || n.Decode(&v) != nil {
			d.errAt(n, p, "want a number, got %s", kindName(n))
			return
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			d.errAt(n, p, "want a finite number, got %s", n.Value)
			return
		}
		*dst = v
	}
}

// size reads a byte count: an integer or a number with a unit
// (KiB, MiB, GiB, or K, M, G as powers of 1024; kB, MB, GB as powers of 1000).
func (d *configDecoder) size(dst *int64) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if isNull(n) || !d.scalar(n, p, "a size") {
			return
		}
		v, err := parseSize(n.Value)
		if err != nil {
			d.errAt(n, p, "%v", err)
			return
		}
		*dst = v
	}
}

func (d *configDecoder) sizeInt(dst *int) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		var v int64 = int64(*dst)
		d.size(&v)(n, p)
		if d.bad[p] {
			return
		}
		if v > math.MaxInt32 {
			d.errAt(n, p, "%s is too large (at most 2GiB)", n.Value)
			return
		}
		*dst = int(v)
	}
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(t, "_", ""), 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a size: want bytes or a number with KiB, MiB or GiB", s)
	}
	if v > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return v * mult, nil
}

func (d *configDecoder) duration(dst *time.Duration) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if isNull(n) || !d.scalar(n, p, "a duration") {
			return
		}
		v, err := time.ParseDuration(n.Value)
		if err != nil {
			d.errAt(n, p, "%q is not a duration: want e.g. 500ms, 60s, 5m", n.Value)
			return
		}
		*dst = v
	}
}

func (d *configDecoder) stringList(dst *[]string) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if isNull(n) {
			return
		}
		out := []string{}
		d.sequence(n, p, "strings", func(_ int, item *yaml.Node, ip string) {
			var s string
			d.str(&s)(item, ip)
			out = append(out, s)
		})
		*dst = out
	}
}

func (d *configDecoder) config(c *Config, root *yaml.Node) {
	d.mapping(root, "", map[string]func(*yaml.Node, string){
		"interface": d.str(&c.Interface),
		"mode":      d.str(&c.Mode),
		"queues":    d.intField(&c.Queues),
		"listen": func(n *yaml.Node, p string) {
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"ports": func(n *yaml.Node, p string) {
					if isNull(n) {
						return
					}
					c.Listen.Ports = []uint16{}
					d.sequence(n, p, "UDP ports", func(_ int, item *yaml.Node, ip string) {
						v, ok := d.integer(item, ip)
						if !ok {
							return
						}
						if v < 1 || v > 65535 {
							d.errAt(item, ip, "port %d is not in 1..65535", v)
							return
						}
						c.Listen.Ports = append(c.Listen.Ports, uint16(v))
					})
				},
				"address": d.str(&c.Listen.Address),
				"vlans": func(n *yaml.Node, p string) {
					if isNull(n) {
						return
					}
					if n.Kind == yaml.ScalarNode && n.Value == "any" {
						c.Listen.AnyVLAN = true
						return
					}
					c.Listen.VLANs = []uint16{}
					d.sequence(n, p, "VLAN IDs (or: any)", func(_ int, item *yaml.Node, ip string) {
						v, ok := d.integer(item, ip)
						if !ok {
							return
						}
						if v < 1 || v > 4094 {
							d.errAt(item, ip, "VLAN ID %d is not in 1..4094", v)
							return
						}
						c.Listen.VLANs = append(c.Listen.VLANs, uint16(v))
					})
				},
			})
		},
		"schema": func(n *yaml.Node, p string) {
			s := &c.Schema
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"key":      d.role(&s.Key),
				"amount":   d.role(&s.Amount),
				"type":     d.role(&s.Type),
				"ts":       d.role(&s.TS),
				"src":      d.role(&s.Src),
				"required": d.stringList(&s.Required),
			})
		},
		"limits": func(n *yaml.Node, p string) {
			l := &c.Limits
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"max_datagram":         d.sizeInt(&l.MaxDatagram),
				"max_event":            d.sizeInt(&l.MaxEvent),
				"max_depth":            d.intField(&l.MaxDepth),
				"allow_duplicate_keys": d.boolean(&l.AllowDuplicateKeys),
				"state_memory":         d.size(&l.StateMemory),
			})
		},
		"rules": func(n *yaml.Node, p string) {
			if isNull(n) {
				return
			}
			c.Rules = []Rule{}
			d.sequence(n, p, "rules", func(_ int, item *yaml.Node, ip string) {
				c.Rules = append(c.Rules, d.rule(item, ip))
			})
		},
		"xdp": func(n *yaml.Node, p string) {
			x := &c.XDP
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"rate_limit": func(n *yaml.Node, p string) {
					d.mapping(n, p, map[string]func(*yaml.Node, string){
						"rate":  d.str(&x.RateLimit.Rate),
						"burst": d.floatField(&x.RateLimit.Burst),
					})
				},
				"payload_check":  d.boolean(&x.PayloadCheck),
				"cost_sample":    d.intField(&x.CostSample),
				"blocklist_size": d.intField(&x.BlocklistSize),
				"block_max":      d.intField(&x.BlockMax),
			})
		},
		"socket": func(n *yaml.Node, p string) {
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"rcvbuf": d.sizeInt(&c.Socket.RcvBuf),
				"batch":  d.intField(&c.Socket.Batch),
			})
		},
		"afxdp": func(n *yaml.Node, p string) {
			a := &c.AFXDP
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"frame_size": d.intField(&a.FrameSize),
				"rx_ring":    d.intField(&a.RxRing),
				"fill_ring":  d.intField(&a.FillRing),
				"frames":     d.intField(&a.Frames),
				"spin":       d.duration(&a.Spin),
			})
		},
		"gateway_id": d.str(&c.GatewayID),
		"sinks": func(n *yaml.Node, p string) {
			if isNull(n) {
				return
			}
			c.Sinks = []sink.Spec{}
			d.sequence(n, p, "sinks", func(_ int, item *yaml.Node, ip string) {
				c.Sinks = append(c.Sinks, d.sink(item, ip))
			})
		},
		"http": func(n *yaml.Node, p string) {
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"listen":     d.str(&c.HTTP.Listen),
				"pprof":      d.boolean(&c.HTTP.Pprof),
				"token":      d.str(&c.HTTP.Token),
				"token_file": d.str(&c.HTTP.TokenFile),
			})
		},
		"pin": func(n *yaml.Node, p string) {
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"path": d.str(&c.Pin.Path),
				"keep": d.boolean(&c.Pin.Keep),
			})
		},
		"probes": func(n *yaml.Node, p string) {
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"enabled":       d.boolean(&c.Probes.Enabled),
				"sample":        d.intField(&c.Probes.Sample),
				"rx_timestamps": d.boolean(&c.Probes.RxTimestamps),
			})
		},
		"workers": func(n *yaml.Node, p string) {
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"realtime_priority": d.intField(&c.Workers.RealtimePriority),
				"cpus":              d.str(&c.Workers.CPUs),
			})
		},
	})
}

// role is a schema path: null or "" disables the role.
func (d *configDecoder) role(dst *string) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if isNull(n) {
			*dst = ""
			return
		}
		d.str(dst)(n, p)
	}
}

func (d *configDecoder) rule(n *yaml.Node, p string) Rule {
	var r Rule
	if isNull(n) || n.Kind != yaml.MappingNode {
		d.errAt(n, p, "want a rule (a mapping with name, when, rate_limit or window, action), got %s", kindName(n))
		return r
	}
	d.mapping(n, p, map[string]func(*yaml.Node, string){
		"name":   d.str(&r.Name),
		"when":   d.condition(&r.When),
		"filter": d.condition(&r.Filter),
		"action": d.str(&r.Action),
		"rate_limit": func(n *yaml.Node, p string) {
			if isNull(n) {
				return
			}
			rl := &RuleRateLimit{}
			r.RateLimit = rl
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"key":      d.str(&rl.Key),
				"rate":     d.str(&rl.Rate),
				"burst":    d.floatField(&rl.Burst),
				"max_keys": d.intField(&rl.MaxKeys),
				"on_full":  d.str(&rl.OnFull),
			})
		},
		"window": func(n *yaml.Node, p string) {
			if isNull(n) {
				return
			}
			w := &RuleWindow{}
			r.Window = w
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"key":      d.str(&w.Key),
				"size":     d.duration(&w.Size),
				"slide":    d.duration(&w.Slide),
				"agg":      d.str(&w.Agg),
				"max_keys": d.intField(&w.MaxKeys),
				"on_full":  d.str(&w.OnFull),
			})
		},
	})
	return r
}

func (d *configDecoder) sink(n *yaml.Node, p string) sink.Spec {
	var s sink.Spec
	if isNull(n) || n.Kind != yaml.MappingNode {
		d.errAt(n, p, "want a sink (a mapping with type, what, …), got %s", kindName(n))
		return s
	}
	k, nt := &s.Kafka, &s.NATS
	idempotent := true
	d.mapping(n, p, map[string]func(*yaml.Node, string){
		"type":         d.str(&s.Type),
		"path":         d.str(&s.Path),
		"what":         d.str(&s.What),
		"fsync":        d.str(&s.Fsync),
		"rotate_bytes": d.size(&s.RotateBytes),
		"address":      d.str(&s.Address),
		"on_full":      d.str(&s.OnFull),
		"buffer":       d.size(&s.Buffer),
		// kafka and nats
		"gateway_id":       d.str(&s.GatewayID),
		"delivery_timeout": d.duration(&s.DeliveryTimeout),
		"tls": func(n *yaml.Node, p string) {
			t := &s.TLS
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"enable":               d.boolean(&t.Enable),
				"ca_file":              d.str(&t.CAFile),
				"cert_file":            d.str(&t.CertFile),
				"key_file":             d.str(&t.KeyFile),
				"server_name":          d.str(&t.ServerName),
				"insecure_skip_verify": d.boolean(&t.InsecureSkipVerify),
			})
		},
		// kafka
		"brokers":         d.stringList(&k.Brokers),
		"topic":           d.str(&k.Topic),
		"client_id":       d.str(&k.ClientID),
		"acks":            d.str(&k.Acks),
		"idempotent":      d.boolean(&idempotent),
		"compression":     d.str(&k.Compression),
		"linger":          d.duration(&k.Linger),
		"batch_max_bytes": d.sizeInt(&k.BatchMaxBytes),
		"create_topic":    d.boolean(&k.CreateTopic),
		"partitions":      d.intField(&k.Partitions),
		"sasl": func(n *yaml.Node, p string) {
			a := &k.SASL
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"mechanism":     d.str(&a.Mechanism),
				"user":          d.str(&a.User),
				"password":      d.str(&a.Password),
				"password_file": d.str(&a.PasswordFile),
			})
		},
		// nats
		"urls":            d.stringList(&nt.URLs),
		"subject":         d.str(&nt.Subject),
		"stream":          d.str(&nt.Stream),
		"create_stream":   d.boolean(&nt.CreateStream),
		"stream_subjects": d.stringList(&nt.StreamSubjects),
		"max_pending":     d.intField(&nt.MaxPending),
		"ack_timeout":     d.duration(&nt.AckTimeout),
		"user":            d.str(&nt.User),
		"password":        d.str(&nt.Password),
		"password_file":   d.str(&nt.PasswordFile),
		"token_file":      d.str(&nt.TokenFile),
		"creds_file":      d.str(&nt.CredsFile),
	})
	k.NoIdempotence = !idempotent
	return s
}

// ---------------------------------------------------------------------------
// Validation: values, cross-field rules, and the engine's compile.

// Validate checks every value and compiles the rules with the engine. The
// error joins one *FieldError per problem; when the Config was read from a
// file they name its file and lines.
func (c *Config) Validate() error {
	return joinErrors(c.check(nil))
}

type configChecker struct {
	src  *configSource
	file string
	bad  map[string]bool
	errs []*FieldError
}

// skip reports whether key or a parent of it already failed to decode.
func (k *configChecker) skip(key string) bool {
	for {
		if k.bad[key] {
			return true
		}
		i := strings.LastIndexAny(key, ".[")
		if i <= 0 {
			return k.bad[""] // the root itself was unusable
		}
		key = key[:i]
	}
}

// badUnder reports whether key or anything below it failed to decode.
func (k *configChecker) badUnder(key string) bool {
	if k.skip(key) {
		return true
	}
	for b := range k.bad {
		if strings.HasPrefix(b, key+".") || strings.HasPrefix(b, key+"[") {
			return true
		}
	}
	return false
}

func (k *configChecker) errf(key, format string, args ...any) {
	k.add(key, fmt.Sprintf(format, args...), nil)
}

// errfAt reports a problem of key on the line of lineKey (for a missing
// key that another one asks for).
func (k *configChecker) errfAt(lineKey, key, format string, args ...any) {
	if k.skip(key) {
		return
	}
	k.errs = append(k.errs, &FieldError{File: k.file, Line: k.src.line(lineKey), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (k *configChecker) add(key, msg string, err error) {
	if k.skip(key) {
		return
	}
	k.errs = append(k.errs, &FieldError{File: k.file, Line: k.src.line(key), Key: key, Msg: msg, Err: err})
}

func powerOfTwo(v int) bool { return v > 0 && v&(v-1) == 0 }

func (c *Config) check(bad map[string]bool) []*FieldError {
	k := &configChecker{src: c.src, file: "config", bad: bad}
	if c.src != nil {
		k.file = c.src.file
	}
	switch c.Mode {
	case ModeAFXDP, ModeSocket:
		if c.Interface == "" {
			k.errfAt("mode", "interface", "missing: mode %s attaches to an interface, e.g. interface: eth0", c.Mode)
		}
	case ModeAuto, ModePlain:
	default:
		k.errf("mode", "%q: want afxdp, socket, plain or auto", c.Mode)
	}
	if c.Interface == "" && k.has("interface") {
		k.errf("interface", "empty: set the NIC to attach to, e.g. interface: eth0 (ip -br link lists them), or leave the key out to run plain UDP sockets without XDP")
	}
	if c.Interface != "" && (len(c.Interface) >= 16 || strings.ContainsAny(c.Interface, "/ \t\n:")) {
		k.errf("interface", "%q is not an interface name", c.Interface)
	}
	if len(c.Listen.Ports) == 0 {
		k.errf("listen.ports", "missing: name at least one UDP port, e.g. listen: {ports: [9000]}")
	}
	seenPort := map[uint16]int{}
	for i, p := range c.Listen.Ports {
		key := keyIndex("listen.ports", i)
		if p == 0 {
			k.errf(key, "port 0 is not in 1..65535")
		}
		if j, dup := seenPort[p]; dup {
			k.errf(key, "port %d is listed twice (also listen.ports[%d])", p, j)
		}
		seenPort[p] = i
	}
	if a := c.Listen.Address; a != "" {
		if _, err := netip.ParseAddr(a); err != nil {
			k.errf("listen.address", "%q is not an IP address", a)
		}
	}
	if c.Queues < 0 || c.Queues > 4096 {
		k.errf("queues", "%d: want 0 (all) .. 4096", c.Queues)
	}
	c.checkLimits(k)
	c.checkXDP(k)
	if c.Socket.RcvBuf < 0 || c.Socket.RcvBuf > 1<<30 {
		k.errf("socket.rcvbuf", "%d: want 0 (kernel default) .. 1GiB", c.Socket.RcvBuf)
	}
	if c.Socket.Batch < 1 || c.Socket.Batch > 1024 {
		k.errf("socket.batch", "%d: want 1..1024", c.Socket.Batch)
	}
	c.checkAFXDP(k)
	if c.Probes.Sample < 1 || c.Probes.Sample > 1<<20 {
		k.errf("probes.sample", "%d: want 1 (time every datagram) .. %d", c.Probes.Sample, 1<<20)
	}
	if cpus, err := host.ParseCPUList(c.Workers.CPUs); err != nil {
		k.errf("workers.cpus", "%v", err)
	} else if c.Workers.CPUs != "" && len(cpus) == 0 {
		k.errf("workers.cpus", "%q lists no CPU", c.Workers.CPUs)
	}
	if r := c.Workers.RealtimePriority; r < 0 || r > host.MaxRealtimePriority {
		k.errf("workers.realtime_priority", "%d: want 0 (off) or a SCHED_FIFO priority 1..%d", r, host.MaxRealtimePriority)
	}
	c.checkSinks(k)
	c.readTokenFile(k)
	if c.HTTP.Listen == "" {
		// no HTTP server
	} else if host, port, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		k.errf("http.listen", "%q: want host:port, e.g. 127.0.0.1:9100", c.HTTP.Listen)
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		k.errf("http.listen", "%q: port %q is not a number in 0..65535", c.HTTP.Listen, port)
	} else if host != "" && host != "localhost" {
		if a, err := netip.ParseAddr(host); err != nil {
			k.errf("http.listen", "%q: host %q is not an IP address or localhost", c.HTTP.Listen, host)
		} else if !a.IsLoopback() && c.HTTP.Token == "" {
			k.errf("http.token", "required when http.listen %q is not a loopback address (metrics, status and pprof would be open to the network)", c.HTTP.Listen)
		}
	} else if host == "" && c.HTTP.Token == "" {
		k.errf("http.token", "required when http.listen %q listens on every address (metrics, status and pprof would be open to the network)", c.HTTP.Listen)
	}
	if t := c.HTTP.Token; t != "" && (len(t) < 16 || strings.TrimSpace(t) != t || strings.ContainsAny(t, " \t\r\n")) {
		k.errf("http.token", "want at least 16 characters without spaces")
	}
	if p := c.Pin.Path; !path.IsAbs(p) || path.Clean(p) == "/" {
		k.errf("pin.path", "%q: want an absolute directory on bpffs, e.g. %s", p, DefaultPinPath)
	}
	schemaOK := c.checkSchema(k)
	c.checkRules(k, schemaOK)
	return k.errs
}

func (c *Config) checkLimits(k *configChecker) {
	l := c.Limits
	if l.MaxDatagram < 1 || l.MaxDatagram > 65535 {
		k.errf("limits.max_datagram", "%d: want 1..65535", l.MaxDatagram)
	}
	if l.MaxEvent < 1 || l.MaxEvent > l.MaxDatagram && l.MaxDatagram >= 1 {
		k.errf("limits.max_event", "%d: want 1..max_datagram (%d)", l.MaxEvent, l.MaxDatagram)
	}
	if l.MaxDepth < 1 || l.MaxDepth > 1024 {
		k.errf("limits.max_depth", "%d: want 1..1024", l.MaxDepth)
	}
}

func (c *Config) checkXDP(k *configChecker) {
	x := c.XDP
	if x.RateLimit.Rate != "" {
		v, err := engine.ParseRate(x.RateLimit.Rate)
		switch {
		case err != nil:
			k.errf("xdp.rate_limit.rate", "%s", strings.TrimPrefix(err.Error(), "rate "))
		case v < 1:
			k.errf("xdp.rate_limit.rate", "%q is %g/s: the kernel bucket counts whole packets per second, at least 1/s", x.RateLimit.Rate, v)
		case v > 1e9:
			k.errf("xdp.rate_limit.rate", "%q: at most 1e9/s", x.RateLimit.Rate)
		}
	} else if x.RateLimit.Burst != 0 {
		k.errf("xdp.rate_limit.burst", "burst without a rate: set xdp.rate_limit.rate too")
	}
	if b := x.RateLimit.Burst; b != 0 && (b < 1 || b > 1e12) {
		k.errf("xdp.rate_limit.burst", "%g: want 1..1e12 (or leave it out for one second's worth)", b)
	}
	if x.CostSample < 0 {
		k.errf("xdp.cost_sample", "%d: want 0 (off) or N to time one packet in N", x.CostSample)
	}
	if x.BlocklistSize < 1 || x.BlocklistSize > 1<<24 {
		k.errf("xdp.blocklist_size", "%d: want 1..%d", x.BlocklistSize, 1<<24)
	}
	if x.BlockMax < 1 || x.BlocklistSize >= 1 && x.BlockMax > x.BlocklistSize {
		k.errf("xdp.block_max", "%d: want 1..blocklist_size (%d)", x.BlockMax, x.BlocklistSize)
	}
}

func (c *Config) checkAFXDP(k *configChecker) {
	a := c.AFXDP
	if a.FrameSize != 2048 && a.FrameSize != 4096 {
		k.errf("afxdp.frame_size", "%d: want 2048 or 4096", a.FrameSize)
	}
	if !powerOfTwo(a.RxRing) || a.RxRing < 64 || a.RxRing > 1<<16 {
		k.errf("afxdp.rx_ring", "%d: want a power of two in 64..65536", a.RxRing)
	}
	if !powerOfTwo(a.FillRing) || a.FillRing < 64 || a.FillRing > 1<<16 {
		k.errf("afxdp.fill_ring", "%d: want a power of two in 64..65536", a.FillRing)
	}
	if a.Frames < a.FillRing || a.Frames > 1<<20 {
		k.errf("afxdp.frames", "%d: want fill_ring (%d) .. %d", a.Frames, a.FillRing, 1<<20)
	}
	if a.Spin < 0 || a.Spin > MaxRxSpin {
		k.errf("afxdp.spin", "%v: want 0 (sleep at once) .. %v", a.Spin, MaxRxSpin)
	}
}

// checkSinks checks the sinks with sink.Check, which knows every key of
// theirs, and what only the config knows: schema.key for keyed sinks and
// the default gateway_id.
func (c *Config) checkSinks(k *configChecker) {
	key := func(i int, f string) string { return keyJoin(keyIndex("sinks", i), f) }
	for _, e := range sink.Check(c.Sinks, func(i int, f string) bool { return k.has(key(i, f)) }) {
		if e.Key == "key_path" {
			continue // schema.key, checked below and by checkSchema
		}
		k.errf(key(e.Index, e.Key), "%s", e.Msg)
	}
	for i, s := range c.Sinks {
		if (s.Type == "kafka" || s.Type == "nats") && c.Schema.Key == "" {
			k.errf(key(i, "type"), "%s sinks key records by schema.key, which is empty: set it", s.Type)
		}
	}
	if c.GatewayID != "" {
		if err := sink.ValidGatewayID(c.GatewayID); err != nil {
			k.errf("gateway_id", "%v", err)
		}
	}
}

// has reports whether the config file set key.
func (k *configChecker) has(key string) bool {
	if k.src == nil {
		return false
	}
	_, ok := k.src.lines[key]
	return ok
}

// sinkSpecs are the sinks with what they take from the rest of the
// config: kafka and nats sinks key their records by schema.key and name
// the gateway by the top-level gateway_id unless they have their own.
func (c *Config) sinkSpecs() []sink.Spec {
	out := slices.Clone(c.Sinks)
	for i := range out {
		if sp := &out[i]; sp.Type == "kafka" || sp.Type == "nats" {
			sp.KeyPath = c.Schema.Key
			sp.GatewayID = cmp.Or(sp.GatewayID, c.GatewayID)
		}
	}
	return out
}

var roleNames = map[string]engine.Role{
	"key": engine.RoleKey, "amount": engine.RoleAmount, "type": engine.RoleType,
	"ts": engine.RoleTS, "src": engine.RoleSrc,
}

func (c *Config) roleRequired() ([]engine.Role, []int) {
	var roles []engine.Role
	var badIdx []int
	for i, name := range c.Schema.Required {
		r, ok := roleNames[name]
		if !ok {
			badIdx = append(badIdx, i)
			continue
		}
		roles = append(roles, r)
	}
	return roles, badIdx
}

func (c *Config) rolePath(r engine.Role) string {
	s := c.Schema
	switch r {
	case engine.RoleKey:
		return s.Key
	case engine.RoleAmount:
		return s.Amount
	case engine.RoleType:
		return s.Type
	case engine.RoleTS:
		return s.TS
	case engine.RoleSrc:
		return s.Src
	}
	return ""
}

// checkSchema reports whether the schema compiles, so rules can be
// compiled against it.
func (c *Config) checkSchema(k *configChecker) bool {
	n := len(k.errs)
	roles, badIdx := c.roleRequired()
	for _, i := range badIdx {
		k.errf(keyIndex("schema.required", i), "%q is not a role: want key, amount, type, ts or src", c.Schema.Required[i])
	}
	for i, r := range roles {
		if c.rolePath(r) == "" {
			k.errf("schema.required", "role %s is required but schema.%s is empty", r, r)
		}
		for _, q := range roles[:i] {
			if q == r {
				k.errf("schema.required", "role %s is listed twice", r)
			}
		}
	}
	for _, name := range []string{"key", "amount", "type", "ts", "src"} {
		p := c.rolePath(roleNames[name])
		if p == "" {
			continue
		}
		s := engine.DefaultSchema()
		s.Key, s.Amount, s.Type, s.TS, s.Src, s.Required = "", "", "", "", "", nil
		switch name {
		case "key":
			s.Key = p
		case "amount":
			s.Amount = p
		case "type":
			s.Type = p
		case "ts":
			s.TS = p
		case "src":
			s.Src = p
		}
		if _, err := engine.New(engine.Config{Schema: &s}); err != nil {
			msg := err.Error()
			msg = strings.TrimPrefix(msg, "schema "+name+": ")
			k.errf("schema."+name, "%s", msg)
		}
	}
	if len(k.errs) > n {
		return false
	}
	if _, err := engine.New(engine.Config{Schema: c.engineSchema()}); err != nil {
		k.add("schema", err.Error(), err)
		return false
	}
	return !k.skip("schema")
}

func (c *Config) checkRules(k *configChecker, schemaOK bool) {
	names := map[string]int{}
	compileOK := true
	for i := range c.Rules {
		r := &c.Rules[i]
		p := keyIndex("rules", i)
		key := func(f string) string { return keyJoin(p, f) }
		n := len(k.errs)
		if k.badUnder(p) {
			compileOK = false
			if k.skip(p) {
				continue
			}
		}
		if r.Name == "" {
			k.errf(key("name"), "missing: every rule has a name")
		} else if j, dup := names[r.Name]; dup {
			k.errf(key("name"), "%q is already the name of rules[%d]", r.Name, j)
		} else {
			names[r.Name] = i
		}
		if r.Action == "" {
			k.errf(key("action"), "missing: want pass, drop, alert or block <duration>")
		} else if _, _, err := engine.ParseAction(r.Action); err != nil {
			k.errf(key("action"), "%s", strings.TrimPrefix(err.Error(), "action "))
		}
		if r.RateLimit != nil && r.Window != nil {
			k.errf(key("window"), "a rule has rate_limit or window, not both")
		}
		if rl := r.RateLimit; rl != nil {
			if rl.Key == "" {
				k.errf(key("rate_limit.key"), "missing: name a field (user_id) or %s", engine.SrcKey)
			}
			if rl.Rate == "" {
				k.errf(key("rate_limit.rate"), "missing: want N/unit, e.g. 100/s")
			} else if _, err := engine.ParseRate(rl.Rate); err != nil {
				k.errf(key("rate_limit.rate"), "%s", strings.TrimPrefix(err.Error(), "rate "))
			}
			if rl.Burst != 0 && rl.Burst < 1 {
				k.errf(key("rate_limit.burst"), "%g: want >= 1 (or leave it out for one second's worth)", rl.Burst)
			}
			checkMaxKeys(k, key("rate_limit.max_keys"), rl.MaxKeys)
			checkOnFull(k, key("rate_limit.on_full"), rl.OnFull)
		}
		if w := r.Window; w != nil {
			if w.Key == "" {
				k.errf(key("window.key"), "missing: name a field (user_id) or %s", engine.SrcKey)
			}
			if w.Agg == "" {
				k.errf(key("window.agg"), "missing: want count, sum(f), min(f), max(f), avg(f) or distinct(f)")
			}
			switch {
			case w.Size <= 0:
				k.errf(key("window.size"), "missing or not positive: want e.g. 60s")
			case w.Slide <= 0:
				k.errf(key("window.slide"), "missing or not positive: want e.g. 5s (size must be a multiple of it)")
			case w.Slide < time.Millisecond:
				k.errf(key("window.slide"), "%v: want at least 1ms", w.Slide)
			case w.Size%w.Slide != 0:
				k.errf(key("window.size"), "%v is not a multiple of slide %v", w.Size, w.Slide)
			case w.Size/w.Slide > 1024:
				k.errf(key("window.slide"), "size/slide = %d segments: at most 1024", w.Size/w.Slide)
			}
			checkMaxKeys(k, key("window.max_keys"), w.MaxKeys)
			checkOnFull(k, key("window.on_full"), w.OnFull)
		}
		if len(k.errs) > n || !schemaOK || k.badUnder(p) {
			compileOK = false
			continue
		}
		if !c.compileRule(k, i) {
			compileOK = false
		}
	}
	if compileOK && schemaOK && len(c.Rules) > 0 {
		// Each rule compiled alone; together they may still exceed what
		// one program can read (distinct top-level fields).
		if _, err := engine.New(c.validationConfig(c.Rules)); err != nil {
			k.add("rules", err.Error(), err)
		} else if _, err := engine.Validate(c.EngineConfig()); err != nil {
			// What validates also runs: the real tables' size against the
			// budget, computed without allocating them.
			key := "rules"
			if k.has("limits.state_memory") {
				key = "limits.state_memory"
			}
			k.add(key, err.Error()+" (raise limits.state_memory or lower max_keys)", err)
		}
	}
}

func checkOnFull(k *configChecker, key, v string) {
	if _, err := engine.ParseOnFull(v); err != nil {
		k.errf(key, "%q: want deny (the default: fail closed) or allow", v)
	}
}

func checkMaxKeys(k *configChecker, key string, v int) {
	if v < 0 || v > 1<<30 {
		k.errf(key, "%d: want 1..%d (or leave it out for %d)", v, 1<<30, 1<<20)
	}
}

// validationConfig is the engine config for rules with the key tables
// shrunk to one slot: compiling checks everything the file can get wrong
// without allocating the tables (checkRules checks max_keys itself).
func (c *Config) validationConfig(rules []Rule) engine.Config {
	ec := engine.Config{Schema: c.engineSchema(), Limits: c.engineLimits()}
	for _, r := range rules {
		s := r.spec()
		if s.RateLimit != nil {
			s.RateLimit.MaxKeys = 1
		}
		if s.Window != nil {
			s.Window.MaxKeys = 1
		}
		ec.Rules = append(ec.Rules, s)
	}
	return ec
}

// compileRule compiles rule i alone and reports its errors at the line of
// the part they are about.
func (c *Config) compileRule(k *configChecker, i int) bool {
	r := &c.Rules[i]
	_, err := engine.New(c.validationConfig([]Rule{*r}))
	if err == nil {
		return true
	}
	p := keyIndex("rules", i)
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var xe *engine.ExprError
		if errors.As(e, &xe) {
			field := "when"
			if xe.Expr != r.When && xe.Expr == r.Filter {
				field = "filter"
			}
			k.add(keyJoin(p, field), xe.Error(), e)
			continue
		}
		msg := strings.TrimPrefix(e.Error(), fmt.Sprintf("rule %q: ", r.Name))
		key := p
		switch {
		case strings.HasPrefix(msg, "agg "):
			key, msg = keyJoin(p, "window.agg"), strings.TrimPrefix(msg, "agg ")
		case strings.HasPrefix(msg, "key"):
			key = keyJoin(p, "window.key")
			if r.RateLimit != nil {
				key = keyJoin(p, "rate_limit.key")
			}
			msg = strings.TrimPrefix(strings.TrimPrefix(msg, "key"), ": ")
		case errors.Is(e, engine.ErrInvalidRateLimit):
			key = keyJoin(p, "rate_limit")
		case errors.Is(e, engine.ErrInvalidWindow):
			key = keyJoin(p, "window")
		case strings.HasPrefix(msg, "needs "):
			// no condition at all: the rule itself
		case strings.Contains(msg, "filter"):
			key = keyJoin(p, "filter")
		case strings.Contains(msg, "when"):
			key = keyJoin(p, "when")
		}
		k.add(key, msg, e)
	}
	return false
}

func (r Rule) spec() engine.RuleSpec {
	s := engine.RuleSpec{Name: r.Name, When: r.When, Filter: r.Filter, Action: r.Action}
	if rl := r.RateLimit; rl != nil {
		s.RateLimit = &engine.RateLimitSpec{Key: rl.Key, Rate: rl.Rate, Burst: rl.Burst, MaxKeys: rl.MaxKeys, OnFull: rl.OnFull}
	}
	if w := r.Window; w != nil {
		s.Window = &engine.WindowSpec{Key: w.Key, Size: w.Size, Slide: w.Slide, Agg: w.Agg, MaxKeys: w.MaxKeys, OnFull: w.OnFull}
	}
	return s
}

func (c *Config) engineSchema() *engine.Schema {
	roles, _ := c.roleRequired()
	return &engine.Schema{
		Key: c.Schema.Key, Amount: c.Schema.Amount, Type: c.Schema.Type, TS: c.Schema.TS, Src: c.Schema.Src,
		Required: roles,
	}
}

func (c *Config) engineLimits() engine.Limits {
	return engine.Limits{MaxDatagram: c.Limits.MaxDatagram, MaxEvent: c.Limits.MaxEvent, MaxDepth: c.Limits.MaxDepth,
		AllowDuplicateKeys: c.Limits.AllowDuplicateKeys}
}

// StateBudget is the memory budget of the rules' state tables in force:
// limits.state_memory, or half the host's memory.
func (c *Config) StateBudget() uint64 {
	if c.Limits.StateMemory > 0 {
		return uint64(c.Limits.StateMemory)
	}
	return hostMemory() / 2
}

// hostMemory is MemTotal of /proc/meminfo in bytes (0 when unreadable:
// then no budget applies).
var hostMemory = sync.OnceValue(func() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseUint(f[0], 10, 64)
				if err == nil {
					return n << 10
				}
			}
		}
	}
	return 0
})

// EngineConfig is the engine's view of c: schema, limits, rules and the
// state memory budget. The Clock is left nil (the system clock).
func (c *Config) EngineConfig() engine.Config {
	ec := engine.Config{Schema: c.engineSchema(), Limits: c.engineLimits(), MemoryBudget: c.StateBudget()}
	for _, r := range c.Rules {
		ec.Rules = append(ec.Rules, r.spec())
	}
	return ec
}
