package config

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/engine/lists"
	"github.com/xgate/xgate/gateway/sink"
)

// Enrichment lists and added fields:
//
//	lists:
//	  partners:  {type: cidr, file: partners.txt}   # one network a line
//	  vip:       {type: set,  file: vip.txt}        # one key a line
//	  risk_tier: {type: map,  file: risk.csv}       # key,value; or .json {"k": "v"}
//	enrich:
//	  - {field: risk_tier, from: 'lookup("risk_tier", user_id)'}
//
// A relative file is read from the config file's directory. Parse loads
// every list (a missing or malformed file is an error on the line of the
// list's file key, naming the line of the list file), so a config that
// validates has its lists' contents; the gateway reloads them on SIGHUP
// and when the files change.

// List is one enrichment list.
type List struct {
	Name       string
	Type       string // cidr | set | map
	File       string // as configured
	MaxEntries int    // 0: lists.DefaultListMaxEntries
	// Path is File resolved against the config file's directory.
	Path string
	// Data is the list's contents as Parse loaded them; nil when the
	// config was not read from a file (LoadList fills it then).
	Data *lists.ListData
	// LoadTime is how long loading Data took.
	LoadTime time.Duration
	// Loaded is the file Data was read from (the descriptor's fstat):
	// the list watch compares it with the file at the path now.
	Loaded FileID
}

// FileID tells one version of a file from another: another inode (a file
// renamed over the path, a symbolic link switched to another target), or
// the same written in place (size, modification time).
type FileID struct {
	Dev, Ino      uint64
	Size, MtimeNs int64
}

// fileIDOf is the identity of the file fi describes.
func fileIDOf(fi os.FileInfo) FileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return FileID{}
	}
	return FileID{Dev: st.Dev, Ino: st.Ino, Size: st.Size, MtimeNs: st.Mtim.Nano()}
}

// StatFileID is the identity of the file at path now, symbolic links
// followed; false when it cannot be stat'ed. The list watch compares it
// with List.Loaded, so both come from fileIDOf.
func StatFileID(path string) (FileID, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return FileID{}, false
	}
	return fileIDOf(fi), true
}

// FilePath is the file the list is read from: Path, or File when the
// config was not read from a file.
func (l *List) FilePath() string {
	if l.Path != "" {
		return l.Path
	}
	return l.File
}

// Enrich is one added field (engine.EnrichSpec).
type Enrich struct {
	Field string
	From  string // lookup("list", field) or a condition
}

// MaxListFile bounds a list file's size.
const MaxListFile = 256 << 20

// MaxLists bounds the lists of a config.
const MaxLists = 256

// Kind returns the list's kind (cidr when Type is not valid: Validate
// reports that).
func (l *List) Kind() lists.ListKind {
	k, _ := lists.ParseListKind(l.Type)
	return k
}

// LoadList reads and parses the file of l. Its error names the file and,
// for bad contents, the line ("partners.txt:7: …").
func LoadList(l List) (*lists.ListData, error) {
	d, _, err := LoadListFile(l)
	return d, err
}

// LoadListFile is LoadList that also returns the identity of the file it
// read (of the open descriptor: what was read, even if the path changes).
func LoadListFile(l List) (*lists.ListData, FileID, error) {
	kind, err := lists.ParseListKind(l.Type)
	if err != nil {
		return nil, FileID{}, err
	}
	path := l.FilePath()
	// O_NONBLOCK: opening a FIFO (or a device) put at the path must not
	// block the daemon until someone writes to it; fstat then refuses
	// anything but a regular file, whose reads O_NONBLOCK does not change.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, FileID{}, err // names the file
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, FileID{}, fmt.Errorf("%s: %w", path, err)
	}
	id := fileIDOf(fi)
	if !fi.Mode().IsRegular() {
		return nil, id, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxListFile+1))
	if err != nil {
		return nil, id, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxListFile {
		return nil, id, fmt.Errorf("%s: larger than %d MiB", path, MaxListFile>>20)
	}
	format := lists.FormatLines
	if kind == lists.ListMap {
		format = lists.FormatCSV
		if strings.EqualFold(filepath.Ext(path), ".json") {
			format = lists.FormatJSON
		}
	}
	d, err := lists.ParseList(kind, format, data, lists.ListLimits{MaxEntries: l.MaxEntries})
	var le *lists.ListError
	if errors.As(err, &le) && le.Line > 0 {
		return nil, id, fmt.Errorf("%s:%d: %s", path, le.Line, le.Msg)
	}
	if err != nil {
		return nil, id, fmt.Errorf("%s: %w", path, err)
	}
	return d, id, nil
}

