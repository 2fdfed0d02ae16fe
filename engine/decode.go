package engine

import (
	"encoding/binary"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// DecodeError names why an object in a datagram did not become an event.
// Every one of them is a counter; none of them panics.
type DecodeError uint8

const (
	DecodeOK           DecodeError = iota
	ErrEmpty                       // the datagram holds nothing but whitespace
	ErrOversized                   // datagram or object larger than Limits allow
	ErrInvalidJSON                 // not valid JSON (syntax, bad escape, control character…)
	ErrNotObject                   // valid start of a value, but not an object
	ErrTooDeep                     // nesting deeper than Limits.MaxDepth
	ErrInvalidUTF8                 // a string that is not valid UTF-8
	ErrTrailingGarbage             // something other than a newline after the object
	ErrMissingField                // a required role is absent
	ErrWrongType                   // a role has the wrong JSON type (amount: "12")
	ErrDuplicateKey                // a key the rules read appears twice in its object (I-JSON, RFC 7493)
	ErrNumberRange                 // a number whose magnitude is beyond float64 (1e400)
	NumDecodeErrors
)

var decodeErrorNames = [NumDecodeErrors]string{
	"ok", "empty", "oversized", "invalid_json", "not_object", "too_deep",
	"invalid_utf8", "trailing_garbage", "missing_field", "wrong_type",
	"duplicate_key", "number_out_of_range",
}

func (e DecodeError) String() string {
	if e < NumDecodeErrors {
		return decodeErrorNames[e]
	}
	return "unknown"
}

// Limits bound the work one datagram can cause, and say how strict the
// decoder is.
type Limits struct {
	MaxDatagram int // bytes; default 65535
	MaxEvent    int // bytes of one object; default 16384
	MaxDepth    int // nesting of objects and arrays, the event itself is 1; default 32
	// AllowDuplicateKeys turns off the duplicate_key check (see
	// decoder.object): the first occurrence of a key then wins, as in gjson,
	// while most downstream parsers read the last one.
	AllowDuplicateKeys bool
}

func (l Limits) withDefaults() Limits {
	if l.MaxDatagram <= 0 {
		l.MaxDatagram = 65535
	}
	if l.MaxEvent <= 0 {
		l.MaxEvent = 16384
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = 32
	}
	return l
}

// decoder is a single-pass validating JSON scanner specialised for flat
// events: it walks the object once, validates every byte (syntax, escapes,
// UTF-8, depth), and fills the slots of the wanted top-level fields as it
// meets them. Nested paths ("meta.country") are resolved with gjson on the
// view of their top-level value, so gjson stays the reference for path
// semantics.
//
// A decoder belongs to one worker; it is not safe for concurrent use.
type decoder struct {
	fs  *fieldSet
	lim Limits
	// scratch holds unescaped copies of strings that contained escapes.
	// Reset at every frame; views into it share the frame's lifetime.
	scratch []byte
}

func newDecoder(fs *fieldSet, lim Limits) *decoder {
	return &decoder{fs: fs, lim: lim.withDefaults(), scratch: make([]byte, 0, 1024)}
}

// strSafe marks bytes that may appear in a JSON string without ending it or
// needing a closer look: printable ASCII other than '"' and '\\'.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isWS(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// object decodes the top-level object starting at b[i] == '{' into ev and
// returns the index just past its closing brace.
//
// Duplicate keys (unless Limits.AllowDuplicateKeys): the decoder rejects an
// object as duplicate_key when a key the rules read occurs twice where they
// read it: a top-level name of a field path, and every name along a nested
// path ("meta.country": "meta" at the top, "country" inside the first
// "meta" object, and so on, arrays entered by index as gjson does). That is
// exact (names are compared unescaped, so "user\u005fid" duplicates
// "user_id") and free of allocations: the top level is a 64-bit mask of
// the names already seen, a nested path is one extra walk of its top-level
// value. Duplicates of keys no rule reads are not looked for: they cannot
// make the rules and a downstream parser disagree about the rules' input,
// and finding them exactly would need a set of every key of every object.
func (d *decoder) object(b []byte, i int, ev *Event) (int, DecodeError) {
	vals := ev.values
	for k := range vals {
		vals[k] = Value{}
	}
	fs := d.fs
	top := fs.top
	dup := !d.lim.AllowDuplicateKeys
	pending := len(top) // top-level fields not seen yet
	var seen uint64     // bit t: top[t] seen (fieldSet caps top at 64)
	i++                 // '{'
	i = skipWS(b, i)
	if i < len(b) && b[i] == '}' {
		return i + 1, DecodeOK
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, ErrInvalidJSON
		}
		// With the duplicate check on, every key is compared with the
		// wanted names, seen ones included; without it, only until all
		// were seen.
		look := pending > 0 || dup
		keyAt := i
		ti := -1
		var end int
		var err DecodeError
		// Fast path: a wanted plain name right here, followed by its
		// closing quote, needs no scan of the key.
		if look && i+1 < len(b) {
			m := fs.byFirst[b[i+1]]
			if !dup {
				m &^= seen
			}
			for ; m != 0; m &= m - 1 {
				t := bits.TrailingZeros64(m)
				name := top[t].name
				if e := i + 1 + len(name); e < len(b) && b[e] == '"' && bytesView(b[i+1:e]) == name {
					ti, end = t, e+1
					break
				}
			}
		}
		if ti < 0 {
			var key string
			end, key, err = d.str(b, i, look)
			if err != DecodeOK {
				return end, err
			}
			// A key without escapes (its text is as long as its body:
			// every escape shortens) that the fast path did not match
			// can only equal a name that is not plain.
			if look && (fs.nonPlain || len(key) != end-i-2) {
				for t := range top {
					if top[t].name == key {
						ti = t
						break
					}
				}
			}
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return i, ErrInvalidJSON
		}
		i = skipWS(b, i+1)
		if ti >= 0 && seen&(1<<uint(ti)) != 0 {
			if dup {
				return keyAt, ErrDuplicateKey
			}
			ti = -1 // the first occurrence wins, as in gjson
		}
		if ti >= 0 {
			seen |= 1 << uint(ti)
			pending--
			tf := &top[ti]
			var tmp Value
			v := &tmp
			if tf.direct >= 0 {
				v = &vals[tf.direct] // decode in place: no copy of the Value
			}
			start := i
			end, err = d.value(b, i, 2, v)
			if err != DecodeOK {
				return end, err
			}
			if v.Kind == KindObject || v.Kind == KindArray {
				for _, np := range tf.nested {
					if dup && d.dupAlong(b[start:end], np.rest) {
						return start, ErrDuplicateKey
					}
					vals[np.slot] = fromGJSON(gjson.Get(v.Str, np.rest))
				}
			}
		} else {
			end, err = d.value(b, i, 2, nil)
			if err != DecodeOK {
				return end, err
			}
		}
		i = skipWS(b, end)
		if i >= len(b) {
			return i, ErrInvalidJSON
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return i + 1, DecodeOK
		default:
			return i, ErrInvalidJSON
		}
	}
}

