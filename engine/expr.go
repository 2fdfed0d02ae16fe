package engine

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The condition language of `when:`:
//
//	expr    = or
//	or      = and { "||" and }
//	and     = unary { "&&" unary }
//	unary   = "!" unary | compare
//	compare = operand [ ("=="|"!="|"<"|"<="|">"|">=") operand
//	                  | "in" "[" literal { "," literal } "]"
//	                  | "in" ("cidrs"|"set") "(" string ")"
//	                  | ("startsWith"|"contains") operand ]
//	operand = "(" expr ")" | literal | path
//	        | ("startsWith"|"contains") "(" operand "," operand ")"
//	        | "lookup" "(" string "," path ")"
//	literal = string | number | true | false | null
//
// Strings are "double" or 'single' quoted with \-escapes. Paths use gjson
// syntax without wildcards ("amount", "meta.country"). In a window rule the
// name `value` is the window's aggregate.
//
// Lists (see engine/lists) are named by a string: `ip in cidrs("partners")`
// is true when the field ip holds an address in one of the list's
// networks; on the left of cidrs, the name src_ip is the datagram's source
// address (the schema's src field when the gateway knows none).
// `user_id in set("vip")` tests a key (a string's text or a number's
// literal); `lookup("risk_tier", user_id)` is the map list's value for the
// key (missing when the key is absent), compared like a field.
//
// Semantics: numbers compare as float64, strings byte-wise; a comparison
// between different JSON types, or with a missing field, is false for
// == < <= > >= and true for !=. A bare operand is true only if it is the
// boolean true. Everything is compiled once into closures; evaluating them
// does not allocate.

// ExprError is a parse or compile error in a condition. It names the rule
// and the column and prints the expression with a caret under the spot.
type ExprError struct {
	Rule string
	Expr string
	Col  int // 1-based, in characters
	Msg  string
}

func (e *ExprError) Error() string {
	pad := strings.Repeat(" ", e.Col-1)
	return fmt.Sprintf("rule %q: column %d: %s\n    %s\n    %s^", e.Rule, e.Col, e.Msg, e.Expr, pad)
}

type tokKind uint8

const (
	tEOF tokKind = iota
	tIdent
	tString
	tNumber
	tOp // == != < <= > >= && || ! ( ) [ ] ,
)

type token struct {
	kind tokKind
	text string  // identifier, operator, or unquoted string
	num  float64 // tNumber
	pos  int     // byte offset
}

type lexer struct {
	src  string
	pos  int
	rule string
}

func (lx *lexer) errAt(pos int, format string, args ...any) error {
	return &ExprError{Rule: lx.rule, Expr: lx.src, Col: utf8.RuneCountInString(lx.src[:pos]) + 1, Msg: fmt.Sprintf(format, args...)}
}

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isIdentPart(c byte) bool  { return isIdentStart(c) || c >= '0' && c <= '9' || c == '.' || c == '-' }

func (lx *lexer) next() (token, error) {
	s := lx.src
	for lx.pos < len(s) && (s[lx.pos] == ' ' || s[lx.pos] == '\t' || s[lx.pos] == '\n' || s[lx.pos] == '\r') {
		lx.pos++
	}
	start := lx.pos
	if start >= len(s) {
		return token{kind: tEOF, pos: start}, nil
	}
	c := s[start]
	switch {
	case isIdentStart(c):
		j := start + 1
		for j < len(s) && isIdentPart(s[j]) {
			j++
		}
		lx.pos = j
		return token{kind: tIdent, text: s[start:j], pos: start}, nil
	case c >= '0' && c <= '9' || c == '-' && start+1 < len(s) && s[start+1] >= '0' && s[start+1] <= '9' || c == '.':
		j := start + 1
		for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == 'e' || s[j] == 'E' ||
			(s[j] == '+' || s[j] == '-') && (s[j-1] == 'e' || s[j-1] == 'E')) {
			j++
		}
		f, err := strconv.ParseFloat(s[start:j], 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return token{}, lx.errAt(start, "bad number %q", s[start:j])
		}
		lx.pos = j
		return token{kind: tNumber, num: f, text: s[start:j], pos: start}, nil
	case c == '"' || c == '\'':
		var sb strings.Builder
		j := start + 1
		for {
			if j >= len(s) {
				return token{}, lx.errAt(start, "unterminated string")
			}
			ch := s[j]
			if ch == c {
				lx.pos = j + 1
				return token{kind: tString, text: sb.String(), pos: start}, nil
			}
			if ch == '\\' {
				if j+1 >= len(s) {
					return token{}, lx.errAt(j, "unterminated escape")
				}
				switch e := s[j+1]; e {
				case 'n':
					sb.WriteByte('\n')
				case 't':
					sb.WriteByte('\t')
				case 'r':
					sb.WriteByte('\r')
				case '\\', '"', '\'', '/':
					sb.WriteByte(e)
				default:
					return token{}, lx.errAt(j, "unknown escape \\%c", e)
				}
				j += 2
				continue
			}
			sb.WriteByte(ch)
			j++
		}
	}
	two := ""
	if start+2 <= len(s) {
		two = s[start : start+2]
	}
	switch two {
	case "==", "!=", "<=", ">=", "&&", "||":
		lx.pos = start + 2
		return token{kind: tOp, text: two, pos: start}, nil
	}
	switch c {
	case '<', '>', '!', '(', ')', '[', ']', ',':
		lx.pos = start + 1
		return token{kind: tOp, text: s[start : start+1], pos: start}, nil
	case '=':
		return token{}, lx.errAt(start, "use == to compare")
	case '&':
		return token{}, lx.errAt(start, "use && for and")
	case '|':
		return token{}, lx.errAt(start, "use || for or")
	}
	r, _ := utf8.DecodeRuneInString(s[start:])
	return token{}, lx.errAt(start, "unexpected character %q", r)
}

