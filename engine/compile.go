package engine

import (
	"net/netip"
	"sort"
	"strings"

	"github.com/xgate/xgate/engine/lists"
)

// evalCtx is what a compiled condition reads: the current event's field
// values and, in window rules, the window's aggregate. One lives in each
// Worker and is reused for every event.
type evalCtx struct {
	vals  []Value
	value float64
	src   netip.Addr // the datagram's source address; zero when unknown
}

// pred is a compiled condition. It must not allocate or retain c.
type pred func(c *evalCtx) bool

// operand is a compiled leaf: a literal, a field slot, the aggregate or
// a map list's value for a field.
type operand struct {
	kind opKind
	lit  Value
	slot int
	list *lists.List // opLookup
}

type opKind uint8

const (
	opLit opKind = iota
	opField
	opAgg
	opLookup
)

func (o *operand) get(c *evalCtx) Value {
	switch o.kind {
	case opField:
		return c.vals[o.slot]
	case opAgg:
		return Value{Kind: KindNumber, Num: c.value}
	case opLookup:
		if v := &c.vals[o.slot]; v.Kind == KindString || v.Kind == KindNumber {
			return o.list.Load().Lookup(v.Str)
		}
		return Value{}
	}
	return o.lit
}

type compiler struct {
	fs     *fieldSet
	lists  map[string]*lists.List
	rule   string
	src    string
	window bool // `value` names the window aggregate
}

func (cp *compiler) errAt(pos int, format string, args ...any) error {
	lx := lexer{src: cp.src, rule: cp.rule}
	return lx.errAt(pos, format, args...)
}

// compileCondition parses and compiles src. fs gains a slot for every path
// the condition reads.
func compileCondition(fs *fieldSet, lists map[string]*lists.List, rule, src string, window bool) (pred, error) {
	n, err := parseExpr(rule, src)
	if err != nil {
		return nil, err
	}
	cp := &compiler{fs: fs, lists: lists, rule: rule, src: src, window: window}
	return cp.compile(n)
}

// list resolves a list name of a condition: it must exist and be of kind k.
func (cp *compiler) list(name string, pos int, k lists.ListKind) (*lists.List, error) {
	l := cp.lists[name]
	if l == nil {
		names := make([]string, 0, len(cp.lists))
		for n := range cp.lists {
			names = append(names, n)
		}
		sort.Strings(names)
		known := "no lists are configured"
		if len(names) > 0 {
			known = "lists: " + strings.Join(names, ", ")
		}
		return nil, cp.errAt(pos, "unknown list %q (%s)", name, known)
	}
	if l.Kind() != k {
		return nil, cp.errAt(pos, "list %q is a %s list, not a %s list: use %s(%q)", name, l.Kind(), k, l.Kind().Func(), name)
	}
	return l, nil
}

func (cp *compiler) operand(n node) (operand, bool, error) {
	switch n := n.(type) {
	case *litNode:
		return operand{kind: opLit, lit: n.v}, true, nil
	case *pathNode:
		if cp.window && n.path == "value" {
			return operand{kind: opAgg}, true, nil
		}
		slot, err := cp.fs.add(n.path)
		if err != nil {
			return operand{}, false, cp.errAt(n.pos, "%v", err)
		}
		return operand{kind: opField, slot: slot}, true, nil
	case *lookupNode:
		l, err := cp.list(n.name, n.namePos, lists.ListMap)
		if err != nil {
			return operand{}, false, err
		}
		key := n.key.(*pathNode) // the parser allows nothing else
		slot, err := cp.fs.add(key.path)
		if err != nil {
			return operand{}, false, cp.errAt(key.pos, "%v", err)
		}
		return operand{kind: opLookup, slot: slot, list: l}, true, nil
	}
	return operand{}, false, nil
}

