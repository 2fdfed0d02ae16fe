package engine

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// testPaths are the fields the decoder tests and the fuzz target read: the
// default schema plus a nested path and a non-role field.
var testPaths = []string{"user_id", "amount", "event_type", "ts", "ip", "meta.country", "tags", "currency"}

func newTestDecoder(t testing.TB) (*decoder, *Event) {
	t.Helper()
	fs, err := newFieldSet(DefaultSchema())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range testPaths {
		if _, err := fs.add(p); err != nil {
			t.Fatal(err)
		}
	}
	return newDecoder(fs, Limits{}), &Event{values: make([]Value, len(fs.paths))}
}

func slotOf(t testing.TB, d *decoder, path string) int {
	t.Helper()
	s, ok := d.fs.index[path]
	if !ok {
		t.Fatalf("no slot for %q", path)
	}
	return s
}

func TestDecodeValues(t *testing.T) {
	d, ev := newTestDecoder(t)
	in := `{"event_id":"e-1","user_id":"u-48213","amount":1234.56,"currency":"USD",` +
		`"event_type":"pay\"ment\u00e9\ud83d\ude00","ts":1732550400123,"ip":"203.0.113.7",` +
		`"meta":{"country":"DE","x":[1,2,{"y":null}]},"tags":["a","b"],"user_id":"dup"}`
	d.lim.AllowDuplicateKeys = true
	end, err := d.object([]byte(in), 0, ev)
	if err != DecodeOK || end != len(in) {
		t.Fatalf("object: err=%v end=%d len=%d", err, end, len(in))
	}
	want := map[string]Value{
		"user_id":      {Kind: KindString, Str: "u-48213"}, // first duplicate wins
		"amount":       {Kind: KindNumber, Num: 1234.56, Str: "1234.56"},
		"event_type":   {Kind: KindString, Str: "pay\"menté😀"},
		"ts":           {Kind: KindNumber, Num: 1732550400123, Str: "1732550400123"},
		"ip":           {Kind: KindString, Str: "203.0.113.7"},
		"meta.country": {Kind: KindString, Str: "DE"},
		"tags":         {Kind: KindArray, Str: `["a","b"]`},
		"currency":     {Kind: KindString, Str: "USD"},
	}
	for p, w := range want {
		if got := ev.values[slotOf(t, d, p)]; got != w {
			t.Errorf("%s = %+v, want %+v", p, got, w)
		}
	}
}

func TestDecodeNumbers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{
		{"0", 0}, {"-0", math.Copysign(0, -1)}, {"1", 1}, {"-17", -17}, {"0.5", 0.5}, {"1234.56", 1234.56},
		{"0.001", 0.001}, {"1e3", 1000}, {"1E-3", 0.001}, {"2.5e+2", 250},
		{"12345678901234567890", 12345678901234567890}, {"0.1234567890123456789012", 0.1234567890123456789012},
		{"1e-400", 0}, {"-1e-400", math.Copysign(0, -1)}, {"9007199254740993", 9007199254740993},
		{"1.7976931348623157e308", math.MaxFloat64}, {"-1.7976931348623158e308", -math.MaxFloat64},
		{"179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497791", math.MaxFloat64},
		{"0.000000000000000000000000000001797693134862315807e338", math.MaxFloat64},
		{"123456789012345678e-5", 1234567890123.45678},
	} {
		end, f, err := number([]byte(tc.in), 0, true)
		if err != DecodeOK || end != len(tc.in) {
			t.Errorf("%s: err=%v end=%d", tc.in, err, end)
			continue
		}
		if f != tc.want || math.Signbit(f) != math.Signbit(tc.want) {
			t.Errorf("%s = %v, want %v", tc.in, f, tc.want)
		}
		if g := gjson.Parse(tc.in).Num; g != f && !(math.IsInf(g, 0) && math.IsInf(f, 0)) {
			t.Errorf("%s: we say %v, gjson %v", tc.in, f, g)
		}
	}
	// Beyond float64: an error, read or skipped, never ±Inf.
	for _, big := range []string{"1e400", "-1e400", "1e309", "1.8e308", "-1.797693134862315808e308",
		"1797693134862315807937289714053034150799341327100378269361737789804449682927647509466490179775872070963302864166928879109465555478519404026306574886715058206819089020007083836762738548458177115317644757302700698555713669596228429148198608349364752927190741684443655107043427115596995080930428801779041744977920",
		"10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000", "1e99999999"} {
		for _, want := range []bool{true, false} {
			if _, f, err := number([]byte(big), 0, want); err != ErrNumberRange {
				t.Errorf("%.30s (want=%v): err=%v f=%v, want %v", big, want, err, f, ErrNumberRange)
			}
		}
	}
	for _, bad := range []string{"-", "01x", "1.", ".5", "1e", "1e+", "--1", "-a"} {
		b := []byte(bad)
		end, _, err := number(b, 0, true)
		// "01x": the number is "0"; the caller sees '1' where a delimiter belongs.
		if err == DecodeOK && end == len(b) {
			t.Errorf("%q accepted as a whole number", bad)
		}
	}
}

