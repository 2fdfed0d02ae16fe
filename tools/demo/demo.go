// Package demo is `xgate demo`: the gateway at work on this machine, with
// nothing to configure.
//
// With the privileges for it (root: CAP_SYS_ADMIN, CAP_NET_ADMIN,
// CAP_NET_RAW) it builds a test host pair — two network namespaces joined
// by a veth, removed afterwards — and starts the gateway on the receiving
// end with examples/xgate.yaml: its rules, limits and XDP policy as they
// are; only the interface, the sinks, the HTTP server and the pins are the
// demo's (files in a temporary directory; HTTP on a free loopback port
// with a fresh token, and no pins, so the demo never collides with an
// xgate running on the host). From the
// other end it streams a realistic mix for Options.Duration: events from
// thousands of client addresses (Zipf-distributed users, log-normal
// amounts, a share of malformed JSON, some non-JSON payloads and some
// datagrams to a port that is not ours) and, for the middle half of the
// run, a flooding source. A live view, refreshed every second, shows the
// rates, the verdicts, the XDP drops by reason and the alerts as they fire
// (read back from the alerts sink file). The final report checks the
// accounting identity of DESIGN.md against what was sent, and lists the
// sink files, which are kept for the user to read.
//
// Without those privileges, or with Options.Plain, it runs the gateway's
// plain UDP path (no BPF) on loopback, fed by a socket sender in this
// process, and says so at the start.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"

	"go.yaml.in/yaml/v3"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/examples"
	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/gateway/metrics"
	"github.com/xgate/xgate/tools/gen"
)

// Defaults of Options.
const (
	DefaultDuration = 20 * time.Second
	// DefaultRate is the client events per second on the test hosts: a
	// rate every receive path handles with room to spare on two cores, so
	// what the view shows is the rules at work, not a saturated machine.
	DefaultRate = 10000
	// DefaultPlainRate is the client events per second on loopback, kept
	// under the flood-source rule's 10000/s: there every datagram comes
	// from 127.0.0.1, one source.
	DefaultPlainRate = 4000
)

// Options shape a demo run. The zero value is the default demo.
type Options struct {
	Duration time.Duration // how long traffic streams; default DefaultDuration
	// Rate is the client events per second; default DefaultRate on the
	// test hosts, DefaultPlainRate on loopback. The flooding source sends
	// four times the clients' rate on the test hosts (40000/s to 400000/s),
	// and on loopback a fixed 25000/s, which takes the one source there
	// over the flood-source rule's limit.
	Rate float64
	// Dir receives the sink files and the gateway's log; "" makes a new
	// directory under the system's temp dir, which is left for the user.
	Dir string
	Out io.Writer // default os.Stdout
	// Live redraws the view in place every second (for a terminal);
	// otherwise the view is one line per second (CI, pipes).
	Live  bool
	Width int // columns of the terminal for the live view; default 100
	// Plain runs plain mode on loopback even with the privileges for the
	// test hosts.
	Plain bool
	// Config is the configuration the gateway starts from; default
	// examples.Config. ConfigName names it in messages.
	Config     []byte
	ConfigName string
	// Files are the files Config names by relative paths (its lists),
	// laid out as beside it; the demo writes them beside its adapted
	// configuration. nil: Config's relative paths are read beside
	// ConfigName.
	Files fs.FS
}

// Traffic counts what the demo sent, by kind; every count is exact (what
// the kernel accepted for sending).
type Traffic struct {
	Events uint64 // client events (malformed ones included)
	NotJSON,
	OtherPort uint64 // test hosts only: junk payloads; datagrams to a port that is not ours
	Flood uint64 // from the flooding source
}

// Total is every datagram sent.
func (t Traffic) Total() uint64 { return t.Events + t.NotJSON + t.OtherPort + t.Flood }

// counters are the live Traffic, updated by the senders.
type counters struct{ events, notJSON, otherPort, flood atomic.Uint64 }

func (c *counters) load() Traffic {
	return Traffic{Events: c.events.Load(), NotJSON: c.notJSON.Load(), OtherPort: c.otherPort.Load(), Flood: c.flood.Load()}
}