func (cp *compiler) compile(n node) (pred, error) {
	switch n := n.(type) {
	case *notNode:
		x, err := cp.compile(n.x)
		if err != nil {
			return nil, err
		}
		return func(c *evalCtx) bool { return !x(c) }, nil
	case *binNode:
		switch n.op {
		case "&&", "||":
			l, err := cp.compile(n.l)
			if err != nil {
				return nil, err
			}
			r, err := cp.compile(n.r)
			if err != nil {
				return nil, err
			}
			if n.op == "&&" {
				return func(c *evalCtx) bool { return l(c) && r(c) }, nil
			}
			return func(c *evalCtx) bool { return l(c) || r(c) }, nil
		}
		a, okA, err := cp.operand(n.l)
		if err != nil {
			return nil, err
		}
		b, okB, err := cp.operand(n.r)
		if err != nil {
			return nil, err
		}
		if !okA {
			return nil, cp.errAt(n.l.position(), "left of %s must be a field or a literal, not a condition", n.op)
		}
		if !okB {
			return nil, cp.errAt(n.r.position(), "right of %s must be a field or a literal, not a condition", n.op)
		}
		if n.op == "startsWith" || n.op == "contains" {
			return cp.compileStrOp(n, a, b)
		}
		return cp.compileCmp(n, a, b)
	case *inNode:
		return cp.compileIn(n)
	case *listInNode:
		return cp.compileListIn(n)
	case *lookupNode:
		return nil, cp.errAt(n.pos, "lookup(…) is a value: compare it, e.g. lookup(%q, …) == \"high\"", n.name)
	case *litNode:
		if n.v.Kind != KindBool {
			return nil, cp.errAt(n.pos, "a %s literal is not a condition", n.v.Kind)
		}
		v := n.v.Bool
		return func(*evalCtx) bool { return v }, nil
	case *pathNode:
		o, _, err := cp.operand(n)
		if err != nil {
			return nil, err
		}
		if o.kind == opAgg {
			return nil, cp.errAt(n.pos, "value is a number: compare it, e.g. value > 100")
		}
		slot := o.slot
		return func(c *evalCtx) bool {
			v := &c.vals[slot]
			return v.Kind == KindBool && v.Bool
		}, nil
	}
	return nil, cp.errAt(n.position(), "cannot compile this condition")
}

var flipped = map[string]string{"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

func (cp *compiler) compileCmp(n *binNode, a, b operand) (pred, error) {
	op := n.op
	if a.kind == opLit && b.kind != opLit {
		a, b, op = b, a, flipped[op]
	}
	ordering := op != "==" && op != "!="
	for _, o := range []operand{a, b} {
		if o.kind == opLit && ordering && o.lit.Kind != KindNumber && o.lit.Kind != KindString {
			return nil, cp.errAt(n.pos, "%s cannot order a %s", op, o.lit.Kind)
		}
	}
	if b.kind != opLit {
		return genericCmp(op, a, b), nil
	}
	lit := b.lit
	switch a.kind {
	case opAgg:
		if lit.Kind != KindNumber {
			return nil, cp.errAt(n.pos, "value is a number; compare it with a number")
		}
		return aggCmp(op, lit.Num), nil
	case opLookup:
		return genericCmp(op, a, b), nil
	case opField:
		switch lit.Kind {
		case KindNumber:
			return numFieldCmp(op, a.slot, lit.Num), nil
		case KindString:
			return strFieldCmp(op, a.slot, lit.Str), nil
		}
		return genericCmp(op, a, b), nil
	}
	// Two literals: fold.
	r := compareValues(op, a.lit, b.lit)
	return func(*evalCtx) bool { return r }, nil
}

func aggCmp(op string, n float64) pred {
	switch op {
	case "==":
		return func(c *evalCtx) bool { return c.value == n }
	case "!=":
		return func(c *evalCtx) bool { return c.value != n }
	case "<":
		return func(c *evalCtx) bool { return c.value < n }
	case "<=":
		return func(c *evalCtx) bool { return c.value <= n }
	case ">":
		return func(c *evalCtx) bool { return c.value > n }
	}
	return func(c *evalCtx) bool { return c.value >= n }
}

func numFieldCmp(op string, slot int, n float64) pred {
	switch op {
	case "==":
		return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind == KindNumber && v.Num == n }
	case "!=":
		return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind != KindNumber || v.Num != n }
	case "<":
		return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind == KindNumber && v.Num < n }
	case "<=":
		return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind == KindNumber && v.Num <= n }
	case ">":
		return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind == KindNumber && v.Num > n }
	}
	return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind == KindNumber && v.Num >= n }
}