// TestProcessDecodeErrors runs whole datagrams and checks which counter
// each bad input ends in.
func TestProcessDecodeErrors(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)
	deepOK := `{"user_id":"u","x":` + strings.Repeat("[", 30) + strings.Repeat("]", 30) + "}"
	big := `{"user_id":"u","pad":"` + strings.Repeat("x", 20000) + `"}`
	cases := []struct {
		name   string
		in     string
		errs   []DecodeError // in order; DecodeOK = an event
		events int
	}{
		{"one event", `{"user_id":"u1","amount":5}`, []DecodeError{DecodeOK}, 1},
		{"ndjson", "{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\r\n\n  {\"user_id\":\"u3\"}\n", []DecodeError{DecodeOK, DecodeOK, DecodeOK}, 3},
		{"pretty printed", "{\n  \"user_id\": \"u1\",\n  \"amount\": 1\n}\n", []DecodeError{DecodeOK}, 1},
		{"empty", "", []DecodeError{ErrEmpty}, 0},
		{"blank", " \n\t\r\n", []DecodeError{ErrEmpty}, 0},
		{"invalid json", `{"user_id":"u1",}`, []DecodeError{ErrInvalidJSON}, 0},
		{"unterminated", `{"user_id":"u1"`, []DecodeError{ErrInvalidJSON}, 0},
		{"bad escape", `{"user_id":"u\x1"}`, []DecodeError{ErrInvalidJSON}, 0},
		{"control char", "{\"user_id\":\"u\x01\"}", []DecodeError{ErrInvalidJSON}, 0},
		{"garbage start", `hello`, []DecodeError{ErrInvalidJSON}, 0},
		{"not object", `["user_id"]`, []DecodeError{ErrNotObject}, 0},
		{"not object string", `"x"`, []DecodeError{ErrNotObject}, 0},
		{"too deep", deep, []DecodeError{ErrTooDeep}, 0},
		{"deep but allowed", deepOK, []DecodeError{DecodeOK}, 1},
		{"invalid utf8", "{\"user_id\":\"u\xff\"}", []DecodeError{ErrInvalidUTF8}, 0},
		{"invalid utf8 in skipped value", "{\"user_id\":\"u\",\"x\":\"\xc3\x28\"}", []DecodeError{ErrInvalidUTF8}, 0},
		{"trailing garbage", `{"user_id":"u1"} xyz`, []DecodeError{ErrTrailingGarbage}, 0},
		{"two on one line", `{"user_id":"u1"}{"user_id":"u2"}`, []DecodeError{ErrTrailingGarbage}, 0},
		{"missing key", `{"amount":5}`, []DecodeError{ErrMissingField}, 0},
		{"wrong type amount", `{"user_id":"u","amount":"5"}`, []DecodeError{ErrWrongType}, 0},
		{"wrong type key", `{"user_id":{"id":1}}`, []DecodeError{ErrWrongType}, 0},
		{"numeric key ok", `{"user_id":48213}`, []DecodeError{DecodeOK}, 1},
		{"null amount", `{"user_id":"u","amount":null}`, []DecodeError{ErrWrongType}, 0},
		{"oversized event", big, []DecodeError{ErrOversized}, 0},
		{"bad line then good", "{\"user_id\":\n\"oops\n{\"user_id\":\"u2\"}", []DecodeError{ErrInvalidJSON, DecodeOK}, 1},
		{"broken pretty object is one error", "{\n \"user_id\": \"u\",\n \"amount\": ,\n \"x\": 1\n}\n{\"user_id\":\"u2\"}", []DecodeError{ErrInvalidJSON, DecodeOK}, 1},
		{"duplicate key", `{"user_id":"first","user_id":"second","amount":5,"amount":99999}`, []DecodeError{ErrDuplicateKey}, 0},
		{"duplicate amount", `{"user_id":"u","amount":5,"amount":99999}`, []DecodeError{ErrDuplicateKey}, 0},
		{"duplicate after all wanted seen", `{"user_id":"u","amount":5,"event_type":"p","ts":1,"ip":"1.2.3.4","x":1,"ts":2}`, []DecodeError{ErrDuplicateKey}, 0},
		{"duplicate escaped", `{"user_id":"first","user\u005fid":"second"}`, []DecodeError{ErrDuplicateKey}, 0},
		{"duplicate of unread key allowed", `{"user_id":"u","x":1,"x":2}`, []DecodeError{DecodeOK}, 1},
		{"same name at other levels", `{"user_id":"u","meta":{"user_id":"v"},"x":{"amount":1}}`, []DecodeError{DecodeOK}, 1},
		{"duplicate then good line", "{\"user_id\":\"a\",\"user_id\":\"b\"}\n{\"user_id\":\"c\"}", []DecodeError{ErrDuplicateKey, DecodeOK}, 1},
		{"number out of range", `{"user_id":"u","amount":1e400}`, []DecodeError{ErrNumberRange}, 0},
		{"negative number out of range", `{"user_id":"u","amount":-1e400}`, []DecodeError{ErrNumberRange}, 0},
		{"unread number out of range", `{"user_id":"u","x":[1,{"y":-2e308}]}`, []DecodeError{ErrNumberRange}, 0},
		{"tiny number is zero", `{"user_id":"u","amount":1e-400}`, []DecodeError{DecodeOK}, 1},
		{"good then not-object line", "{\"user_id\":\"u\"}\n[1]\n{\"user_id\":\"v\"}", []DecodeError{DecodeOK, ErrNotObject, DecodeOK}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := mustEngine(t, Config{})
			w := e.NewWorker()
			frame := []byte(tc.in)
			ds := w.Process(frame, netipZero)
			if len(ds) != len(tc.errs) {
				t.Fatalf("%d decisions %v, want %d", len(ds), errsOf(ds), len(tc.errs))
			}
			for i, d := range ds {
				if d.Err != tc.errs[i] {
					t.Errorf("decision %d: err %v, want %v (raw %q)", i, d.Err, tc.errs[i], d.Raw)
				}
				if !isSubslice(frame, d.Raw) && len(d.Raw) > 0 {
					t.Errorf("decision %d: Raw is not a view of the frame", i)
				}
			}
			w.Flush()
			s := e.Stats()
			if s.Events != uint64(tc.events) {
				t.Errorf("events = %d, want %d", s.Events, tc.events)
			}
			want := [NumDecodeErrors]uint64{}
			for _, err := range tc.errs {
				if err != DecodeOK {
					want[err]++
				}
			}
			if s.DecodeErrors != want {
				t.Errorf("decode errors = %v, want %v", s.DecodeErrors, want)
			}
		})
	}
}

