package engine

import "bytes"

// One record per line. A datagram may hold several objects (NDJSON) and an
// object may be pretty-printed over several lines; Worker.Process decodes
// each object as one event (a pretty-printed object, nested lines and all,
// is one Decision whose Raw spans those lines). A sink that writes one
// record per line must therefore not copy Raw verbatim: a nested line of a
// pretty-printed object, written alone on its line, would read downstream
// as a record of its own that no rule evaluated. AppendCompact and
// AppendOneLine give the sink a single-line copy.

// AppendCompact appends raw, a JSON value, to dst without the whitespace
// between tokens, and returns the extended buffer. For a valid value (the
// Raw of a Decision with Err == DecodeOK) the result is the same value, at
// most len(raw) bytes long, so a caller whose dst has that much spare
// capacity gets no allocation. Whatever raw holds, the appended bytes hold
// no CR or LF: valid JSON has none inside strings (they must be escaped),
// and should raw be invalid, a raw CR or LF inside a string is written as
// the escape \r or \n (two bytes) and one outside is dropped.
func AppendCompact(dst, raw []byte) []byte {
	i := 0
	for i < len(raw) {
		switch raw[i] {
		case ' ', '\t', '\n', '\r':
			i++
		case '"':
			i = appendString(&dst, raw, i)
		default:
			// A run of structural characters and literals, up to the next
			// string or whitespace.
			j := i + 1
			for j < len(raw) && !compactStop[raw[j]] {
				j++
			}
			dst = append(dst, raw[i:j]...)
			i = j
		}
	}
	return dst
}

// compactStop marks the bytes that end a run outside strings.
var compactStop = [256]bool{'"': true, ' ': true, '\t': true, '\n': true, '\r': true}

// appendString copies the string starting at the quote raw[i] up to and
// including its closing quote (or the end of raw) and returns the index
// past it. Raw CR and LF (invalid JSON) become the escapes \r and \n; a
// backslash right before one of them, or at the end, is written as \\.
func appendString(dst *[]byte, raw []byte, i int) int {
	d := append(*dst, '"')
	i++
	for i < len(raw) {
		k := i
		for k < len(raw) && !strStop[raw[k]] {
			k++
		}
		d = append(d, raw[i:k]...)
		if i = k; i == len(raw) {
			break
		}
		switch c := raw[i]; c {
		case '"':
			*dst = append(d, '"')
			return i + 1
		case '\\':
			if i+1 < len(raw) && raw[i+1] != '\n' && raw[i+1] != '\r' {
				d = append(d, c, raw[i+1])
				i += 2
			} else {
				d = append(d, '\\', '\\')
				i++
			}
		case '\n':
			d = append(d, '\\', 'n')
			i++
		case '\r':
			d = append(d, '\\', 'r')
			i++
		}
	}
	*dst = d
	return i
}

// strStop marks the bytes inside a string that appendString looks at.
var strStop = [256]bool{'"': true, '\\': true, '\n': true, '\r': true}

// AppendOneLine appends raw verbatim if it holds no CR or LF, else its
// AppendCompact copy: one line either way, the producer's bytes kept when
// they already were one line. Same capacity rule as AppendCompact.
func AppendOneLine(dst, raw []byte) []byte {
	if bytes.IndexByte(raw, '\n') < 0 && bytes.IndexByte(raw, '\r') < 0 {
		return append(dst, raw...)
	}
	return AppendCompact(dst, raw)
}
