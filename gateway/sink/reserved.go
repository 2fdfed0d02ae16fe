package sink

import (
	"bytes"
	"unsafe"
)

// Reserved names. The fields the gateway writes into an event's object —
// a sink's meta fields ("_src", "_rule", …) and the fields enrich: adds —
// are the gateway's: a consumer must be able to trust them. A sender who
// puts a member of such a name into its event would otherwise forge them
// (or, when the gateway chose another name, push the real one aside). So
// before they are written, the event's own top-level members of those
// names are cut out of the record (Stats.Replaced counts them), and the
// gateway's values are the only ones there. Nested members and other names
// are left as they were.

// reservedFor reports whether name (a member name as written between its
// quotes; escaped when esc) is one the sink writes into a record of d:
// a wanted meta field's "_" + key, or a field of the sink's reserved list
// (every field an enrich: of the configuration may add).
func (sk *sink) reservedFor(name []byte, esc, meta bool) bool {
	var buf [96]byte
	if esc {
		n, ok := unescapeKey(buf[:], name)
		if !ok {
			return false // longer than any reserved name, or not ASCII
		}
		name = buf[:n]
	}
	if meta && sk.metaOn && len(name) > 1 && name[0] == '_' {
		rest := unsafe.String(unsafe.SliceData(name[1:]), len(name)-1)
		for f, key := range metaNames {
			if sk.metaWant[f] && rest == key {
				return true
			}
		}
	}
	for _, r := range sk.reserved {
		if string(name) == r {
			return true
		}
	}
	return false
}

// stripReserved cuts every top-level member with a reserved name out of
// the JSON object b[start:] (the event as the record holds it) and
// returns b; it counts what it cut. meta: the meta fields go into this
// object too (a raw record; an annotated one has them outside the event).
// One pass, in place, without allocating: the members kept are moved
// down over the ones cut (a forger's event of many reserved members costs
// what any event of its length does).
func (sk *sink) stripReserved(b []byte, start int, meta bool) []byte {
	if !(meta && sk.metaOn) && len(sk.reserved) == 0 {
		return b
	}
	obj := b[start:]
	open := 0
	for open < len(obj) && obj[open] != '{' {
		open++
	}
	if open == len(obj) {
		return b
	}
	// The members are the segments between the object's top-level
	// separators ('{' ',' '}'). w is where the next kept one goes; it never
	// passes the segment being read, so moving one down is safe.
	w, seg := open+1, open+1
	kept, cut := 0, uint64(0)
	keyed, reserved := false, false
	take := func(end int) {
		if reserved {
			cut++
			return
		}
		if kept > 0 {
			obj[w] = ','
			w++
		}
		if w == seg {
			w = end // nothing cut so far: already in place
		} else {
			w += copy(obj[w:], obj[seg:end])
		}
		kept++
	}
	depth := 1
	for j := open + 1; j < len(obj); {
		switch c := obj[j]; {
		case c == '"':
			e, esc := stringEnd(obj, j)
			if depth == 1 && !keyed {
				keyed = true
				reserved = sk.reservedFor(obj[j+1:min(e, len(obj))], esc, meta)
			}
			j = e + 1
			continue
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth--; depth == 0 {
				take(j)
				if cut == 0 {
					return b
				}
				sk.cnt.replaced.Add(cut)
				n := copy(obj[w:], obj[j:]) // the brace and what follows
				return b[:start+w+n]
			}
		case c == ',' && depth == 1:
			take(j)
			seg, keyed, reserved = j+1, false, false
		}
		j++
	}
	return b // not a whole object (cannot be, for a decoded event)
}

// stringEnd returns the index of the quote that closes the JSON string
// opening at obj[i] (len(obj) if none), and whether it holds escapes.
func stringEnd(obj []byte, i int) (int, bool) {
	esc := false
	j := i + 1
	for {
		k := bytes.IndexAny(obj[j:], `"\`)
		if k < 0 {
			return len(obj), esc
		}
		j += k
		if obj[j] == '"' {
			return j, esc
		}
		esc = true
		j += 2
		if j >= len(obj) {
			return len(obj), esc
		}
	}
}