func strFieldCmp(op string, slot int, s string) pred {
	switch op {
	case "==":
		return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind == KindString && v.Str == s }
	case "!=":
		return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind != KindString || v.Str != s }
	case "<":
		return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind == KindString && v.Str < s }
	case "<=":
		return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind == KindString && v.Str <= s }
	case ">":
		return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind == KindString && v.Str > s }
	}
	return func(c *evalCtx) bool { v := &c.vals[slot]; return v.Kind == KindString && v.Str >= s }
}

func genericCmp(op string, a, b operand) pred {
	return func(c *evalCtx) bool { return compareValues(op, a.get(c), b.get(c)) }
}

// compareValues is the reference semantics every specialised closure
// agrees with (see TestExprSpecialisedAgreesWithGeneric).
func compareValues(op string, x, y Value) bool {
	same := x.Kind == y.Kind && x.Kind != KindMissing
	if !same {
		return op == "!="
	}
	switch x.Kind {
	case KindNumber:
		switch op {
		case "==":
			return x.Num == y.Num
		case "!=":
			return x.Num != y.Num
		case "<":
			return x.Num < y.Num
		case "<=":
			return x.Num <= y.Num
		case ">":
			return x.Num > y.Num
		case ">=":
			return x.Num >= y.Num
		}
	case KindString, KindObject, KindArray:
		switch op {
		case "==":
			return x.Str == y.Str
		case "!=":
			return x.Str != y.Str
		case "<":
			return x.Str < y.Str
		case "<=":
			return x.Str <= y.Str
		case ">":
			return x.Str > y.Str
		case ">=":
			return x.Str >= y.Str
		}
	case KindBool:
		switch op {
		case "==":
			return x.Bool == y.Bool
		case "!=":
			return x.Bool != y.Bool
		}
	case KindNull:
		switch op {
		case "==":
			return true
		case "!=":
			return false
		}
	}
	return false
}

func (cp *compiler) compileStrOp(n *binNode, a, b operand) (pred, error) {
	if b.kind == opLit && b.lit.Kind != KindString {
		return nil, cp.errAt(n.r.position(), "%s needs a string, not a %s", n.op, b.lit.Kind)
	}
	if a.kind == opLit && a.lit.Kind != KindString {
		return nil, cp.errAt(n.l.position(), "%s needs a string, not a %s", n.op, a.lit.Kind)
	}
	if a.kind == opAgg || b.kind == opAgg {
		return nil, cp.errAt(n.pos, "value is a number; %s needs strings", n.op)
	}
	has := strings.HasPrefix
	if n.op == "contains" {
		has = strings.Contains
	}
	if a.kind == opField && b.kind == opLit {
		slot, s := a.slot, b.lit.Str
		if n.op == "contains" {
			return func(c *evalCtx) bool {
				v := &c.vals[slot]
				return v.Kind == KindString && strings.Contains(v.Str, s)
			}, nil
		}
		return func(c *evalCtx) bool {
			v := &c.vals[slot]
			return v.Kind == KindString && strings.HasPrefix(v.Str, s)
		}, nil
	}
	return func(c *evalCtx) bool {
		x, y := a.get(c), b.get(c)
		return x.Kind == KindString && y.Kind == KindString && has(x.Str, y.Str)
	}, nil
}