// EngineLists returns new engine lists holding the contents c loaded,
// by name (an empty list where loading failed).
func (c *Config) EngineLists() map[string]*lists.List {
	if len(c.Lists) == 0 {
		return nil
	}
	out := make(map[string]*lists.List, len(c.Lists))
	for _, l := range c.Lists {
		d := l.Data
		if d != nil && d.Kind() != l.Kind() {
			d = nil
		}
		el, _ := lists.NewList(l.Name, l.Kind(), d) // nil data: empty of the same kind
		out[l.Name] = el
	}
	return out
}

// ListByName returns the list of that name, nil if none.
func (c *Config) ListByName(name string) *List {
	for i := range c.Lists {
		if c.Lists[i].Name == name {
			return &c.Lists[i]
		}
	}
	return nil
}

func (d *configDecoder) lists(c *Config, n *yaml.Node, p string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errAt(n, p, "want a mapping of list names to {type, file}, got %s", kindName(n))
		return
	}
	c.Lists = []List{}
	seen := map[string]int{}
	for _, e := range d.pairs(n, p, 0) {
		k := resolve(e.k)
		if k == nil || k.Kind != yaml.ScalarNode {
			d.errAt(e.k, p, "a list name must be a plain name, got %s", kindName(k))
			continue
		}
		kp := keyJoin(p, k.Value)
		if line, dup := seen[k.Value]; dup {
			d.errAt(e.k, kp, "repeated list (first on line %d)", line)
			continue
		}
		seen[k.Value] = e.k.Line
		d.src.lines[kp] = e.k.Line
		v := resolve(e.v)
		if isNull(v) || v.Kind != yaml.MappingNode {
			d.errAt(e.k, kp, "want {type: cidr|set|map, file: path}, got %s", kindName(v))
			continue
		}
		l := List{Name: k.Value}
		d.mapping(v, kp, map[string]func(*yaml.Node, string){
			"type":        d.str(&l.Type),
			"file":        d.str(&l.File),
			"max_entries": d.intField(&l.MaxEntries),
		})
		c.Lists = append(c.Lists, l)
	}
}

func (d *configDecoder) enrich(n *yaml.Node, p string) []Enrich {
	if isNull(n) {
		return nil
	}
	out := []Enrich{}
	d.sequence(n, p, "added fields ({field, from})", func(_ int, item *yaml.Node, ip string) {
		var e Enrich
		if isNull(item) || item.Kind != yaml.MappingNode {
			d.errAt(item, ip, `want {field: name, from: 'lookup("list", key)'}, got %s`, kindName(item))
			return
		}
		d.mapping(item, ip, map[string]func(*yaml.Node, string){
			"field": d.str(&e.Field),
			"from":  d.condition(&e.From),
		})
		out = append(out, e)
	})
	return out
}

func validListName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// checkLists checks each list and loads its file.
func (c *Config) checkLists(k *configChecker) {
	if len(c.Lists) > MaxLists {
		k.errf("lists", "%d lists: at most %d", len(c.Lists), MaxLists)
	}
	dir := "."
	if c.src != nil {
		dir = filepath.Dir(c.src.file)
	}
	for i := range c.Lists {
		l := &c.Lists[i]
		key := func(f string) string { return keyJoin(keyJoin("lists", l.Name), f) }
		if k.badUnder(keyJoin("lists", l.Name)) {
			continue
		}
		if !validListName(l.Name) {
			k.errf(keyJoin("lists", l.Name), "%q: a list name is letters, digits, _ - and ., at most 64", l.Name)
		}
		if _, err := lists.ParseListKind(l.Type); err != nil {
			if l.Type == "" {
				k.errfAt(keyJoin("lists", l.Name), key("type"), "missing: want cidr, set or map")
			} else {
				k.errf(key("type"), "%q: want cidr, set or map", l.Type)
			}
			continue
		}
		if l.MaxEntries < 0 || l.MaxEntries > 1<<26 {
			k.errf(key("max_entries"), "%d: want 1..%d (or leave it out for %d)", l.MaxEntries, 1<<26, lists.DefaultListMaxEntries)
			continue
		}
		if l.File == "" {
			k.errfAt(keyJoin("lists", l.Name), key("file"), "missing: name the list's file")
			continue
		}
		l.Path = l.File
		if !filepath.IsAbs(l.Path) {
			l.Path = filepath.Join(dir, l.Path)
		}
		t0 := time.Now()
		d, id, err := LoadListFile(*l)
		if err != nil {
			k.errf(key("file"), "%v", err)
			continue
		}
		l.Data, l.LoadTime, l.Loaded = d, time.Since(t0), id
	}
}

