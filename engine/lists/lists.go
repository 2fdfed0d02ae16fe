package lists

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// Enrichment lists: named tables loaded from files (by the gateway) that
// conditions and added fields look up.
//
//   - cidr: networks (and addresses); `ip in cidrs("partners")`.
//   - set:  keys; `user_id in set("vip")`.
//   - map:  key → value; `lookup("risk_tier", user_id) == "high"`.
//
// Concurrency. A List is a name, a kind and an atomic pointer to its
// current ListData. ListData is immutable once built, so a reload builds a
// whole new one off the hot path and swaps the pointer: a lookup sees
// either the old table or the new one, never a mix. Compiled rules hold
// the *List (not the data), so a list reloads without recompiling them.
// Lookups allocate nothing: the CIDR table is a sorted array of disjoint
// address ranges searched by bisection, sets and maps are Go maps indexed
// by the key's view (a string that shares the frame's memory).

// ListKind is what a list holds.
type ListKind uint8

const (
	ListCIDR ListKind = iota // networks
	ListSet                  // keys
	ListMap                  // key → value
	numListKinds
)

var listKindNames = [numListKinds]string{"cidr", "set", "map"}

func (k ListKind) String() string {
	if k < numListKinds {
		return listKindNames[k]
	}
	return fmt.Sprintf("list_kind(%d)", k)
}

// Func returns the function that names a list of kind k in conditions:
// cidrs, set or lookup.
func (k ListKind) Func() string {
	switch k {
	case ListCIDR:
		return "cidrs"
	case ListSet:
		return "set"
	}
	return "lookup"
}

// ParseListKind reads "cidr", "set" or "map".
func ParseListKind(s string) (ListKind, error) {
	for k := ListKind(0); k < numListKinds; k++ {
		if s == listKindNames[k] {
			return k, nil
		}
	}
	return 0, fmt.Errorf("list type %q: want cidr, set or map", s)
}

// List is a named list whose contents can be swapped while workers read it.
type List struct {
	name string
	kind ListKind
	cur  atomic.Pointer[ListData]
}

// NewList returns a list holding d (which must be of kind k; nil: empty).
func NewList(name string, k ListKind, d *ListData) (*List, error) {
	l := &List{name: name, kind: k}
	if d == nil {
		d = &ListData{kind: k}
	}
	if err := l.Store(d); err != nil {
		return nil, err
	}
	return l, nil
}

// Name returns the list's name.
func (l *List) Name() string { return l.name }

// Kind returns what the list holds.
func (l *List) Kind() ListKind { return l.kind }

// Load returns the list's current contents.
func (l *List) Load() *ListData { return l.cur.Load() }

// Store makes d the list's contents, atomically: every lookup after it sees
// d whole, every lookup before it the previous data whole.
func (l *List) Store(d *ListData) error {
	if d == nil || d.kind != l.kind {
		return fmt.Errorf("list %q is a %s list, the new data is not", l.name, l.kind)
	}
	l.cur.Store(d)
	return nil
}

// ListData is the immutable contents of a list.
type ListData struct {
	kind ListKind
	n    int // entries as loaded (prefixes, keys)

	// cidr: disjoint ranges sorted by lo (IPv4 as v4-mapped IPv6), and the
	// prefixes as loaded, for the XDP program's trie.
	ranges   []addrRange
	prefixes []netip.Prefix

	set map[string]struct{}
	m   map[string]mapEntry
}

// mapEntry is one value of a map list: as the rules compare it, and as
// JSON text for added fields.
type mapEntry struct {
	v    Value
	json string
}

// Kind returns what d holds.
func (d *ListData) Kind() ListKind { return d.kind }

// Len returns the entries of d: prefixes, keys or key/value pairs.
func (d *ListData) Len() int { return d.n }

// Prefixes returns the networks of a cidr list, masked, as loaded (the
// caller must not modify the slice).
func (d *ListData) Prefixes() []netip.Prefix { return d.prefixes }

