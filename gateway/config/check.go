package config

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway/host"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink"
)

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
	c.checkGroups(k)
	c.checkRoutes(k)
	c.readTokenFile(k)
	if c.HTTP.Listen == "" {
		// no HTTP server
	} else if strings.HasPrefix(c.HTTP.Listen, UnixPrefix) {
		// The socket's permissions guard it: no token required.
		if p := c.HTTP.UnixPath(); !path.IsAbs(p) || path.Clean(p) != p || len(p) > 107 {
			k.errf("http.listen", "%q: want unix:/absolute/path of at most 107 bytes, e.g. unix:/run/xgate/http.sock", c.HTTP.Listen)
		}
	} else if host, port, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		k.errf("http.listen", "%q: want host:port, e.g. 127.0.0.1:9717", c.HTTP.Listen)
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
	c.checkLists(k)
	c.checkXDPLists(k)
	schemaOK := c.checkSchema(k)
	c.checkRules(k, schemaOK)
	c.checkEnrich(k, schemaOK)
	c.checkEnrichNames(k)
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
	never := map[netip.Prefix]bool{}
	for _, p := range x.NeverBlock {
		never[p] = true
	}
	for i, p := range x.Drop {
		if never[p] {
			k.errf(keyIndex("xdp.drop", i), "%v is in xdp.never_block too: a network is never blocked or dropped, not both", p)
		}
	}
	if n := len(x.NeverBlock) + len(x.Drop); n > maxCIDRs {
		k.errf("xdp.never_block", "%d networks in xdp.never_block and xdp.drop: at most %d", n, maxCIDRs)
	}
}

// maxCIDRs is the capacity of the XDP program's CIDR trie
// (bpf.DefaultCIDRSize).
const maxCIDRs = 16384

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

// checkGroups checks listen.groups: multicast addresses, each once, that
// the sockets can join (their bind address receives a group's datagrams).
func (c *Config) checkGroups(k *configChecker) {
	bind, _ := netip.ParseAddr(c.Listen.Address) // checked above
	seen := map[netip.Addr]int{}
	if len(c.Listen.Groups) > bpf.MaxGroups {
		k.errf("listen.groups", "%d groups: at most %d", len(c.Listen.Groups), bpf.MaxGroups)
	}
	for i, g := range c.Listen.Groups {
		key := keyIndex("listen.groups", i)
		switch {
		case !g.IsMulticast():
			k.errf(key, "%v is not a multicast address: want 224.0.0.0/4 or ff00::/8, e.g. 239.1.1.1", g)
		case g.Is4In6():
			k.errf(key, "%v: write an IPv4 group as IPv4, e.g. 239.1.1.1", g)
		case g.Zone() != "":
			k.errf(key, "%v: no zone; the group is joined on interface", g)
		case c.Listen.Address != "" && bind.IsValid() && !bind.IsUnspecified():
			k.errf(key, "%v: listen.address %s is a unicast address, and a socket bound to it receives no group; leave listen.address out (or 0.0.0.0, :: for IPv6 groups)", g, c.Listen.Address)
		case g.Is6() && !(bind.IsValid() && bind.Is6() && bind.IsUnspecified()):
			k.errf(key, "%v: an IPv6 group needs IPv6 sockets: set listen.address: \"::\"", g)
		}
		if j, dup := seen[g]; dup {
			k.errf(key, "%v is listed twice (also listen.groups[%d])", g, j)
		}
		seen[g] = i
	}
}

// checkRoutes checks the rules' to: lists against the sinks' names, and
// that a sink with what: routed is routed to.
func (c *Config) checkRoutes(k *configChecker) {
	labels := map[string]bool{}
	var names []string
	for i := range c.Sinks {
		l := c.Sinks[i].Label()
		labels[l] = true
		names = append(names, strconv.Quote(l))
	}
	routed := map[string]bool{}
	for i, r := range c.Rules {
		seen := map[string]bool{}
		for j, to := range r.To {
			key := keyJoin(keyIndex("rules", i), keyIndex("to", j))
			switch {
			case !labels[to] && len(names) == 0:
				k.errf(key, "%q: there are no sinks to route to", to)
			case !labels[to]:
				k.errf(key, "%q is no sink's name: want one of %s", to, strings.Join(names, ", "))
			case seen[to]:
				k.errf(key, "%q is listed twice", to)
			}
			seen[to] = true
			routed[to] = true
		}
	}
	for i := range c.Sinks {
		if sp := &c.Sinks[i]; sp.What == "routed" && !routed[sp.Label()] {
			k.errf(keyJoin(keyIndex("sinks", i), "what"), "routed, but no rule routes to %q: name it in a rule's to:", sp.Label())
		}
	}
}