// dupAlong reports whether walking path (dotted components, as gjson reads
// them) into the validated JSON value b meets an object that holds the
// next component's name more than once. It follows the first occurrence,
// as gjson does, and enters an array only by a numeric component (an
// index). It does not allocate (escaped names are unescaped into scratch).
func (d *decoder) dupAlong(b []byte, path string) bool {
	for path != "" {
		comp, rest, _ := strings.Cut(path, ".")
		path = rest
		i := skipWS(b, 0)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case '{':
			found := false
			var vs, ve int
			i = skipWS(b, i+1)
			for i < len(b) && b[i] == '"' {
				end, key, _ := d.str(b, i, true)
				i = skipWS(b, skipWS(b, end)+1) // past ':'
				vend, _ := d.value(b, i, 0, nil)
				if key == comp {
					if found {
						return true
					}
					found, vs, ve = true, i, vend
				}
				i = skipWS(b, vend)
				if i < len(b) && b[i] == ',' {
					i = skipWS(b, i+1)
				} else {
					break
				}
			}
			if !found {
				return false
			}
			b = b[vs:ve]
		case '[':
			n, err := strconv.Atoi(comp)
			if err != nil || n < 0 {
				return false
			}
			i = skipWS(b, i+1)
			for k := 0; ; k++ {
				if i >= len(b) || b[i] == ']' {
					return false
				}
				vend, _ := d.value(b, i, 0, nil)
				if k == n {
					b = b[i:vend]
					break
				}
				i = skipWS(b, vend)
				if i < len(b) && b[i] == ',' {
					i = skipWS(b, i+1)
				}
			}
		default:
			return false
		}
	}
	return false
}