// AST

type node interface{ position() int }

type litNode struct {
	v   Value
	pos int
}
type pathNode struct {
	path string
	pos  int
}
type notNode struct {
	x   node
	pos int
}
type binNode struct {
	op   string // == != < <= > >= && || startsWith contains
	l, r node
	pos  int
}
type inNode struct {
	x    node
	list []litNode
	pos  int
}

// listInNode is `x in cidrs("name")` or `x in set("name")`.
type listInNode struct {
	x       node
	fn      string // cidrs | set
	name    string
	namePos int
	pos     int
}

// lookupNode is `lookup("name", key)`.
type lookupNode struct {
	name    string
	namePos int
	key     node
	pos     int
}

func (n *listInNode) position() int { return n.pos }
func (n *lookupNode) position() int { return n.pos }

func (n *litNode) position() int  { return n.pos }
func (n *pathNode) position() int { return n.pos }
func (n *notNode) position() int  { return n.pos }
func (n *binNode) position() int  { return n.pos }
func (n *inNode) position() int   { return n.pos }

type parser struct {
	lx  lexer
	tok token
}

func parseExpr(rule, src string) (node, error) {
	p := &parser{lx: lexer{src: src, rule: rule}}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind == tEOF {
		return nil, p.lx.errAt(0, "empty condition")
	}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.lx.errAt(p.tok.pos, "unexpected %s after the end of the condition", p.describe())
	}
	return n, nil
}

func (p *parser) advance() error {
	t, err := p.lx.next()
	p.tok = t
	return err
}

func (p *parser) describe() string {
	switch p.tok.kind {
	case tEOF:
		return "end of condition"
	case tString:
		return strconv.Quote(p.tok.text)
	}
	return fmt.Sprintf("%q", p.tok.text)
}

func (p *parser) isOp(op string) bool { return p.tok.kind == tOp && p.tok.text == op }

func (p *parser) expectOp(op string) error {
	if !p.isOp(op) {
		return p.lx.errAt(p.tok.pos, "expected %q, found %s", op, p.describe())
	}
	return p.advance()
}

func (p *parser) or() (node, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.isOp("||") {
		pos := p.tok.pos
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = &binNode{op: "||", l: l, r: r, pos: pos}
	}
	return l, nil
}

func (p *parser) and() (node, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.isOp("&&") {
		pos := p.tok.pos
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		l = &binNode{op: "&&", l: l, r: r, pos: pos}
	}
	return l, nil
}

func (p *parser) unary() (node, error) {
	if p.isOp("!") {
		pos := p.tok.pos
		if err := p.advance(); err != nil {
			return nil, err
		}
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &notNode{x: x, pos: pos}, nil
	}
	return p.compare()
}

func (p *parser) compare() (node, error) {
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	pos := p.tok.pos
	switch {
	case p.tok.kind == tOp && (p.tok.text == "==" || p.tok.text == "!=" || p.tok.text == "<" ||
		p.tok.text == "<=" || p.tok.text == ">" || p.tok.text == ">="):
		op := p.tok.text
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.operand()
		if err != nil {
			return nil, err
		}
		return &binNode{op: op, l: l, r: r, pos: pos}, nil
	case p.tok.kind == tIdent && (p.tok.text == "startsWith" || p.tok.text == "contains"):
		op := p.tok.text
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.operand()
		if err != nil {
			return nil, err
		}
		return &binNode{op: op, l: l, r: r, pos: pos}, nil
	case p.tok.kind == tIdent && p.tok.text == "in":
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind == tIdent && (p.tok.text == "cidrs" || p.tok.text == "set") {
			fn := p.tok.text
			if err := p.advance(); err != nil {
				return nil, err
			}
			name, namePos, err := p.listName(fn)
			if err != nil {
				return nil, err
			}
			return &listInNode{x: l, fn: fn, name: name, namePos: namePos, pos: pos}, p.expectOp(")")
		}
		if err := p.expectOp("["); err != nil {
			return nil, err
		}
		in := &inNode{x: l, pos: pos}
		for {
			lit, ok := p.literal()
			if !ok {
				return nil, p.lx.errAt(p.tok.pos, "expected a literal in the list, found %s", p.describe())
			}
			in.list = append(in.list, lit)
			if err := p.advance(); err != nil {
				return nil, err
			}
			if p.isOp(",") {
				if err := p.advance(); err != nil {
					return nil, err
				}
				continue
			}
			if err := p.expectOp("]"); err != nil {
				return nil, err
			}
			return in, nil
		}
	}
	return l, nil
}