// SinkRoutes returns the rules' to: lists by rule name (for
// sink.Sinks.Routes).
func (c *Config) SinkRoutes() map[string][]string {
	out := map[string][]string{}
	for _, r := range c.Rules {
		if len(r.To) > 0 {
			out[r.Name] = r.To
		}
	}
	return out
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
func (c *Config) SinkSpecs() []sink.Spec {
	out := slices.Clone(c.Sinks)
	reserved := c.enrichFieldNames()
	for i := range out {
		out[i].Reserved = reserved
		if sp := &out[i]; sp.Type == "kafka" || sp.Type == "nats" {
			sp.KeyPath = c.Schema.Key
			sp.GatewayID = cmp.Or(sp.GatewayID, c.GatewayID)
		} else if sp.Meta.GatewayID {
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
			c.checkEmit(k, key, w)
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

// checkEmit checks a window's aggregate output: its values, and that a
// sink takes the records.
func (c *Config) checkEmit(k *configChecker, key func(string) string, w *RuleWindow) {
	switch w.Emit {
	case engine.EmitNone:
		if k.has(key("window.emit")) {
			k.errf(key("window.emit"), "empty: want on_alert or every_slide (or leave it out)")
		}
	case engine.EmitOnAlert, engine.EmitEverySlide:
	default:
		k.errf(key("window.emit"), "%q: want on_alert (an aggregate each time the rule fires) or every_slide (each key's aggregate after every slide)", w.Emit)
		return
	}
	if w.Emit != engine.EmitEverySlide {
		for _, f := range []string{"emit_min_change", "emit_max_keys", "max_key_bytes"} {
			if k.has(key("window." + f)) {
				k.errf(key("window."+f), "only with emit: every_slide")
			}
		}
	}
	if w.Emit == engine.EmitNone {
		return // its values are not used
	}
	if v := w.EmitMinChange; v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		k.errf(key("window.emit_min_change"), "%v: want a number >= 0 (0: every slide)", v)
	}
	if v := w.EmitMaxKeys; v < 0 || v > engine.MaxEmitMaxKeys || v == 0 && k.has(key("window.emit_max_keys")) {
		k.errf(key("window.emit_max_keys"), "%d: want 1..%d (or leave it out for %d)", v, engine.MaxEmitMaxKeys, engine.DefaultEmitMaxKeys)
	}
	if v := w.MaxKeyBytes; v != 0 && (v < 8 || v > 1024) || v == 0 && k.has(key("window.max_key_bytes")) {
		k.errf(key("window.max_key_bytes"), "%d: want 8..1024 (or leave it out for %d)", v, engine.DefaultKeyBytes)
	}
}

// EmitsWithoutSink names the rules that emit aggregates when no sink takes
// them (what: aggregates): valid, as rules without sinks are (the demo and
// the bench run the example's rules with sinks of their own), but the
// gateway warns, since the records go nowhere.
func (c *Config) EmitsWithoutSink() []string {
	for _, s := range c.Sinks {
		if s.What == "aggregates" {
			return nil
		}
	}
	var names []string
	for _, r := range c.Rules {
		if r.Window != nil && r.Window.Emit != "" {
			names = append(names, r.Name)
		}
	}
	return names
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
	ec := engine.Config{Schema: c.engineSchema(), Limits: c.engineLimits(), Lists: c.EngineLists()}
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
	errs := reportEnrich(k, p+".", err)
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
	s := engine.RuleSpec{Name: r.Name, When: r.When, Filter: r.Filter, Action: r.Action, Enrich: enrichSpecs(r.Enrich)}
	if rl := r.RateLimit; rl != nil {
		s.RateLimit = &engine.RateLimitSpec{Key: rl.Key, Rate: rl.Rate, Burst: rl.Burst, MaxKeys: rl.MaxKeys, OnFull: rl.OnFull}
	}
	if w := r.Window; w != nil {
		s.Window = &engine.WindowSpec{Key: w.Key, Size: w.Size, Slide: w.Slide, Agg: w.Agg, MaxKeys: w.MaxKeys, OnFull: w.OnFull}
		s.Window.Emit = engine.EmitSpec{Mode: w.Emit, MinChange: w.EmitMinChange, MaxKeys: w.EmitMaxKeys, MaxKeyBytes: w.MaxKeyBytes}
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
	ec := engine.Config{Schema: c.engineSchema(), Limits: c.engineLimits(), MemoryBudget: c.StateBudget(),
		Lists: c.EngineLists(), Enrich: enrichSpecs(c.Enrich)}
	for _, r := range c.Rules {
		ec.Rules = append(ec.Rules, r.spec())
	}
	return ec
}