func TestProcessOversizedDatagram(t *testing.T) {
	e := mustEngine(t, Config{Limits: Limits{MaxDatagram: 100}})
	w := e.NewWorker()
	ds := w.Process([]byte(`{"user_id":"`+strings.Repeat("u", 200)+`"}`), netipZero)
	if len(ds) != 1 || ds[0].Err != ErrOversized {
		t.Fatalf("got %v", errsOf(ds))
	}
}

func TestDecodeRawViews(t *testing.T) {
	frame := []byte(`{"user_id":"u-1","amount":7}` + "\n" + `{"user_id":"u-2","amount":8}`)
	e := mustEngine(t, Config{})
	w := e.NewWorker()
	ds := w.Process(frame, netipZero)
	if len(ds) != 2 || string(ds[0].Raw) != `{"user_id":"u-1","amount":7}` || string(ds[1].Raw) != `{"user_id":"u-2","amount":8}` {
		t.Fatalf("raw views: %q", rawsOf(ds))
	}
	if &ds[1].Raw[0] != &frame[29] {
		t.Fatal("Raw was copied, want a view into the frame")
	}
}

func TestDecodeAllocs(t *testing.T) {
	d, ev := newTestDecoder(t)
	in := []byte(`{"event_id":"e-1","user_id":"u\u002d48213","amount":1234.56,"currency":"USD","event_type":"payment","ts":1732550400123,"ip":"203.0.113.7","meta":{"country":"DE"}}`)
	allocs := testing.AllocsPerRun(1000, func() {
		d.scratch = d.scratch[:0]
		if _, err := d.object(in, 0, ev); err != DecodeOK {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per decode, want 0", allocs)
	}
}

// FuzzDecode checks the scanner against gjson, the reference: whatever the
// scanner accepts gjson finds valid and reads the same values from; what
// the scanner calls invalid JSON gjson finds invalid too. And nothing
// panics or hangs on the whole datagram path.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"event_id":"e-000123","user_id":"u-48213","amount":1234.56,"currency":"USD","event_type":"payment","ts":1732550400123,"ip":"203.0.113.7"}`,
		`{"user_id":"a\"b\\c\u00e9\ud83d\ude00","amount":-1.5e3,"meta":{"country":"FR"},"tags":[1,true,null]}`,
		"{\"user_id\":\"u\"}\n{\"user_id\":\"v\"}",
		`{"user_id":1,"amount":1e999}`, `{}`, `{"a":[{"b":[{}]}]}`, `{"user_id":"\ud800"}`,
		"{\"user_id\":\"\xff\"}", `{"user_id":"u","amount":01}`, `{"user_id" "u"}`, `[]`, ``, `{"meta":{"country":`,
		// issue 16: duplicates, numbers beyond float64, pretty objects over lines
		`{"user_id":"first","user_id":"second","amount":5,"amount":99999}`,
		`{"user_id":"u","meta":{"country":"DE","coun\u0074ry":"FR"}}`, `{"user\u005fid":"a","user_id":"b"}`,
		`{"user_id":"u","amount":1e400}`, `{"user_id":"u","x":[-1e400]}`, `{"user_id":"u","amount":1.7976931348623157e308}`,
		`{"user_id":"u","amount":1.797693134862315807e308}`, `{"user_id":"u","amount":1e-400}`,
		"{\n  \"user_id\": \"a\",\n  \"note\":\n{\"user_id\":\"victim\",\"amount\":5000000}\n}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, ev := newTestDecoder(t)
		if i := skipWS(b, 0); i < len(b) && b[i] == '{' {
			end, err := d.object(b, i, ev)
			obj := b[i:]
			switch err {
			case DecodeOK:
				obj = b[i:end]
				if !gjson.ValidBytes(obj) {
					t.Fatalf("we accept %q, gjson does not", obj)
				}
				if !utf8.Valid(obj) {
					t.Fatalf("we accept invalid UTF-8 %q", obj)
				}
				for _, p := range testPaths {
					got := ev.values[slotOf(t, d, p)]
					want := fromGJSON(gjson.GetBytes(obj, p))
					if !sameValue(got, want) {
						t.Fatalf("%q: %s = %+v, gjson says %+v", obj, p, got, want)
					}
					if got.Kind == KindNumber && (math.IsInf(got.Num, 0) || math.IsNaN(got.Num)) {
						t.Fatalf("%q: %s = %v accepted", obj, p, got.Num)
					}
				}
				// No key the rules read is duplicated where they read it.
				for _, p := range testPaths {
					top, rest, nested := strings.Cut(p, ".")
					o, name := gjson.ParseBytes(obj), top
					if nested {
						o, name = gjson.GetBytes(obj, top), rest
					}
					n := 0
					o.ForEach(func(k, _ gjson.Result) bool {
						if k.String() == name {
							n++
						}
						return true
					})
					if n > 1 && o.IsObject() {
						t.Fatalf("%q: key %q of %s twice, accepted", obj, name, p)
					}
				}
				// Its compacted copy is one line and reads the same.
				line := AppendCompact(nil, obj)
				if bytes.ContainsAny(line, "\r\n") || !gjson.ValidBytes(line) {
					t.Fatalf("compact %q of %q", line, obj)
				}
				for _, p := range testPaths {
					if a, b := fromGJSON(gjson.GetBytes(obj, p)), fromGJSON(gjson.GetBytes(line, p)); a.Kind != b.Kind || a.Num != b.Num || a.Kind == KindString && a.Str != b.Str {
						t.Fatalf("compact %q of %q: %s %+v != %+v", line, obj, p, b, a)
					}
				}
			case ErrInvalidJSON:
				if gjson.ValidBytes(obj) {
					t.Fatalf("we reject %q as invalid JSON, gjson accepts it", obj)
				}
			case ErrInvalidUTF8:
				if utf8.Valid(obj) {
					t.Fatalf("we reject valid UTF-8 %q", obj)
				}
			}
		}
		e := mustEngine(t, Config{})
		w := e.NewWorker()
		for _, dd := range w.Process(b, netipZero) {
			if len(dd.Raw) > 0 && !isSubslice(b, dd.Raw) {
				t.Fatal("decision Raw outside the frame")
			}
		}
	})
}