// ContainsAddr reports whether a is in one of the networks of a cidr
// list. It does not allocate. IPv4 addresses are looked up as v4-mapped
// IPv6 (::ffff:a.b.c.d), as the XDP program's trie keys them, so an IPv6
// network that covers ::ffff:0:0/96 holds IPv4 addresses too.
func (d *ListData) ContainsAddr(a netip.Addr) bool {
	if !a.IsValid() || len(d.ranges) == 0 {
		return false
	}
	x := u128From(a)
	// Bisect for the first range with lo > x; the one before it is the
	// only range that may hold x (they are disjoint).
	rs := d.ranges
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r := &rs[m].lo; r.hi < x.hi || r.hi == x.hi && r.lo <= x.lo {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return false
	}
	r := &rs[lo-1].hi
	return x.hi < r.hi || x.hi == r.hi && x.lo <= r.lo
}

// ContainsKey reports whether key is in a set list (or is a key of a map
// list). It does not allocate.
func (d *ListData) ContainsKey(key string) bool {
	if d.kind == ListMap {
		_, ok := d.m[key]
		return ok
	}
	_, ok := d.set[key]
	return ok
}

// Lookup returns the value of key in a map list: KindMissing when absent.
// Str of a string value stays valid as long as d is referenced.
func (d *ListData) Lookup(key string) Value {
	return d.m[key].v
}

// LookupJSON returns the value of key in a map list as JSON text, as an
// added field writes it.
func (d *ListData) LookupJSON(key string) (string, bool) {
	e, ok := d.m[key]
	return e.json, ok
}

// u128 is an IPv6 address (IPv4 v4-mapped) as a number.
type u128 struct{ hi, lo uint64 }

func u128From(a netip.Addr) u128 {
	b := a.As16() // IPv4 as ::ffff:a.b.c.d, as the trie of the XDP program keys it
	return u128{hi: beUint64(b[:8]), lo: beUint64(b[8:])}
}

func beUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

func (x u128) cmp(y u128) int {
	if c := cmp.Compare(x.hi, y.hi); c != 0 {
		return c
	}
	return cmp.Compare(x.lo, y.lo)
}

// addOne returns x+1 and whether it did not wrap.
func (x u128) addOne() (u128, bool) {
	lo := x.lo + 1
	hi := x.hi
	if lo == 0 {
		hi++
		if hi == 0 {
			return u128{}, false
		}
	}
	return u128{hi, lo}, true
}

// addrRange is a closed range of addresses.
type addrRange struct{ lo, hi u128 }

// prefixRange is the range of addresses of p (IPv4 in v4-mapped form).
func prefixRange(p netip.Prefix) addrRange {
	bits := p.Bits()
	a := p.Masked().Addr()
	if a.Is4() {
		bits += 96
	}
	lo := u128From(a)
	// host bits set in hi
	var mask u128
	switch {
	case bits >= 128:
	case bits >= 64:
		mask.lo = ^uint64(0) >> uint(bits-64)
	default:
		mask.hi = ^uint64(0) >> uint(bits)
		mask.lo = ^uint64(0)
	}
	return addrRange{lo: lo, hi: u128{lo.hi | mask.hi, lo.lo | mask.lo}}
}

// ListLimits bound what a list file may hold.
type ListLimits struct {
	MaxEntries int // 0: DefaultListMaxEntries
}

// DefaultListMaxEntries is the default bound of a list's entries.
const DefaultListMaxEntries = 1 << 20

// MaxListKey bounds a key or a value of a set or map list, in bytes.
const MaxListKey = 4096

// ListError is a problem in a list's data: Line is the 1-based line of
// the file (0 when the problem is not on one line).
type ListError struct {
	Line int
	Msg  string
}

