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
// It scans the object once per member cut (events carry none but a
// forger's), in place, without allocating.
func (sk *sink) stripReserved(b []byte, start int, meta bool) []byte {
	if !(meta && sk.metaOn) && len(sk.reserved) == 0 {
		return b
	}
	for {
		from, to, ok := sk.reservedMember(b[start:], meta)
		if !ok {
			return b
		}
		b = append(b[:start+from], b[start+to:]...)
		sk.cnt.replaced.Add(1)
	}
}

// reservedMember finds the first top-level member of the JSON object obj
// whose name is reserved, and the range to cut so that the object stays
// valid JSON: ",name:value" for a member after the first, "name:value,"
// for the first of several, "name:value" for the only one.
func (sk *sink) reservedMember(obj []byte, meta bool) (from, to int, ok bool) {
	depth := 0
	expectKey := false
	sep := -1    // the ',' before the current member; -1 for the first
	member := -1 // where the current member's name starts
	cut := false // the current member is reserved
	for i := 0; i < len(obj); {
		switch obj[i] {
		case '"':
			j, esc := stringEnd(obj, i)
			if depth == 1 && expectKey {
				member, expectKey = i, false
				cut = sk.reservedFor(obj[i+1:min(j, len(obj))], esc, meta)
			}
			i = j + 1
			continue
		case '{':
			depth++
			if depth == 1 {
				expectKey, sep = true, -1
			}
		case '[':
			depth++
		case '}', ']':
			if depth == 1 && cut {
				if sep >= 0 {
					return sep, i, true
				}
				return member, i, true
			}
			depth--
		case ',':
			if depth == 1 {
				if cut {
					if sep >= 0 {
						return sep, i, true
					}
					return member, i + 1, true
				}
				sep, expectKey = i, true
			}
		}
		i++
	}
	return 0, 0, false
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