// literal converts the current token into a literal without consuming it.
func (p *parser) literal() (litNode, bool) {
	t := p.tok
	switch t.kind {
	case tString:
		return litNode{v: Value{Kind: KindString, Str: t.text}, pos: t.pos}, true
	case tNumber:
		return litNode{v: Value{Kind: KindNumber, Num: t.num, Str: t.text}, pos: t.pos}, true
	case tIdent:
		switch t.text {
		case "true":
			return litNode{v: Value{Kind: KindBool, Bool: true}, pos: t.pos}, true
		case "false":
			return litNode{v: Value{Kind: KindBool}, pos: t.pos}, true
		case "null":
			return litNode{v: Value{Kind: KindNull}, pos: t.pos}, true
		}
	}
	return litNode{}, false
}

func (p *parser) operand() (node, error) {
	if p.isOp("(") {
		if err := p.advance(); err != nil {
			return nil, err
		}
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		return n, p.expectOp(")")
	}
	if lit, ok := p.literal(); ok {
		return &lit, p.advance()
	}
	if p.tok.kind == tIdent {
		t := p.tok
		switch t.text {
		case "in":
			return nil, p.lx.errAt(t.pos, "expected operand, found %q", t.text)
		case "lookup":
			if !p.callFollows() {
				break
			}
			if err := p.advance(); err != nil {
				return nil, err
			}
			name, namePos, err := p.listName("lookup")
			if err != nil {
				return nil, err
			}
			if err := p.expectOp(","); err != nil {
				return nil, err
			}
			if p.tok.kind != tIdent {
				return nil, p.lx.errAt(p.tok.pos, "lookup's key is a field, e.g. lookup(%q, user_id); found %s", name, p.describe())
			}
			key, err := p.operand()
			if err != nil {
				return nil, err
			}
			if _, ok := key.(*pathNode); !ok {
				return nil, p.lx.errAt(key.position(), "lookup's key is a field, e.g. lookup(%q, user_id)", name)
			}
			return &lookupNode{name: name, namePos: namePos, key: key, pos: t.pos}, p.expectOp(")")
		case "cidrs", "set":
			if p.callFollows() {
				return nil, p.lx.errAt(t.pos, "%s(…) goes after in: ip in %s(\"name\")", t.text, t.text)
			}
		case "startsWith", "contains":
			if err := p.advance(); err != nil {
				return nil, err
			}
			if !p.isOp("(") {
				return nil, p.lx.errAt(p.tok.pos, "%s needs (text, prefix) or infix form: x %s \"…\"", t.text, t.text)
			}
			if err := p.advance(); err != nil {
				return nil, err
			}
			l, err := p.operand()
			if err != nil {
				return nil, err
			}
			if err := p.expectOp(","); err != nil {
				return nil, err
			}
			r, err := p.operand()
			if err != nil {
				return nil, err
			}
			return &binNode{op: t.text, l: l, r: r, pos: t.pos}, p.expectOp(")")
		}
		if err := ValidPath(t.text); err != nil {
			return nil, p.lx.errAt(t.pos, "%v", err)
		}
		return &pathNode{path: t.text, pos: t.pos}, p.advance()
	}
	return nil, p.lx.errAt(p.tok.pos, "expected operand, found %s", p.describe())
}

// callFollows reports whether the token after the current one is "(".
func (p *parser) callFollows() bool {
	s, i := p.lx.src, p.lx.pos
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i < len(s) && s[i] == '('
}

// listName reads `( "name"` of a list function and leaves the parser on
// the token after the name.
func (p *parser) listName(fn string) (string, int, error) {
	if err := p.expectOp("("); err != nil {
		return "", 0, err
	}
	if p.tok.kind != tString {
		return "", 0, p.lx.errAt(p.tok.pos, "%s needs a list name in quotes, e.g. %s(\"partners\"); found %s", fn, fn, p.describe())
	}
	name, pos := p.tok.text, p.tok.pos
	return name, pos, p.advance()
}
