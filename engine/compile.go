package engine

import (
	"strings"
)

// evalCtx is what a compiled condition reads: the current event's field
// values and, in window rules, the window's aggregate. One lives in each
// Worker and is reused for every event.
type evalCtx struct {
	vals  []Value
	value float64
}

// pred is a compiled condition. It must not allocate or retain c.
type pred func(c *evalCtx) bool

// operand is a compiled leaf: a literal, a field slot or the aggregate.
type operand struct {
	kind opKind
	lit  Value
	slot int
}

type opKind uint8

const (
	opLit opKind = iota
	opField
	opAgg
)

func (o *operand) get(c *evalCtx) Value {
	switch o.kind {
	case opField:
		return c.vals[o.slot]
	case opAgg:
		return Value{Kind: KindNumber, Num: c.value}
	}
	return o.lit
}

type compiler struct {
	fs     *fieldSet
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
func compileCondition(fs *fieldSet, rule, src string, window bool) (pred, error) {
	n, err := parseExpr(rule, src)
	if err != nil {
		return nil, err
	}
	cp := &compiler{fs: fs, rule: rule, src: src, window: window}
	return cp.compile(n)
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