// Report is what a demo run did.
type Report struct {
	Mode string // ModeTestHosts or ModePlain
	// Path is the gateway's receive path (afxdp, socket, plain) and Why
	// the reason it gave.
	Path config.Mode
	Why  string
	// Fallback says why the demo runs plain mode ("" on the test hosts).
	Fallback string
	Elapsed  time.Duration // of the traffic
	// Interrupted: the caller's context ended the traffic early.
	Interrupted bool
	Sent        Traffic
	// Stats are the gateway's counters after it stopped: exact.
	Stats metrics.Stats
	// Unaccounted is Sent.Total() minus the right-hand side of the
	// identity; the demo fails unless it is 0.
	Unaccounted int64
	Alerts      uint64 // alert records written to the alerts sink
	// Latency is the receive → verdict histogram (gateway.Latency: bucket
	// i counts ≤ 2^i µs): every frame on the afxdp path, sampled on the
	// socket path, empty in plain mode.
	Latency [gateway.LatencyBuckets]uint64
	Dir     string // the sink files and the gateway's log
	Files   []SinkFile
	Log     string // the gateway's log file
	// HTTPAddr is where the gateway served HTTP during the run.
	HTTPAddr string
}

// SinkFile is one of the demo's sink files.
type SinkFile struct {
	Name    string // the sink's name (its label in the gateway's stats)
	What    string // the sink's `what`
	Path    string
	Records uint64 // records written
}

// Modes of Report.Mode.
const (
	ModeTestHosts = "test hosts"
	ModePlain     = "plain"
)

// ErrAccounting is returned (with the report) when the counters do not
// add up to what was sent.
var ErrAccounting = errors.New("accounting identity does not hold")

// Run runs the demo and writes the view and the report to o.Out. The sink
// files stay in Report.Dir. ctx ends the traffic early; the report, the
// check and the clean-up still happen.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.Plain {
		return runPlain(ctx, o, "plain mode asked for (--plain)")
	}
	if why := missingPrivileges(host.ReadHost().Status, os.Geteuid()); why != "" {
		return runPlain(ctx, o, why)
	}
	rep, err := runTestHosts(ctx, o)
	var nh *noHostsError
	if errors.As(err, &nh) {
		return runPlain(ctx, o, nh.Error())
	}
	return rep, err
}

func (o *Options) defaults() error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Duration <= 0 {
		o.Duration = DefaultDuration
	}
	if o.Rate < 0 || o.Rate > 1e6 {
		return fmt.Errorf("demo: rate %g/s: want 1..1000000", o.Rate)
	}
	if o.Width <= 0 {
		o.Width = 100
	}
	if o.Config == nil {
		o.Config, o.ConfigName, o.Files = examples.Config, examples.ConfigName, examples.Lists
	}
	if o.ConfigName == "" {
		o.ConfigName = "demo configuration"
	}
	return nil
}

// noHostsError: the test hosts could not be built although the privileges
// are there (no veth support, a restricted container…); the demo runs
// plain mode instead.
type noHostsError struct{ err error }

func (e *noHostsError) Error() string {
	return fmt.Sprintf("the test hosts could not be built (%v)", e.err)
}
func (e *noHostsError) Unwrap() error { return e.err }

// missingPrivileges says why the test hosts cannot be built from the
// process status text (its CapEff line), or "" if they can: namespaces and
// bpffs need CAP_SYS_ADMIN (which also grants what CAP_BPF does), the veth
// and XDP CAP_NET_ADMIN, AF_XDP and the packet sender CAP_NET_RAW.
func missingPrivileges(status string, euid int) string {
	caps, err := host.ParseCapEff(status)
	if err != nil {
		return "cannot read this process's capabilities: " + err.Error()
	}
	var missing []string
	for _, c := range []host.Capability{host.CapSysAdmin, host.CapNetAdmin, host.CapNetRaw} {
		if !caps.Has(c) {
			missing = append(missing, c.String())
		}
	}
	if len(missing) == 0 {
		return ""
	}
	who := "not root"
	if euid == 0 {
		who = "root without all capabilities"
	}
	return fmt.Sprintf("%s: the test hosts and the XDP data plane need %s", who, strings.Join(missing, ", "))
}

