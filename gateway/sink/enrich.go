package sink

// withExtra puts the added fields of a decision (engine.Decision.Extra:
// JSON members, each with a leading comma) into the object that b[start:]
// ends with, before its closing brace, so a record carries them as fields
// of the event itself. An empty object takes them without the first comma.
// It appends at most len(extra) bytes: the callers' bounds count them.
func withExtra(b []byte, start int, extra []byte) []byte {
	end := len(b) - 1
	if len(extra) == 0 || end < start || b[end] != '}' {
		return b
	}
	j := end - 1
	for j > start && (b[j] == ' ' || b[j] == '\t' || b[j] == '\n' || b[j] == '\r') {
		j--
	}
	if b[j] == '{' {
		extra = extra[1:]
	}
	b = append(b[:end], extra...)
	return append(b, '}')
}
