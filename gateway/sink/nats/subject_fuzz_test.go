package nats

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/xgate/xgate/gateway/sink/output"
)

// subjectMatches is NATS subject matching, written out the plain way: the
// filter's '*' takes one token, a last '>' one or more.
func subjectMatches(filter, subj string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subj, ".")
	for i, ft := range f {
		if ft == ">" && i == len(f)-1 {
			return len(s) > i
		}
		if i >= len(s) || ft != "*" && ft != s[i] {
			return false
		}
	}
	return len(f) == len(s)
}

// checkSubject fails unless subj is a subject a client may publish to: no
// empty token, no wildcard, no blank or control character, UTF-8.
func checkSubject(t *testing.T, subj string) {
	t.Helper()
	if !utf8.ValidString(subj) {
		t.Fatalf("subject %q is not UTF-8", subj)
	}
	for _, tok := range strings.Split(subj, ".") {
		if tok == "" {
			t.Fatalf("subject %q has an empty token", subj)
		}
	}
	if i := strings.IndexFunc(subj, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '*' || r == '>' || notSubjectRune(r) }); i >= 0 {
		t.Fatalf("subject %q holds %q", subj, subj[i:])
	}
}

// FuzzSubjectTemplate: a template that parses makes, for any key, verdict
// code and rule, a subject a client may publish to, no longer than the
// template's bound, covered by the template's wildcard (which is a valid
// stream subject itself), appended without allocating when the buffer
// has room; and subjectsCover agrees with plain NATS matching for any
// valid stream subject.
func FuzzSubjectTemplate(f *testing.F) {
	for _, c := range []struct{ tmpl, key, rule, filter string }{
		{"xgate.events.{key}", "u-1", "", "xgate.>"},
		{"a.x{key}y.{verdict}.{rule}", "k.1", "big-payment", "a.*.*.*"},
		{"{key}", "", "", "*"},
		{"{key}.{key}", "a b\tc\r\n", "", ">"},
		{"a.{rule}", "", "r.*.>", "a.*.b"},
		{"x.{key}", "\xff\xfe\x80", "", "x.*"},
		{"x.{key}", strings.Repeat("é", 200), "", "x.>"},
		{"x.{key}", "\u00a0\u2028\u0085\x7f", "", "x"},
		{"a..b", "k", "", "a..b"},
		{"a.{nope}", "k", "", "a.>.b"},
		{"a.*", "k", "", "a.b*"},
		{"a\u00a0b.{key}", "k", "", "a\u00a0b.*"},
		{strings.Repeat("{key}", 9), "k", "", ">"},
		{"x.{rule}", "", strings.Repeat("r", 300), "x.*"},
		{"{verdict}}", "", "", "x.\x00"},
		{"{{key}", "", "", "{key}"},
	} {
		f.Add(c.tmpl, []byte(c.key), uint8(2), []byte(c.rule), c.filter)
	}
	f.Add("v.{verdict}", []byte("k"), uint8(output.VerdictReject), []byte{}, "v.reject")
	f.Add("v.{verdict}", []byte("k"), uint8(200), []byte{}, "v._")
	f.Fuzz(func(t *testing.T, tmplText string, key []byte, code uint8, rule []byte, filter string) {
		tm, err := parseSubjectTemplate(tmplText)
		if err != nil {
			if verr := validSubjectFilter(filter); verr == nil {
				// subjectsCover against a literal subject is matching.
				if got, want := subjectsCover([]string{filter}, "a.b"), subjectMatches(filter, "a.b"); got != want {
					t.Fatalf("subjectsCover([%q], a.b) = %v, matching says %v", filter, got, want)
				}
			}
			return
		}
		w := tm.wildcard()
		if err := validSubjectFilter(w); err != nil {
			t.Fatalf("template %q: its wildcard %q is no valid stream subject: %v", tmplText, w, err)
		}
		if !subjectsCover([]string{w}, w) {
			t.Fatalf("template %q: wildcard %q does not cover itself", tmplText, w)
		}
		buf := make([]byte, 0, tm.maxLen())
		b := tm.appendSubject(buf, key, output.Verdicts[code], rule)
		if len(b) > 0 && &b[0] != &buf[:1][0] {
			t.Fatalf("template %q: appendSubject grew a buffer of %d bytes to %d", tmplText, cap(buf), len(b))
		}
		if len(b) > tm.maxLen() || tm.maxLen() > natsMaxSubject {
			t.Fatalf("template %q: subject of %d bytes, bound %d, limit %d", tmplText, len(b), tm.maxLen(), natsMaxSubject)
		}
		subj := string(b)
		checkSubject(t, subj)
		if !subjectMatches(w, subj) || !subjectsCover([]string{w}, subj) {
			t.Fatalf("template %q: subject %q is not covered by its wildcard %q", tmplText, subj, w)
		}
		if err := validSubjectFilter(filter); err != nil {
			return
		}
		if got, want := subjectsCover([]string{filter}, subj), subjectMatches(filter, subj); got != want {
			t.Fatalf("subjectsCover([%q], %q) = %v, matching says %v", filter, subj, got, want)
		}
		if subjectsCover([]string{filter}, w) && !subjectMatches(filter, subj) {
			t.Fatalf("%q said to take every subject of %q (%q), but not %q", filter, tmplText, w, subj)
		}
	})
}

// TestAppendSubjectAllocs: the writer builds every subject in its scratch
// buffer without allocating.
func TestAppendSubjectAllocs(t *testing.T) {
	tm, err := parseSubjectTemplate("xgate.{verdict}.{rule}.x{key}y")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, tm.maxLen())
	key, rule := []byte("u-1.\xff é\u2028"), []byte("big payment")
	if a := testing.AllocsPerRun(100, func() {
		buf = tm.appendSubject(buf[:0], key, output.Verdicts[2], rule)
	}); a != 0 {
		t.Fatalf("%v allocs per subject", a)
	}
	if got := string(buf); got != "xgate.alert.big_payment.xu-1___é_y" {
		t.Fatalf("subject %q", got)
	}
}

// TestSubjectTemplateRefuses: templates and stream subjects that would
// make subjects a server or client reads differently are errors.
func TestSubjectTemplateRefuses(t *testing.T) {
	for _, s := range []string{"a\u00a0b.{key}", "a.\xff", "a.b\u2028", strings.Repeat("x.{key}.", 8) + "x"} {
		if _, err := parseSubjectTemplate(s); err == nil {
			t.Errorf("template %q accepted", s)
		}
	}
	for _, s := range []string{"a.\x00", "a.b\u00a0", "a.\xff", "a.\vb"} {
		if err := validSubjectFilter(s); err == nil {
			t.Errorf("stream subject %q accepted", s)
		}
	}
}
