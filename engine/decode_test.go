package engine

import (
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
		{"1e400", math.Inf(1)}, {"-1e400", math.Inf(-1)}, {"1e-400", 0}, {"9007199254740993", 9007199254740993},
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