// fromGJSON converts a gjson result into a Value. Strings without escapes
// are substrings of the input (zero-copy); gjson allocates for escaped ones.
func fromGJSON(r gjson.Result) Value {
	switch r.Type {
	case gjson.Null:
		if !r.Exists() {
			return Value{}
		}
		return Value{Kind: KindNull}
	case gjson.False:
		return Value{Kind: KindBool}
	case gjson.True:
		return Value{Kind: KindBool, Bool: true}
	case gjson.Number:
		return Value{Kind: KindNumber, Num: r.Num, Str: r.Raw}
	case gjson.String:
		return Value{Kind: KindString, Str: r.Str}
	case gjson.JSON:
		if len(r.Raw) > 0 && r.Raw[0] == '[' {
			return Value{Kind: KindArray, Str: r.Raw}
		}
		return Value{Kind: KindObject, Str: r.Raw}
	}
	return Value{}
}

// value validates the JSON value at b[i] and, when out is not nil, stores
// it there. depth is the nesting level the value sits at.
func (d *decoder) value(b []byte, i, depth int, out *Value) (int, DecodeError) {
	if i >= len(b) {
		return i, ErrInvalidJSON
	}
	switch c := b[i]; {
	case c == '"':
		end, s, err := d.str(b, i, out != nil)
		if out != nil {
			*out = Value{Kind: KindString, Str: s}
		}
		return end, err
	case c == '-' || (c >= '0' && c <= '9'):
		end, f, err := number(b, i, out != nil)
		if out != nil {
			*out = Value{Kind: KindNumber, Num: f, Str: bytesView(b[i:end])}
		}
		return end, err
	case c == '{' || c == '[':
		if depth > d.lim.MaxDepth {
			return i, ErrTooDeep
		}
		var end int
		var err DecodeError
		if c == '{' {
			end, err = d.skipObject(b, i, depth)
		} else {
			end, err = d.skipArray(b, i, depth)
		}
		if out != nil && err == DecodeOK {
			k := KindObject
			if c == '[' {
				k = KindArray
			}
			*out = Value{Kind: k, Str: bytesView(b[i:end])}
		}
		return end, err
	case c == 't':
		return literal(b, i, "true", out, Value{Kind: KindBool, Bool: true})
	case c == 'f':
		return literal(b, i, "false", out, Value{Kind: KindBool})
	case c == 'n':
		return literal(b, i, "null", out, Value{Kind: KindNull})
	}
	return i, ErrInvalidJSON
}

func literal(b []byte, i int, word string, out *Value, v Value) (int, DecodeError) {
	if len(b)-i < len(word) || bytesView(b[i:i+len(word)]) != word {
		return i, ErrInvalidJSON
	}
	if out != nil {
		*out = v
	}
	return i + len(word), DecodeOK
}

// skipObject validates a nested object; depth is its own level.
func (d *decoder) skipObject(b []byte, i, depth int) (int, DecodeError) {
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, DecodeOK
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, ErrInvalidJSON
		}
		end, _, err := d.str(b, i, false)
		if err != DecodeOK {
			return end, err
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return i, ErrInvalidJSON
		}
		end, err = d.value(b, skipWS(b, i+1), depth+1, nil)
		if err != DecodeOK {
			return end, err
		}
		i = skipWS(b, end)
		if i >= len(b) {
			return i, ErrInvalidJSON
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return i + 1, DecodeOK
		default:
			return i, ErrInvalidJSON
		}
	}
}

