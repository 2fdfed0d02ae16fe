package demo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/tidwall/gjson"
)

// alertTail follows the alerts sink file: it counts the records appended
// since the last poll and keeps the last few, parsed. The sink writes whole
// slabs of records, but a poll may still see a record cut at the end of
// what was written so far; that part waits for the next poll.
type alertTail struct {
	path      string
	keep      int
	keyPath   string // the schema's key and amount paths in the event
	amountKey string
	windows   map[string]string // window rule → "sum(amount)/1m0s"

	f       *os.File
	off     int64
	partial []byte
	buf     []byte
	lines   uint64
	last    []alertLine // oldest first, at most keep
}

// alertLine is one alert record, as the view shows it.
type alertLine struct {
	Rule, Key string
	What      string // "amount 12,345.00" or "sum(amount)/1m0s = 51,230.40"
}

// alertRecord is an annotated sink record (sink.Spec.Format).
type alertRecord struct {
	Verdict string          `json:"verdict"`
	Rule    string          `json:"rule"`
	Value   float64         `json:"value"`
	Event   json.RawMessage `json:"event"`
}

func newAlertTail(path string, keep int, keyPath, amountPath string, windows map[string]string) *alertTail {
	return &alertTail{path: path, keep: keep, keyPath: keyPath, amountKey: amountPath, windows: windows}
}

// poll reads what was appended since the last call. A file that does not
// exist yet is not an error.
func (t *alertTail) poll() error {
	if t.f == nil {
		f, err := os.Open(t.path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("alerts file: %w", err)
		}
		t.f = f
	}
	if t.buf == nil {
		t.buf = make([]byte, 256<<10)
	}
	for {
		n, err := t.f.ReadAt(t.buf, t.off)
		t.off += int64(n)
		t.consume(t.buf[:n])
		if err == io.EOF || n < len(t.buf) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("alerts file: %w", err)
		}
	}
}

// consume splits b (after what was left of the previous read) into lines,
// counts them and keeps the last t.keep.
func (t *alertTail) consume(b []byte) {
	if len(t.partial) > 0 {
		b = append(t.partial, b...)
		t.partial = nil
	}
	end := bytes.LastIndexByte(b, '\n')
	if end < 0 {
		t.partial = append([]byte(nil), b...)
		return
	}
	t.partial = append([]byte(nil), b[end+1:]...)
	full := b[:end+1]
	n := bytes.Count(full, []byte{'\n'})
	t.lines += uint64(n)
	// Parse only the lines that can still be among the last t.keep.
	var recent [][]byte
	for i := 0; i < t.keep && len(full) > 0; i++ {
		full = full[:len(full)-1] // the newline
		start := bytes.LastIndexByte(full, '\n') + 1
		recent = append(recent, full[start:])
		full = full[:start]
	}
	for i := len(recent) - 1; i >= 0; i-- {
		t.last = append(t.last, t.parse(recent[i]))
	}
	if over := len(t.last) - t.keep; over > 0 {
		t.last = append(t.last[:0], t.last[over:]...)
	}
}

func (t *alertTail) parse(line []byte) alertLine {
	var r alertRecord
	if err := json.Unmarshal(line, &r); err != nil {
		return alertLine{Rule: "?", What: "unreadable record: " + err.Error()}
	}
	a := alertLine{Rule: r.Rule, Key: "-"}
	if k := gjson.GetBytes(r.Event, t.keyPath); k.Exists() {
		a.Key = k.String()
	}
	if agg, ok := t.windows[r.Rule]; ok {
		a.What = agg + " = " + money(r.Value)
	} else if amt := gjson.GetBytes(r.Event, t.amountKey); amt.Exists() {
		a.What = "amount " + money(amt.Float())
	}
	return a
}

func (t *alertTail) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

// money formats v with two decimals and thousands separators.
func money(v float64) string {
	s := strconv.FormatFloat(v, 'f', 2, 64)
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	intPart, frac := s[:len(s)-3], s[len(s)-3:]
	out := group(intPart) + frac
	if neg {
		return "-" + out
	}
	return out
}

// num formats n with thousands separators.
func num(n uint64) string { return group(strconv.FormatUint(n, 10)) }

func group(digits string) string {
	if len(digits) <= 3 {
		return digits
	}
	var b []byte
	lead := len(digits) % 3
	if lead > 0 {
		b = append(b, digits[:lead]...)
	}
	for i := lead; i < len(digits); i += 3 {
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = append(b, digits[i:i+3]...)
	}
	return string(b)
}

// perSec formats a rate: 950/s, 12.3k/s, 1.25M/s.
func perSec(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M/s"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k/s"
	default:
		return strconv.FormatFloat(v, 'f', 0, 64) + "/s"
	}
}