func sameValue(a, b Value) bool {
	if a.Kind != b.Kind || a.Bool != b.Bool {
		return false
	}
	switch a.Kind {
	case KindNumber:
		return a.Num == b.Num || (math.IsNaN(a.Num) && math.IsNaN(b.Num))
	case KindString:
		return a.Str == b.Str
	case KindObject, KindArray:
		return a.Str == b.Str
	}
	return true
}

// TestDecodeDuplicateKeys: a key the rules read that occurs twice where
// they read it is a duplicate_key reject (top level and along nested
// paths, escaped spellings included); other duplicates are not looked for;
// AllowDuplicateKeys restores first-wins.
func TestDecodeDuplicateKeys(t *testing.T) {
	for _, tc := range []struct {
		in  string
		dup bool
	}{
		{`{"user_id":"first","user_id":"second","amount":5,"amount":99999}`, true},
		{`{"user_id":"u","meta":{"country":"DE","country":"FR"}}`, true},
		{`{"user_id":"u","meta":{"country":"DE","coun\u0074ry":"FR"}}`, true},
		{`{"user_id":"u","meta":{"country":"DE"},"meta":{"country":"FR"}}`, true},
		{`{"user_id":"u","meta":{"x":1,"x":2,"country":"DE"}}`, false},                         // x is not read
		{`{"user_id":"u","meta":{"sub":{"country":"a","country":"b"},"country":"DE"}}`, false}, // deeper, not on the path
		{`{"user_id":"u","tags":["a","a"],"z":1,"z":2}`, false},
		{`{"user_id":"u","meta":[{"country":"a","country":"b"}]}`, false}, // meta is an array: "country" is no index
		{`{"u\u0073er_id":"u","user_id":"v"}`, true},
	} {
		d, ev := newTestDecoder(t)
		_, err := d.object([]byte(tc.in), 0, ev)
		if got := err == ErrDuplicateKey; got != tc.dup || (!tc.dup && err != DecodeOK) {
			t.Errorf("%s: err %v, want duplicate %v", tc.in, err, tc.dup)
		}
		d.lim.AllowDuplicateKeys = true
		if _, err := d.object([]byte(tc.in), 0, ev); err != DecodeOK {
			t.Errorf("%s with duplicates allowed: err %v", tc.in, err)
		}
	}
	// Nested paths through arrays by index.
	fs, _ := newFieldSet(Schema{Key: "a.1.b"})
	d := newDecoder(fs, Limits{})
	ev := &Event{values: make([]Value, len(fs.paths))}
	for in, want := range map[string]DecodeError{
		`{"a":[{"b":1,"b":2},{"b":3}]}`:   DecodeOK,
		`{"a":[{"b":1},{"b":3,"b":4}]}`:   ErrDuplicateKey,
		`{"a":[{"b":1},{"c":{"b":3}}]}`:   DecodeOK,
		`{"a":{"1":{"b":1,"b":2}}}`:       ErrDuplicateKey,
		`{"a":{"1":{"b":1},"1":{"b":2}}}`: ErrDuplicateKey,
	} {
		if _, err := d.object([]byte(in), 0, ev); err != want {
			t.Errorf("a.1.b in %s: err %v, want %v", in, err, want)
		}
	}
}

// TestDecodeDuplicateKeysOption: the option reaches the decoder through
// the engine Config.
func TestDecodeDuplicateKeysOption(t *testing.T) {
	in := `{"user_id":"first","user_id":"second","amount":5,"amount":99999}`
	for _, allow := range []bool{false, true} {
		e := mustEngine(t, Config{Limits: Limits{AllowDuplicateKeys: allow}})
		d := decideOne(t, e.NewWorker(), in, netipZero)
		if allow && (d.Err != DecodeOK || d.Key != "first") || !allow && d.Err != ErrDuplicateKey {
			t.Errorf("allow=%v: err %v key %q", allow, d.Err, d.Key)
		}
	}
}
