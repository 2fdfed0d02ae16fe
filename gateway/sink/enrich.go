package sink

// withExtra puts the added fields of a decision (engine.Decision.Extra:
// JSON members, each with a leading comma) into the object that b[start:]
// ends with, before its closing brace, so a record carries them as fields
// of the event itself. An empty object takes them without the first comma.
// It appends at most len(extra) bytes: the callers' bounds count them.
func withExtra(b []byte, start int, extra []byte) []byte {
	if len(extra) == 0 {
		return b
	}
	b, empty, ok := openObject(b, start)
	if !ok {
		return b
	}
	if empty {
		extra = extra[1:]
	}
	b = append(b, extra...)
	return append(b, '}')
}

// openObject cuts the closing brace (and any blanks after it) off the
// JSON object that b[start:] ends with, so that members can be appended
// to it before the brace is put back; empty reports that the object has
// no member (the first one appended takes no leading comma). The added
// fields (withExtra) and the meta fields of a raw record (appendMetaRaw)
// both go in this way. ok is false, and b is returned as it is, when
// b[start:] does not end with '}' (not an object: cannot be, for a
// decoded event).
func openObject(b []byte, start int) (_ []byte, empty, ok bool) {
	end := len(b)
	for end > start && isBlank(b[end-1]) {
		end--
	}
	if end == start || b[end-1] != '}' {
		return b, false, false
	}
	j := end - 2 // the last byte before '}' that is not blank
	for j >= start && isBlank(b[j]) {
		j--
	}
	return b[:end-1], j >= start && b[j] == '{', true
}

// isBlank reports whether c is JSON whitespace.
func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
