package nats

// Subject templates: what a nats sink publishes to.

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/xgate/xgate/gateway/sink/output"
)

// subjectTemplate is a parsed subject template: literal text and
// placeholders, in order.
type subjectTemplate struct {
	text  string
	parts []subjectPart
}

type subjectPart struct {
	lit string
	ph  byte // 0: lit; else 'k' key, 'v' verdict, 'r' rule
}

func parseSubjectTemplate(s string) (subjectTemplate, error) {
	t := subjectTemplate{text: s}
	if s == "" {
		return t, errors.New("missing: want a subject template, e.g. xgate.events.{key}")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return t, fmt.Errorf("%q has an empty token (leading, trailing or double '.')", s)
		}
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r >= utf8.RuneSelf && notSubjectRune(r) }) {
		return t, fmt.Errorf("%q: a subject is UTF-8 without spaces or control characters", s)
	}
	lit := strings.Builder{}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '{':
			j := strings.IndexByte(s[i:], '}')
			if j < 0 {
				return t, fmt.Errorf("%q: '{' without '}'", s)
			}
			var ph byte
			switch name := s[i+1 : i+j]; name {
			case "key":
				ph = 'k'
			case "verdict":
				ph = 'v'
			case "rule":
				ph = 'r'
			default:
				return t, fmt.Errorf("%q: unknown placeholder {%s}: want {key}, {verdict} or {rule}", s, name)
			}
			if lit.Len() > 0 {
				t.parts = append(t.parts, subjectPart{lit: lit.String()})
				lit.Reset()
			}
			t.parts = append(t.parts, subjectPart{ph: ph})
			i += j + 1
		case c == '}':
			return t, fmt.Errorf("%q: '}' without '{'", s)
		case c == '*' || c == '>':
			return t, fmt.Errorf("%q: a subject to publish to has no wildcards", s)
		case c <= ' ' || c == 0x7f:
			return t, fmt.Errorf("%q: a subject has no spaces or control characters", s)
		default:
			lit.WriteByte(c)
			i++
		}
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, subjectPart{lit: lit.String()})
	}
	if n := t.maxLen(); n > natsMaxSubject {
		return t, fmt.Errorf("%q makes subjects of up to %d bytes (%d per {key} or {rule}): want at most %d", s, n, natsMaxToken, natsMaxSubject)
	}
	return t, nil
}

// maxLen is the longest subject appendSubject can make with t.
func (t subjectTemplate) maxLen() int {
	n := 0
	for _, p := range t.parts {
		switch p.ph {
		case 0:
			n += len(p.lit)
		case 'v':
			n += natsMaxVerdict
		default:
			n += natsMaxToken
		}
	}
	return n
}

// natsMaxVerdict is the longest verdict name (output.Verdicts).
var natsMaxVerdict = func() (n int) {
	for _, v := range output.Verdicts {
		n = max(n, len(v))
	}
	return max(n, 1)
}()

// wildcard is the template with every token that holds a placeholder as
// '*': the subjects it can make.
func (t subjectTemplate) wildcard() string {
	toks := strings.Split(t.text, ".")
	for i, tok := range toks {
		if strings.Contains(tok, "{") {
			toks[i] = "*"
		}
	}
	return strings.Join(toks, ".")
}

// appendSubject appends the subject of one record: at most t.maxLen()
// bytes, and nothing allocated when b has room for them.
func (t *subjectTemplate) appendSubject(b, key, verdict, rule []byte) []byte {
	for _, p := range t.parts {
		switch p.ph {
		case 0:
			b = append(b, p.lit...)
		case 'k':
			b = appendToken(b, key[:min(len(key), natsMaxToken)])
		case 'v':
			b = appendToken(b, verdict[:min(len(verdict), natsMaxVerdict)])
		case 'r':
			b = appendToken(b, rule[:min(len(rule), natsMaxToken)])
		}
	}
	return b
}

// appendToken appends v with what a subject token cannot hold replaced by
// '_' ("_" for an empty v): '.', '*', '>', a blank or control character
// (a rune), a byte that is not UTF-8 (each, so a rune cut by the length
// bound too). It appends at most max(1, len(v)) bytes.
func appendToken(b, v []byte) []byte {
	if len(v) == 0 {
		return append(b, '_')
	}
	for i := 0; i < len(v); {
		c := v[i]
		if c < utf8.RuneSelf {
			if c <= ' ' || c == 0x7f || c == '.' || c == '*' || c == '>' {
				c = '_'
			}
			b = append(b, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(v[i:])
		if r == utf8.RuneError && n == 1 || notSubjectRune(r) {
			b = append(b, '_')
		} else {
			b = append(b, v[i:i+n]...)
		}
		i += n
	}
	return b
}

// notSubjectRune reports a non-ASCII rune a subject should not hold: a
// Unicode space or control character (NEL, NBSP, U+2028, …), which some
// clients and tools split or print on.
func notSubjectRune(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// validSubjectFilter checks a stream subject (wildcards allowed).
func validSubjectFilter(s string) error {
	if s == "" {
		return errors.New("an empty subject")
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return fmt.Errorf("%q has an empty token", s)
		case tok == ">" && i != len(toks)-1:
			return fmt.Errorf("%q: '>' must be the last token", s)
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*>"):
			return fmt.Errorf("%q: wildcards are whole tokens", s)
		case !utf8.ValidString(tok) || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f || notSubjectRune(r) }):
			return fmt.Errorf("%q: a subject is UTF-8 without spaces or control characters", s)
		}
	}
	return nil
}

// subjectsCover reports whether every subject matching the filter want
// (literals and '*' tokens) matches one of the filters have.
func subjectsCover(have []string, want string) bool {
	w := strings.Split(want, ".")
	for _, h := range have {
		ht := strings.Split(h, ".")
		ok := true
		for i := 0; ok; i++ {
			switch {
			case i < len(ht) && ht[i] == ">":
				ok = i < len(w)
				i = len(w) // covers the rest
			case i == len(ht) || i == len(w):
				ok = i == len(ht) && i == len(w)
			case ht[i] == "*" || ht[i] == w[i]:
				continue
			default:
				ok = false
			}
			if i >= len(w) {
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