func (d *decoder) skipArray(b []byte, i, depth int) (int, DecodeError) {
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, DecodeOK
	}
	for {
		end, err := d.value(b, i, depth+1, nil)
		if err != DecodeOK {
			return end, err
		}
		i = skipWS(b, end)
		if i >= len(b) {
			return i, ErrInvalidJSON
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case ']':
			return i + 1, DecodeOK
		default:
			return i, ErrInvalidJSON
		}
	}
}

// str validates the string starting at the quote b[i] and returns the index
// past its closing quote. With want, it also returns its text: a view into
// b when the string has no escapes, else an unescaped copy in d.scratch.
func (d *decoder) str(b []byte, i int, want bool) (int, string, DecodeError) {
	start := i + 1
	j := start
	escaped, high := false, false
	for {
		j = skipSafe(b, j)
		for j < len(b) && strSafe[b[j]] {
			j++
		}
		if j >= len(b) {
			return j, "", ErrInvalidJSON
		}
		c := b[j]
		switch {
		case c == '"':
			if high && !utf8.Valid(b[start:j]) {
				return j, "", ErrInvalidUTF8
			}
			if !want {
				return j + 1, "", DecodeOK
			}
			if !escaped {
				return j + 1, bytesView(b[start:j]), DecodeOK
			}
			return j + 1, d.unescape(b[start:j]), DecodeOK
		case c == '\\':
			escaped = true
			if j+1 >= len(b) {
				return j, "", ErrInvalidJSON
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) || !isHex4(b[j+2:j+6]) {
					return j, "", ErrInvalidJSON
				}
				j += 6
			default:
				return j, "", ErrInvalidJSON
			}
		case c < 0x20:
			return j, "", ErrInvalidJSON
		default: // >= 0x80: part of a multi-byte sequence, checked at the end
			high = true
			j++
		}
	}
}

const (
	swarOnes  = 0x0101010101010101
	swarHighs = 0x8080808080808080
)

// skipSafe advances over string bytes that need no attention (printable
// ASCII but '"' and '\\'), eight at a time. In each 8-byte word it flags
// bytes equal to '"' or '\\', below 0x20, or with the high bit set; the
// classic has-zero-byte test (v-0x01..)&^v&0x80.. can give false positives
// only above the lowest true one, so the lowest flag is exact and the
// byte loop in str resumes right there.
func skipSafe(b []byte, j int) int {
	for j+8 <= len(b) {
		x := binary.LittleEndian.Uint64(b[j:])
		q := x ^ (swarOnes * '"')
		bs := x ^ (swarOnes * '\\')
		m := (q-swarOnes)&^q | (bs-swarOnes)&^bs | (x - swarOnes*0x20) | x
		m &= swarHighs
		if m != 0 {
			return j + bits.TrailingZeros64(m)>>3
		}
		j += 8
	}
	return j
}

func isHex4(h []byte) bool {
	for _, c := range h[:4] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func hex4(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// unescape decodes a validated string body into d.scratch and returns a
// view of it. The scratch buffer only grows (amortised, not per event).
func (d *decoder) unescape(s []byte) string {
	start := len(d.scratch)
	out := d.scratch
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch s[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(s[i+2:])
			i += 6
			if utf16IsHigh(r) && i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
				if lo := hex4(s[i+2:]); utf16IsLow(lo) {
					r = (r-0xd800)<<10 | (lo - 0xdc00) + 0x10000
					i += 6
				}
			}
			if utf16IsHigh(r) || utf16IsLow(r) {
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, s[i+1])
		}
		i += 2
	}
	d.scratch = out
	return bytesView(out[start:])
}