func (e *ListError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// ListFormat is how a list file is written.
type ListFormat uint8

const (
	// FormatLines: one entry a line (a network or address for cidr, a key
	// for set); blank lines and lines starting with # are skipped, and in
	// a cidr list everything after a #.
	FormatLines ListFormat = iota
	// FormatCSV: key,value a line (map); # starts a comment line; fields
	// may be quoted as in RFC 4180.
	FormatCSV
	// FormatJSON: one object {"key": value} with string, number or boolean
	// values (map).
	FormatJSON
)

// ParseList builds the contents of a list of kind k from data. Its
// errors are *ListError with the line of the file.
func ParseList(k ListKind, f ListFormat, data []byte, lim ListLimits) (*ListData, error) {
	maxN := lim.MaxEntries
	if maxN <= 0 {
		maxN = DefaultListMaxEntries
	}
	if !utf8.Valid(data) {
		return nil, &ListError{Line: firstBadUTF8Line(data), Msg: "not valid UTF-8"}
	}
	switch k {
	case ListCIDR:
		if f != FormatLines {
			return nil, &ListError{Msg: "a cidr list is one network a line"}
		}
		return parseCIDRs(data, maxN)
	case ListSet:
		if f != FormatLines {
			return nil, &ListError{Msg: "a set list is one key a line"}
		}
		return parseSet(data, maxN)
	case ListMap:
		switch f {
		case FormatCSV:
			return parseMapCSV(data, maxN)
		case FormatJSON:
			return parseMapJSON(data, maxN)
		}
		return nil, &ListError{Msg: "a map list is CSV (key,value) or a JSON object"}
	}
	return nil, fmt.Errorf("list kind %d", k)
}

func firstBadUTF8Line(data []byte) int {
	line := 1
	for len(data) > 0 {
		r, n := utf8.DecodeRune(data)
		if r == utf8.RuneError && n == 1 {
			return line
		}
		if r == '\n' {
			line++
		}
		data = data[n:]
	}
	return line
}

// eachLine calls fn with every line of data (without CR LF), numbered.
func eachLine(data []byte, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), len(data)+1)
	n := 0
	for sc.Scan() {
		n++
		if err := fn(n, strings.TrimRight(sc.Text(), "\r")); err != nil {
			return err
		}
	}
	return sc.Err()
}

func tooMany(n, maxN int) error {
	return &ListError{Line: n, Msg: fmt.Sprintf("more than %d entries (raise max_entries)", maxN)}
}