// demoConfig is the configuration of a run: o.Config with the demo's
// sinks (files in dir), HTTP on a free loopback port with a fresh token
// (so `xgate stats` and `xgate tap` can watch it), and no pins. On the test hosts
// (iface set) the gateway attaches to iface; in plain mode (iface "") it
// listens on 127.0.0.1:port in mode auto, without probes. The changes are
// made to the YAML text, so the adapted file is validated as a whole the
// way `xgate validate` would, and everything else in it — rules, limits,
// schema, XDP policy — stays as written.
func demoConfig(o *Options, iface string, port uint16, dir string) (*config.Config, []SinkFile, error) {
	name := o.ConfigName
	if o.Files != nil {
		// The adapted file is written into dir (for the user to read) and
		// its relative paths (lists) resolve there.
		if err := copyFiles(o.Files, dir); err != nil {
			return nil, nil, fmt.Errorf("demo: the files of %s: %w", o.ConfigName, err)
		}
		name = filepath.Join(dir, "xgate.yaml")
	}
	orig, err := config.Parse(name, o.Config)
	if err != nil {
		return nil, nil, fmt.Errorf("demo: %s: %w", o.ConfigName, err)
	}
	files := []SinkFile{
		{What: "alerts"}, {What: "dropped"}, {What: "rejects"}, {What: "passed"},
	}
	// The sinks the rules route to (to:) and, when a window emits, one for
	// the aggregates: the demo's own sinks replace the file's.
	routed := map[string]bool{}
	emits := false
	for _, r := range orig.Rules {
		for _, n := range r.To {
			if !routed[n] {
				routed[n] = true
				files = append(files, SinkFile{Name: n, What: "routed"})
			}
		}
		emits = emits || r.Window != nil && r.Window.Emit != ""
	}
	if emits {
		files = append(files, SinkFile{What: "aggregates"})
	}
	sinks := make([]map[string]string, len(files))
	for i := range files {
		f := &files[i]
		if f.Name == "" {
			f.Name = f.What
		}
		f.Path = filepath.Join(dir, f.Name+".ndjson")
		// buffer: room for the burst of verdicts the flood causes before
		// its source is blocked, while the two cores are busy sending too.
		sinks[i] = map[string]string{"type": "file", "name": f.Name, "path": f.Path, "what": f.What, "fsync": "never", "buffer": "4MiB"}
	}
	var ifEdit any = iface
	if iface == "" {
		ifEdit = deleteKey{} // no interface: mode auto runs plain sockets
	}
	edits := []yamlEdit{
		{"interface", ifEdit},
		{"sinks", sinks},
		{"http.listen", ""}, // an xgate on the host may hold the configured port
	}
	if iface == "" {
		edits = append(edits,
			yamlEdit{"mode", config.ModeAuto},
			yamlEdit{"listen", map[string]any{"ports": []uint16{port}, "address": "127.0.0.1"}},
			yamlEdit{"probes.enabled", false})
	}
	text, err := editYAML(o.Config, edits)
	if err != nil {
		return nil, nil, fmt.Errorf("demo: adapt %s: %w", o.ConfigName, err)
	}
	if o.Files != nil {
		if err := os.WriteFile(name, text, 0o600); err != nil {
			return nil, nil, fmt.Errorf("demo: %w", err)
		}
	} else {
		name += " (adapted for the demo)"
	}
	cfg, err := config.Parse(name, text)
	if err != nil {
		return nil, nil, fmt.Errorf("demo: %w", err)
	}
	// Nothing pinned, so /sys/fs/bpf is left as the demo found it (and an
	// xgate running on the host keeps its pins). The file format has no
	// way to say "no pins": this comes after validation.
	cfg.Pin.Path = ""
	// HTTP on a port the kernel picks (the file format wants a real port,
	// so this too comes after validation), with a token so /tap works.
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, nil, fmt.Errorf("demo: token: %w", err)
	}
	cfg.HTTP.Listen, cfg.HTTP.Token = "127.0.0.1:0", hex.EncodeToString(tok)
	return cfg, files, nil
}

// yamlEdit sets the value at a dotted path of mapping keys ("http.listen").
type yamlEdit struct {
	path  string
	value any
}