func utf16IsHigh(r rune) bool { return r >= 0xd800 && r < 0xdc00 }
func utf16IsLow(r rune) bool  { return r >= 0xdc00 && r < 0xe000 }

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// number validates the JSON number at b[i] and, with want, parses it.
// Numbers whose decimal mantissa fits in 53 bits and whose exponent is
// within ±22 are converted exactly with one multiplication or division
// (Clinger's fast path); the rest go through strconv.ParseFloat, which is
// correctly rounded. A magnitude beyond float64 (gjson would say ±Inf) is
// ErrNumberRange, whether or not the number is wanted.
func number(b []byte, i int, want bool) (int, float64, DecodeError) {
	j := i
	neg := false
	if b[j] == '-' {
		neg = true
		j++
		if j >= len(b) {
			return j, 0, ErrInvalidJSON
		}
	}
	var mant uint64
	digits, exp := 0, 0 // significant digits kept in mant; decimal exponent
	exact := true
	switch c := b[j]; {
	case c == '0':
		j++
	case c >= '1' && c <= '9':
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			if digits < 19 {
				mant = mant*10 + uint64(b[j]-'0')
				digits++
			} else {
				exp++
				exact = false
			}
			j++
		}
	default:
		return j, 0, ErrInvalidJSON
	}
	if j < len(b) && b[j] == '.' {
		j++
		k := j
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			if digits < 19 {
				if mant != 0 || b[j] != '0' {
					digits++
				}
				mant = mant*10 + uint64(b[j]-'0')
				exp--
			} else {
				exact = false
			}
			j++
		}
		if j == k {
			return j, 0, ErrInvalidJSON
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		esign := 1
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			if b[j] == '-' {
				esign = -1
			}
			j++
		}
		k := j
		e := 0
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			if e < 100000 {
				e = e*10 + int(b[j]-'0')
			}
			j++
		}
		if j == k {
			return j, 0, ErrInvalidJSON
		}
		exp += esign * e
	}
	// Range: the value is mant × 10^exp with `digits` significant digits,
	// so it lies in [10^mag, 10^(mag+1)). Beyond float64 (it would round
	// to ±Inf) is an error, for every number, read or not: I-JSON asks
	// for numbers a double can hold, and ±Inf would poison sums (Inf-Inf
	// is NaN). Tiny magnitudes (1e-400) round to 0 and are in range.
	if digits > 0 {
		if mag := exp + digits - 1; mag >= 308 && overflows(b[i:j], mant, digits, mag) {
			return j, 0, ErrNumberRange
		}
	}
	if !want {
		return j, 0, DecodeOK
	}
	if exact && mant < 1<<53 && exp >= -22 && exp <= 22 {
		f := float64(mant)
		if exp >= 0 {
			f *= pow10[exp]
		} else {
			f /= pow10[-exp]
		}
		if neg {
			f = -f
		}
		return j, f, DecodeOK
	}
	// ParseFloat never fails on a syntactically valid number except with
	// ErrRange, where it returns the correctly signed ±Inf or 0; ±Inf was
	// ruled out above (checked again, as the last word).
	f, _ := strconv.ParseFloat(bytesView(b[i:j]), 64)
	if math.IsInf(f, 0) {
		return j, 0, ErrNumberRange
	}
	return j, f, DecodeOK
}

// maxFloat19 is the first 19 significant digits of 2^1024 - 2^970, the
// smallest magnitude that rounds to +Inf (1.797693134862315807937…e308).
const maxFloat19 = 1797693134862315807

// overflows reports whether the number lit, whose first (up to 19)
// significant digits are mant (digits of them) and whose magnitude is
// 10^mag, rounds beyond float64. Only a mantissa equal to maxFloat19 at
// mag 308 is undecided by the digits kept; strconv decides it (allocating
// its error, on this one rare input).
func overflows(lit []byte, mant uint64, digits, mag int) bool {
	if mag > 308 {
		return true
	}
	for ; digits < 19; digits++ {
		mant *= 10
	}
	switch {
	case mant < maxFloat19:
		return false
	case mant > maxFloat19:
		return true
	}
	f, _ := strconv.ParseFloat(bytesView(lit), 64)
	return math.IsInf(f, 0)
}