func parseCIDRs(data []byte, maxN int) (*ListData, error) {
	d := &ListData{kind: ListCIDR}
	err := eachLine(data, func(n int, line string) error {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		s := strings.TrimSpace(line)
		if s == "" {
			return nil
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return &ListError{Line: n, Msg: fmt.Sprintf("%q is not a network (198.51.100.0/24, 2001:db8::/32) or an address", s)}
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if len(d.prefixes) == maxN {
			return tooMany(n, maxN)
		}
		d.prefixes = append(d.prefixes, p.Masked())
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.n = len(d.prefixes)
	d.ranges = make([]addrRange, 0, len(d.prefixes))
	for _, p := range d.prefixes {
		d.ranges = append(d.ranges, prefixRange(p))
	}
	slices.SortFunc(d.ranges, func(a, b addrRange) int { return a.lo.cmp(b.lo) })
	// Merge overlapping and adjacent ranges, so that they are disjoint and
	// a bisection on lo finds the only candidate.
	out := d.ranges[:0]
	for _, r := range d.ranges {
		if k := len(out); k > 0 {
			last := &out[k-1]
			next, ok := last.hi.addOne()
			if !ok || r.lo.cmp(next) <= 0 {
				if r.hi.cmp(last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		out = append(out, r)
	}
	d.ranges = slices.Clip(out)
	return d, nil
}

func checkKey(n int, what, s string) error {
	if len(s) > MaxListKey {
		return &ListError{Line: n, Msg: fmt.Sprintf("%s of %d bytes: at most %d", what, len(s), MaxListKey)}
	}
	return nil
}

func parseSet(data []byte, maxN int) (*ListData, error) {
	d := &ListData{kind: ListSet, set: map[string]struct{}{}}
	err := eachLine(data, func(n int, line string) error {
		s := strings.TrimSpace(line)
		if s == "" || s[0] == '#' {
			return nil
		}
		if err := checkKey(n, "key", s); err != nil {
			return err
		}
		if _, dup := d.set[s]; dup {
			return nil
		}
		if len(d.set) == maxN {
			return tooMany(n, maxN)
		}
		d.set[s] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.n = len(d.set)
	return d, nil
}

// jsonText encodes v as JSON (strings escaped as the sinks expect: no HTML
// escaping).
func jsonText(v Value) string {
	switch v.Kind {
	case KindString:
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(v.Str) // a string always encodes
		return strings.TrimSuffix(b.String(), "\n")
	case KindNumber:
		return v.Str
	case KindBool:
		return strconv.FormatBool(v.Bool)
	}
	return "null"
}

func (d *ListData) put(n int, key string, v Value, lines map[string]int, maxN int) error {
	if err := checkKey(n, "key", key); err != nil {
		return err
	}
	if v.Kind == KindString {
		if err := checkKey(n, "value", v.Str); err != nil {
			return err
		}
	}
	if first, dup := lines[key]; dup {
		return &ListError{Line: n, Msg: fmt.Sprintf("key %q repeated (first on line %d)", key, first)}
	}
	if len(d.m) == maxN {
		return tooMany(n, maxN)
	}
	lines[key] = n
	d.m[key] = mapEntry{v: v, json: jsonText(v)}
	return nil
}

func parseMapCSV(data []byte, maxN int) (*ListData, error) {
	d := &ListData{kind: ListMap, m: map[string]mapEntry{}}
	lines := map[string]int{}
	r := csv.NewReader(bytes.NewReader(data))
	r.Comment = '#'
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, &ListError{Line: pe.Line, Msg: pe.Err.Error()}
		}
		if err != nil {
			return nil, &ListError{Msg: err.Error()}
		}
		line, _ := r.FieldPos(0)
		if len(rec) != 2 {
			return nil, &ListError{Line: line, Msg: fmt.Sprintf("%d fields: want key,value", len(rec))}
		}
		key := strings.TrimSpace(rec[0])
		if key == "" {
			return nil, &ListError{Line: line, Msg: "empty key"}
		}
		v := Value{Kind: KindString, Str: strings.TrimSpace(rec[1])}
		if err := d.put(line, key, v, lines, maxN); err != nil {
			return nil, err
		}
	}
	d.n = len(d.m)
	return d, nil
}

func parseMapJSON(data []byte, maxN int) (*ListData, error) {
	d := &ListData{kind: ListMap, m: map[string]mapEntry{}}
	lines := map[string]int{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	// lineAt counts lines from where the last call stopped: offsets only
	// grow while the decoder reads on, so the file is counted once, not
	// once per key (an error's offset may lie behind: counted afresh).
	lastOff, lastLine := 0, 1
	lineAt := func(off int64) int {
		o := min(int(off), len(data))
		if o < lastOff {
			lastOff, lastLine = 0, 1
		}
		lastLine += bytes.Count(data[lastOff:o], []byte{'\n'})
		lastOff = o
		return lastLine
	}
	fail := func(err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return &ListError{Line: lineAt(se.Offset), Msg: "invalid JSON: " + se.Error()}
		}
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return &ListError{Line: lineAt(int64(len(data))), Msg: "invalid JSON: unexpected end"}
		}
		return &ListError{Line: lineAt(dec.InputOffset()), Msg: "invalid JSON: " + err.Error()}
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fail(err)
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '{' {
		return nil, &ListError{Line: lineAt(dec.InputOffset()), Msg: `want one JSON object {"key": "value", …}`}
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fail(err)
		}
		key := tok.(string) // object keys are strings
		line := lineAt(dec.InputOffset())
		tok, err = dec.Token()
		if err != nil {
			return nil, fail(err)
		}
		var v Value
		switch t := tok.(type) {
		case string:
			v = Value{Kind: KindString, Str: t}
		case json.Number:
			f, err := t.Float64()
			if err != nil {
				return nil, &ListError{Line: line, Msg: fmt.Sprintf("key %q: number %s out of range", key, t)}
			}
			v = Value{Kind: KindNumber, Num: f, Str: t.String()}
		case bool:
			v = Value{Kind: KindBool, Bool: t}
		default:
			return nil, &ListError{Line: line, Msg: fmt.Sprintf("key %q: want a string, number or boolean value", key)}
		}
		if key == "" {
			return nil, &ListError{Line: line, Msg: "empty key"}
		}
		if err := d.put(line, key, v, lines, maxN); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing }
		return nil, fail(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &ListError{Line: lineAt(dec.InputOffset()), Msg: "something after the object"}
	}
	d.n = len(d.m)
	return d, nil
}
