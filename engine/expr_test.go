package engine

import (
	"strings"
	"testing"
)

const exprEvent = `{"user_id":"u-7","amount":150.5,"currency":"USD","event_type":"payment",` +
	`"ts":1732550400123,"ip":"203.0.113.7","vip":true,"flag":false,"note":null,"meta":{"country":"DE","score":0.9}}`

// evalOn compiles cond against a fresh field set, decodes exprEvent and
// evaluates the condition with value as the window aggregate.
func evalOn(t *testing.T, cond string, window bool, value float64) (bool, error) {
	t.Helper()
	fs, err := newFieldSet(DefaultSchema())
	if err != nil {
		t.Fatal(err)
	}
	p, err := compileCondition(fs, nil, "r", cond, window)
	if err != nil {
		return false, err
	}
	d := newDecoder(fs, Limits{})
	ev := &Event{values: make([]Value, len(fs.paths))}
	if _, derr := d.object([]byte(exprEvent), 0, ev); derr != DecodeOK {
		t.Fatal(derr)
	}
	return p(&evalCtx{vals: ev.values, value: value}), nil
}

func TestExprOperators(t *testing.T) {
	cases := []struct {
		cond string
		want bool
	}{
		// == and != on every type
		{`event_type == "payment"`, true}, {`event_type == 'refund'`, false},
		{`event_type != "refund"`, true}, {`event_type != "payment"`, false},
		{`amount == 150.5`, true}, {`amount != 150.5`, false}, {`amount == 150`, false},
		{`vip == true`, true}, {`flag == false`, true}, {`vip != true`, false},
		{`note == null`, true}, {`note != null`, false}, {`meta.country == "DE"`, true},
		// ordering on numbers and strings
		{`amount > 100`, true}, {`amount > 150.5`, false}, {`amount >= 150.5`, true},
		{`amount < 200`, true}, {`amount <= 150.5`, true}, {`amount < 150.5`, false},
		{`100 < amount`, true}, {`200 <= amount`, false}, {`meta.score > 0.5`, true},
		{`currency < "USE"`, true}, {`currency >= "USD"`, true}, {`currency > "USD"`, false},
		// type mismatch and missing fields: false, and true for !=
		{`amount == "150.5"`, false}, {`amount != "150.5"`, true}, {`event_type > 5`, false},
		{`missing == "x"`, false}, {`missing != "x"`, true}, {`missing > 1`, false},
		{`amount == currency`, false}, {`user_id == user_id`, true},
		// && || ! and parentheses, precedence
		{`event_type == "payment" && amount > 100`, true},
		{`event_type == "payment" && amount > 1000`, false},
		{`event_type == "refund" || amount > 100`, true},
		{`event_type == "refund" || amount > 1000`, false},
		{`!(amount > 1000)`, true}, {`!vip`, false}, {`!!vip`, true},
		{`event_type == "refund" && amount > 1 || vip`, true},
		{`event_type == "refund" && (amount > 1 || vip)`, false},
		// in
		{`currency in ["EUR", "USD"]`, true}, {`currency in ["EUR"]`, false},
		{`amount in [1, 150.5]`, true}, {`vip in [true]`, true}, {`missing in ["x"]`, false},
		{`currency in ["a","b","c","d","e","f","g","h","i","USD"]`, true},
		{`currency in ["a","b","c","d","e","f","g","h","i","j"]`, false},
		// startsWith and contains, infix and call forms
		{`user_id startsWith "u-"`, true}, {`user_id startsWith "x"`, false},
		{`ip contains ".113."`, true}, {`ip contains "198.18"`, false},
		{`startsWith(user_id, "u-")`, true}, {`contains(ip, "0.1")`, true},
		{`amount startsWith "1"`, false}, {`user_id startsWith user_id`, true},
		// bare operands
		{`vip`, true}, {`flag`, false}, {`true`, true}, {`false || vip`, true},
	}
	for _, tc := range cases {
		got, err := evalOn(t, tc.cond, false, 0)
		if err != nil {
			t.Errorf("%s: %v", tc.cond, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s = %v, want %v", tc.cond, got, tc.want)
		}
	}
}

func TestExprWindowValue(t *testing.T) {
	for _, tc := range []struct {
		cond  string
		value float64
		want  bool
	}{
		{`value > 50000`, 50001, true}, {`value > 50000`, 50000, false},
		{`value >= 3 && event_type == "payment"`, 3, true}, {`value == 0`, 0, true},
		{`value != 1`, 1, false}, {`value < 1`, 0.5, true}, {`value <= 1`, 1, true},
	} {
		got, err := evalOn(t, tc.cond, true, tc.value)
		if err != nil || got != tc.want {
			t.Errorf("%s with value=%v: %v, %v; want %v", tc.cond, tc.value, got, err, tc.want)
		}
	}
	// Outside a window, value is an ordinary (here missing) field.
	if got, err := evalOn(t, `value > 1`, false, 5); err != nil || got {
		t.Errorf("value outside a window: %v, %v", got, err)
	}
}

func TestExprErrors(t *testing.T) {
	for _, tc := range []struct {
		cond string
		col  int
		msg  string
	}{
		{``, 1, "empty condition"},
		{`amount >`, 9, "expected operand"},
		{`amount = 5`, 8, "use =="},
		{`amount > 5 &`, 12, "use &&"},
		{`(amount > 5`, 12, `expected ")"`},
		{`amount > 5)`, 11, "unexpected"},
		{`event_type == "pay`, 15, "unterminated string"},
		{`currency in "USD"`, 13, `expected "["`},
		{`currency in [USD]`, 14, "expected a literal"},
		{`amount > 1.2.3`, 10, "bad number"},
		{`vip > true`, 5, "cannot order a bool"},
		{`user_id startsWith 5`, 20, "needs a string"},
		{`5`, 1, "not a condition"},
		{`amount > 5 # x`, 12, "unexpected character"},
		{`a..b == 1`, 1, "empty component"},
		{`tags.* == 1`, 1, "empty component"},
		{`(amount > 1) > 2`, 9, "must be a field or a literal"},
		{`startsWith user_id`, 12, "needs (text, prefix)"},
	} {
		_, err := evalOn(t, tc.cond, false, 0)
		if err == nil {
			t.Errorf("%q: no error", tc.cond)
			continue
		}
		ee, ok := err.(*ExprError)
		if !ok {
			t.Errorf("%q: %T %v, want *ExprError", tc.cond, err, err)
			continue
		}
		if ee.Col != tc.col || !strings.Contains(ee.Msg, tc.msg) {
			t.Errorf("%q: column %d %q, want column %d containing %q", tc.cond, ee.Col, ee.Msg, tc.col, tc.msg)
		}
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], `rule "r": column`) ||
			strings.Index(lines[2], "^")-4 != ee.Col-1 {
			t.Errorf("%q: message layout:\n%s", tc.cond, err)
		}
	}
	if _, err := evalOn(t, `value > "x"`, true, 0); err == nil {
		t.Error(`value > "x" compiled in a window rule`)
	}
}