// editYAML applies edits to a YAML document whose root is a mapping,
// creating keys (and mappings on the way) that are missing, and returns
// the new text.
func editYAML(src []byte, edits []yamlEdit) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 { // an empty file
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the configuration is not a mapping of keys")
	}
	for _, e := range edits {
		if _, del := e.value.(deleteKey); del {
			removeMappingKey(doc.Content[0], e.path)
			continue
		}
		var v yaml.Node
		if err := v.Encode(e.value); err != nil {
			return nil, fmt.Errorf("%s: %w", e.path, err)
		}
		m := doc.Content[0]
		keys := strings.Split(e.path, ".")
		for _, k := range keys[:len(keys)-1] {
			next := mappingValue(m, k)
			if next == nil || next.Kind != yaml.MappingNode {
				next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
				setMappingValue(m, k, next)
			}
			m = next
		}
		setMappingValue(m, keys[len(keys)-1], &v)
	}
	return yaml.Marshal(&doc)
}

// deleteKey as a yamlEdit's value removes the (top-level) key.
type deleteKey struct{}

// removeMappingKey removes key and its value from the mapping m.
func removeMappingKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

// mappingValue is the value of key in the mapping m, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// setMappingValue replaces the value of key in m, or appends the key.
func setMappingValue(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}

// sinkDir returns o.Dir, or a new directory under the temp dir.
func sinkDir(o *Options) (string, error) {
	if o.Dir != "" {
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return "", fmt.Errorf("demo: sink directory: %w", err)
		}
		return o.Dir, nil
	}
	dir, err := os.MkdirTemp("", "xgate-demo-")
	if err != nil {
		return "", fmt.Errorf("demo: sink directory: %w", err)
	}
	return dir, nil
}

// eventMix is the client events' generator configuration: 100k users
// (Zipf), log-normal amounts, 2% malformed JSON of four kinds, 1% of
// payments over 10000.
func eventMix(seed uint64) gen.Config {
	return gen.Config{Users: 100000, BadShare: 0.02, BigShare: 0.01, Seed: seed}
}

// describe is one rule in a line.
func describe(r engine.RuleSpec) string {
	var b strings.Builder
	switch {
	case r.RateLimit != nil:
		fmt.Fprintf(&b, "rate_limit %s per %s", r.RateLimit.Rate, r.RateLimit.Key)
		if r.RateLimit.Burst > 0 {
			fmt.Fprintf(&b, " (burst %g)", r.RateLimit.Burst)
		}
		if r.When != "" {
			fmt.Fprintf(&b, " when %s", r.When)
		}
	case r.Window != nil:
		fmt.Fprintf(&b, "%s per %s over %v", r.Window.Agg, r.Window.Key, r.Window.Size)
		if r.Filter != "" {
			fmt.Fprintf(&b, " of %s", r.Filter)
		}
		fmt.Fprintf(&b, ", when %s", r.When)
	default:
		fmt.Fprintf(&b, "when %s", r.When)
	}
	fmt.Fprintf(&b, " → %s", r.Action)
	return b.String()
}

// printRules lists the configuration's rules.
func printRules(w io.Writer, cfg *config.Config) {
	rules := cfg.EngineConfig().Rules
	if len(rules) == 0 {
		fmt.Fprintln(w, "  rules:    none (everything passes)")
		return
	}
	width := 0
	for _, r := range rules {
		width = max(width, len(r.Name))
	}
	for i, r := range rules {
		label := ""
		if i == 0 {
			label = "rules:"
		}
		fmt.Fprintf(w, "  %-9s %-*s  %s\n", label, width, r.Name, describe(r))
	}
}

// windowRules are the names of the window rules: their alerts carry the
// aggregate as value.
func windowRules(cfg *config.Config) map[string]string {
	m := map[string]string{}
	for _, r := range cfg.EngineConfig().Rules {
		if r.Window != nil {
			m[r.Name] = fmt.Sprintf("%s/%v", r.Window.Agg, r.Window.Size)
		}
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// copyFiles writes every file of fsys under dir, keeping its path; the
// directories are created 0700, the files 0600.
func copyFiles(fsys fs.FS, dir string) error {
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
}
