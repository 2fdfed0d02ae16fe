package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/xgate/xgate/gateway/sink"
)

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

// Load reads and validates the YAML config at path. The error lists
// every problem found, one per line.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	// Bounded: a config is kilobytes; /dev/zero or a stray log file is not.
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// MaxSize bounds a configuration file (and what `-c -` reads).
const MaxSize = 4 << 20

// MaxErrors bounds the problems one error lists; the rest are counted.
const MaxErrors = 100

// Parse decodes and validates a YAML config; name is used in error
// messages. The error joins one *FieldError per problem (errors.Join),
// ordered by line.
func Parse(name string, data []byte) (*Config, error) {
	return ParseEnv(name, data, nil)
}

// ParseEnv is Parse with ${VAR} in values taken from lookup
// (os.LookupEnv: --expand-env); a nil lookup rejects them (config_env.go).
func ParseEnv(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	if len(data) > MaxSize {
		return nil, &FieldError{File: name, Msg: fmt.Sprintf("larger than %d MiB: is this a configuration file?", MaxSize>>20)}
	}
	if name == "" {
		name = "config"
	}
	d := &configDecoder{src: &configSource{file: name, lines: map[string]int{}}, bad: map[string]bool{}}
	c := Default()
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
	n := min(len(errs), MaxErrors)
	out := make([]error, n, n+1)
	for i, e := range errs[:n] {
		out[i] = e
	}
	if len(errs) > n {
		out = append(out, &FieldError{File: errs[0].File, Msg: fmt.Sprintf("… and %d more problems", len(errs)-n)})
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
		v, err := ParseSize(n.Value)
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

func ParseSize(s string) (int64, error) {
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

// prefixList is a list of networks (CIDR) or addresses (/32, /128).
func (d *configDecoder) prefixList(dst *[]netip.Prefix) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if isNull(n) {
			return
		}
		out := []netip.Prefix{}
		d.sequence(n, p, "networks (CIDR) or addresses", func(_ int, item *yaml.Node, ip string) {
			var s string
			d.str(&s)(item, ip)
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					d.errAt(item, ip, "%q: want a network (198.51.100.0/24, 2001:db8::/32) or an address", s)
					return
				}
				pfx = netip.PrefixFrom(a, a.BitLen())
			}
			out = append(out, pfx.Masked())
		})
		*dst = out
	}
}

// groupList is a list of IP addresses (listen.groups; that they are
// multicast groups is checked with the rest of the config).
func (d *configDecoder) groupList(dst *[]netip.Addr) func(*yaml.Node, string) {
	return func(n *yaml.Node, p string) {
		if isNull(n) {
			return
		}
		out := []netip.Addr{}
		d.sequence(n, p, "multicast groups", func(_ int, item *yaml.Node, ip string) {
			var s string
			d.str(&s)(item, ip)
			a, err := netip.ParseAddr(s)
			if err != nil {
				d.errAt(item, ip, "%q: want a multicast group address, e.g. 239.1.1.1", s)
				return
			}
			out = append(out, a)
		})
		*dst = out
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
		"mode":      d.str((*string)(&c.Mode)),
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
				"groups": d.groupList(&c.Listen.Groups),
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
				"never_block":    d.prefixList(&x.NeverBlock),
				"drop":           d.prefixList(&x.Drop),
				// cidr lists of lists: (lists.go)
				"never_block_lists": d.stringList(&x.NeverBlockLists),
				"drop_lists":        d.stringList(&x.DropLists),
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
		// enrichment lists and added fields (lists.go)
		"lists":  func(n *yaml.Node, p string) { d.lists(c, n, p) },
		"enrich": func(n *yaml.Node, p string) { c.Enrich = d.enrich(n, p) },
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
		"to":     d.stringList(&r.To),
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
				// Aggregate outputs.
				"emit":            d.str(&w.Emit),
				"emit_min_change": d.floatField(&w.EmitMinChange),
				"emit_max_keys":   d.intField(&w.EmitMaxKeys),
				"max_key_bytes":   d.intField(&w.MaxKeyBytes),
			})
		},
		"enrich": func(n *yaml.Node, p string) { r.Enrich = d.enrich(n, p) },
		"emit": func(n *yaml.Node, p string) {
			d.errAt(n, p, "emit belongs to a window: window: {key: …, size: …, slide: …, agg: …, emit: every_slide}")
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
		"name":         d.str(&s.Name),
		"type":         d.str(&s.Type),
		"path":         d.str(&s.Path),
		"what":         d.str(&s.What),
		"fsync":        d.str(&s.Fsync),
		"rotate_bytes": d.size(&s.RotateBytes),
		"address":      d.str(&s.Address),
		"on_full":      d.str(&s.OnFull),
		"buffer":       d.size(&s.Buffer),
		"meta": func(n *yaml.Node, p string) {
			m := &s.Meta
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"src":        d.boolean(&m.Src),
				"rx_time":    d.boolean(&m.RxTime),
				"queue":      d.boolean(&m.Queue),
				"gateway_id": d.boolean(&m.GatewayID),
				"rule":       d.boolean(&m.Rule),
				"verdict":    d.boolean(&m.Verdict),
			})
		},
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
		"spool": func(n *yaml.Node, p string) {
			sp := &s.Spool
			d.mapping(n, p, map[string]func(*yaml.Node, string){
				"path":      d.str(&sp.Path),
				"max_bytes": d.size(&sp.MaxBytes),
				"fsync":     d.str(&sp.Fsync),
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