// TestExprSpecialisedAgreesWithGeneric checks every specialised closure
// against compareValues, the reference semantics, over values of all kinds.
func TestExprSpecialisedAgreesWithGeneric(t *testing.T) {
	vals := []Value{{}, {Kind: KindNull}, {Kind: KindBool, Bool: true}, {Kind: KindNumber, Num: 5},
		{Kind: KindNumber, Num: -1}, {Kind: KindString, Str: "m"}, {Kind: KindString, Str: ""}}
	lits := []Value{{Kind: KindNumber, Num: 5}, {Kind: KindNumber, Num: 0}, {Kind: KindString, Str: "m"}, {Kind: KindString, Str: "a"}}
	for _, op := range []string{"==", "!=", "<", "<=", ">", ">="} {
		for _, lit := range lits {
			var p pred
			if lit.Kind == KindNumber {
				p = numFieldCmp(op, 0, lit.Num)
			} else {
				p = strFieldCmp(op, 0, lit.Str)
			}
			for _, v := range vals {
				c := &evalCtx{vals: []Value{v}}
				if got, want := p(c), compareValues(op, v, lit); got != want {
					t.Errorf("%+v %s %+v: specialised %v, generic %v", v, op, lit, got, want)
				}
			}
		}
	}
}

func TestExprEvalAllocs(t *testing.T) {
	fs, _ := newFieldSet(DefaultSchema())
	p, err := compileCondition(fs, nil, "r", `event_type == "payment" && amount > 100 && currency in ["EUR","USD"] && !(ip startsWith "10.") || meta.country == "DE"`, false)
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder(fs, Limits{})
	ev := &Event{values: make([]Value, len(fs.paths))}
	d.object([]byte(exprEvent), 0, ev)
	c := &evalCtx{vals: ev.values}
	if n := testing.AllocsPerRun(1000, func() { p(c) }); n != 0 {
		t.Fatalf("%v allocs per evaluation", n)
	}
}

// FuzzExpr: no condition text panics the parser or the compiler, and a
// condition that compiles evaluates without panicking.
func FuzzExpr(f *testing.F) {
	for _, s := range []string{
		`event_type == "payment" && amount > 10000`, `value > 50000`, `currency in ["EUR", 'USD', 1, true, null]`,
		`!(a.b.c startsWith "x") || contains(ip, "1")`, `((((a))))`, `a == `, `"unterminated`, `a in [`,
		`-1 < amount`, `amount > 1e309`, `x == 'a\'b'`, `!`, `&&`, `a <= b >= c`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cond string) {
		fs, _ := newFieldSet(DefaultSchema())
		p, err := compileCondition(fs, nil, "fuzz", cond, len(cond)%2 == 0)
		if err != nil {
			if _, ok := err.(*ExprError); !ok {
				if !strings.Contains(err.Error(), "top-level fields") {
					t.Fatalf("error of type %T: %v", err, err)
				}
			}
			return
		}
		d := newDecoder(fs, Limits{})
		ev := &Event{values: make([]Value, len(fs.paths))}
		d.object([]byte(exprEvent), 0, ev)
		p(&evalCtx{vals: ev.values, value: 1})
	})
}