func (cp *compiler) compileIn(n *inNode) (pred, error) {
	a, ok, err := cp.operand(n.x)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, cp.errAt(n.x.position(), "left of in must be a field or a literal")
	}
	var strs []string
	var nums []float64
	var others []Value
	for _, l := range n.list {
		switch l.v.Kind {
		case KindString:
			strs = append(strs, l.v.Str)
		case KindNumber:
			nums = append(nums, l.v.Num)
		default:
			others = append(others, l.v)
		}
	}
	var set map[string]struct{}
	if len(strs) > 8 {
		set = make(map[string]struct{}, len(strs))
		for _, s := range strs {
			set[s] = struct{}{}
		}
	}
	return func(c *evalCtx) bool {
		v := a.get(c)
		switch v.Kind {
		case KindString:
			if set != nil {
				_, ok := set[v.Str]
				return ok
			}
			for _, s := range strs {
				if v.Str == s {
					return true
				}
			}
		case KindNumber:
			for _, x := range nums {
				if v.Num == x {
					return true
				}
			}
		default:
			for _, o := range others {
				if compareValues("==", v, o) {
					return true
				}
			}
		}
		return false
	}, nil
}

// compileListIn compiles `x in cidrs("name")` and `x in set("name")`.
func (cp *compiler) compileListIn(n *listInNode) (pred, error) {
	kind := lists.ListSet
	if n.fn == "cidrs" {
		kind = lists.ListCIDR
	}
	l, err := cp.list(n.name, n.namePos, kind)
	if err != nil {
		return nil, err
	}
	if kind == lists.ListCIDR {
		if p, ok := n.x.(*pathNode); ok && p.path == SrcKey {
			// The datagram's source; without one, the schema's src field.
			slot := cp.fs.roleSlot[RoleSrc]
			return func(c *evalCtx) bool {
				if c.src.IsValid() {
					return l.Load().ContainsAddr(c.src)
				}
				return slot >= 0 && addrIn(l, &c.vals[slot])
			}, nil
		}
	}
	a, ok, err := cp.operand(n.x)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, cp.errAt(n.x.position(), "left of in must be a field or a literal")
	}
	if a.kind == opAgg {
		return nil, cp.errAt(n.pos, "value is a number; it is in no list")
	}
	if kind == lists.ListCIDR {
		return func(c *evalCtx) bool {
			v := a.get(c)
			return addrIn(l, &v)
		}, nil
	}
	return func(c *evalCtx) bool {
		v := a.get(c)
		return (v.Kind == KindString || v.Kind == KindNumber) && l.Load().ContainsKey(v.Str)
	}, nil
}

// addrIn reports whether v is a string holding an address in one of l's
// networks.
func addrIn(l *lists.List, v *Value) bool {
	if v.Kind != KindString {
		return false
	}
	a, ok := parseAddr(v.Str)
	return ok && l.Load().ContainsAddr(a)
}

// parseAddr parses an IPv4 address in dotted decimal without allocating,
// and anything else that looks like an IPv6 address with netip.ParseAddr
// (whose errors allocate: text of other shapes is refused before it).
func parseAddr(s string) (netip.Addr, bool) {
	if len(s) == 0 || len(s) > 64 {
		return netip.Addr{}, false
	}
	if strings.IndexByte(s, ':') < 0 {
		var b [4]byte
		part, digits := 0, 0
		v := 0
		for i := 0; i < len(s); i++ {
			c := s[i]
			switch {
			case c >= '0' && c <= '9':
				if digits > 0 && v == 0 { // no leading zeros, as netip
					return netip.Addr{}, false
				}
				v = v*10 + int(c-'0')
				digits++
				if v > 255 {
					return netip.Addr{}, false
				}
			case c == '.' && digits > 0 && part < 3:
				b[part] = byte(v)
				part, digits, v = part+1, 0, 0
			default:
				return netip.Addr{}, false
			}
		}
		if part != 3 || digits == 0 {
			return netip.Addr{}, false
		}
		b[3] = byte(v)
		return netip.AddrFrom4(b), true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.' || c == '%') {
			return netip.Addr{}, false
		}
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil
}