// checkXDPLists checks xdp.never_block_lists and xdp.drop_lists: cidr
// lists, each named once, no network both never-blocked and dropped, and
// all of them within the trie (a network in two lists of one action is
// pushed once).
func (c *Config) checkXDPLists(k *configChecker) {
	x := c.XDP
	type owner struct{ action, where string }
	owners := map[netip.Prefix]owner{}
	for _, p := range x.NeverBlock {
		owners[p] = owner{"never_block", "xdp.never_block"}
	}
	for _, p := range x.Drop {
		owners[p] = owner{"drop", "xdp.drop"}
	}
	used := map[string]string{}
	for _, side := range []struct {
		key, action string
		names       []string
	}{{"xdp.never_block_lists", "never_block", x.NeverBlockLists}, {"xdp.drop_lists", "drop", x.DropLists}} {
		for i, name := range side.names {
			key := keyIndex(side.key, i)
			l := c.ListByName(name)
			switch {
			case l == nil:
				k.errf(key, "%q is not a list of lists:", name)
				continue
			case l.Type != "cidr":
				k.errf(key, "list %q is a %s list: the XDP program takes cidr lists", name, l.Type)
				continue
			case used[name] != "":
				k.errf(key, "list %q is in %s already", name, used[name])
				continue
			}
			used[name] = side.key
			if l.Data == nil {
				continue // its error is reported
			}
			for _, p := range l.Data.Prefixes() {
				o, ok := owners[p]
				if ok && o.action != side.action {
					k.errf(key, "list %q has %v, which is in %s: a network is never blocked or dropped, not both", name, p, o.where)
					break
				}
				if !ok {
					owners[p] = owner{side.action, "list " + name}
				}
			}
		}
	}
	if len(owners) > maxCIDRs {
		k.errf("xdp", "%d networks in xdp.never_block, xdp.drop and their lists: the XDP program's trie holds %d", len(owners), maxCIDRs)
	}
}

// enrichSpecs converts added fields for the engine.
func enrichSpecs(es []Enrich) []engine.EnrichSpec {
	var out []engine.EnrichSpec
	for _, e := range es {
		out = append(out, engine.EnrichSpec{Field: e.Field, From: e.From})
	}
	return out
}

// checkEnrichNames refuses added fields named like a sink's meta field
// in a raw record (sink.IsMetaField).
func (c *Config) checkEnrichNames(k *configChecker) {
	check := func(prefix string, es []Enrich) {
		for i, e := range es {
			if sink.IsMetaField(e.Field) {
				k.errf(fmt.Sprintf("%senrich[%d].field", prefix, i), "%q is the name of a sink's meta field: choose another", e.Field)
			}
		}
	}
	check("", c.Enrich)
	for i, r := range c.Rules {
		check(fmt.Sprintf("rules[%d].", i), r.Enrich)
	}
}

// enrichFieldNames are the distinct fields the configuration's enrich:
// may add (top level and rules): the sinks cut an event's own members of
// those names (sink.Spec.Reserved).
func (c *Config) enrichFieldNames() []string {
	var out []string
	add := func(es []Enrich) {
		for _, e := range es {
			if !slices.Contains(out, e.Field) {
				out = append(out, e.Field)
			}
		}
	}
	add(c.Enrich)
	for _, r := range c.Rules {
		add(r.Enrich)
	}
	return out
}

// checkEnrich compiles the top-level added fields and reports their
// errors on the line of the field or from key.
func (c *Config) checkEnrich(k *configChecker, schemaOK bool) {
	if len(c.Enrich) == 0 || !schemaOK || k.badUnder("enrich") {
		return
	}
	_, err := engine.New(engine.Config{Schema: c.engineSchema(), Limits: c.engineLimits(), Lists: c.EngineLists(),
		Enrich: enrichSpecs(c.Enrich)})
	reportEnrich(k, "", err)
}

// reportEnrich adds the *engine.EnrichError parts of err under prefix
// (rules[i]. or "") and returns what is left.
func reportEnrich(k *configChecker, prefix string, err error) []error {
	if err == nil {
		return nil
	}
	var rest []error
	for _, e := range flatten(err, nil) {
		var ee *engine.EnrichError
		if !errors.As(e, &ee) {
			rest = append(rest, e)
			continue
		}
		key := fmt.Sprintf("%senrich[%d].%s", prefix, ee.Index, ee.Part)
		msg := ee.Err.Error()
		var xe *engine.ExprError
		if errors.As(ee.Err, &xe) {
			msg = xe.Error()
		}
		k.add(key, msg, e)
	}
	return rest
}

// flatten appends the errors that err joins (errors.Join, nested too).
func flatten(err error, out []error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = flatten(e, out)
		}
		return out
	}
	return append(out, err)
}
