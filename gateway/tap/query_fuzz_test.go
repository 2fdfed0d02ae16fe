package tap

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/xgate/xgate/engine"
)

// checkQuery holds one parseQuery result to the query's contract:
// an error, or values inside their bounds that say what the query says.
func checkQuery(t *testing.T, raw string, verdicts uint32, rule string, rate int, err error) {
	t.Helper()
	if err != nil {
		if verdicts != 0 || rule != "" || rate != 0 {
			t.Fatalf("%q: error %v with values %b %q %d", raw, err, verdicts, rule, rate)
		}
		return
	}
	if verdicts == 0 || verdicts&^allVerdicts != 0 {
		t.Fatalf("%q: verdict mask %b: want a non-empty subset of %b", raw, verdicts, allVerdicts)
	}
	if rate < 1 || rate > MaxRate {
		t.Fatalf("%q: rate %d outside 1..%d", raw, rate, MaxRate)
	}
	if len(rule) > maxRule || !utf8.ValidString(rule) {
		t.Fatalf("%q: rule %q is not a valid rule name", raw, rule)
	}
	// What the standard parser reads, the tap reads: no key dropped or
	// doubled, nothing the parser left out.
	q, perr := url.ParseQuery(raw)
	if perr != nil {
		t.Fatalf("%q: accepted, but url.ParseQuery says %v", raw, perr)
	}
	for k, vs := range q {
		if (k != "verdict" && k != "rule" && k != "rate") || len(vs) != 1 {
			t.Fatalf("%q: accepted with %s=%q", raw, k, vs)
		}
	}
	if q.Get("rule") != rule {
		t.Fatalf("%q: rule %q, the query says %q", raw, rule, q.Get("rule"))
	}
	if v := q.Get("rate"); v == "" && rate != 100 || v != "" && !atoiIs(v, rate) {
		t.Fatalf("%q: rate %d, the query says %q", raw, rate, v)
	}
	want := uint32(allVerdicts)
	if v := q.Get("verdict"); v != "" {
		want = 0
		for name := range strings.SplitSeq(v, ",") {
			a, ok := parseAction(strings.TrimSpace(name))
			if !ok {
				t.Fatalf("%q: accepted the verdict %q", raw, name)
			}
			want |= 1 << a
		}
	}
	if verdicts != want {
		t.Fatalf("%q: verdicts %b, the query says %b", raw, verdicts, want)
	}
}

func atoiIs(s string, n int) bool {
	m, err := strconv.Atoi(s)
	return err == nil && m == n
}

// FuzzTapQuery feeds parseQuery two ways: the raw query string as a
// client may send it (checkQuery), and a query a client builds from a
// verdict mask, a rule and a rate, which must parse back to exactly those
// values when they are valid and be refused when they are not.
func FuzzTapQuery(f *testing.F) {
	for _, s := range []string{
		"", "verdict=alert", "verdict=drop,block&rate=5", "rule=big-payment&rate=10000",
		"verdict=pass,%20alert", "verdict=nope", "verdict=pass,", "rate=0", "rate=10001", "rate=-1",
		"rate=+5", "rate=0x10", "rate=99999999999999999999", "verdict=drop%zz", "rule=%ff", "verdict=drop;rate=1",
		"verdicts=drop", "rate=5&rate=10000", "rule=a&rule=b", "=", "&&&", "verdict", "rule=caf%C3%A9",
	} {
		f.Add(s, uint8(0), "", 0)
	}
	f.Add("", uint8(0b0101), "big-payment", 10)
	f.Add("", uint8(0b1111), "a,b&c=d%", 10000)
	f.Add("", uint8(0b10000), "", 1)
	f.Add("", uint8(1), "\xff", 1)
	f.Add("", uint8(2), strings.Repeat("r", maxRule+1), 1)
	f.Add("", uint8(8), "x", 10001)
	f.Fuzz(func(t *testing.T, raw string, mask uint8, rule string, rate int) {
		verdicts, r, n, err := parseQuery(raw)
		checkQuery(t, raw, verdicts, r, n, err)

		// The built query: mask 0 leaves verdict= out (every verdict),
		// rate 0 leaves rate= out (100 lines a second).
		q := url.Values{}
		var names []string
		for a := range 8 {
			if mask&(1<<a) != 0 {
				names = append(names, engine.Action(a).String())
			}
		}
		if len(names) > 0 {
			q.Set("verdict", strings.Join(names, ","))
		}
		if rule != "" {
			q.Set("rule", rule)
		}
		if rate != 0 {
			q.Set("rate", strconv.Itoa(rate))
		}
		built := q.Encode()
		verdicts, r, n, err = parseQuery(built)
		checkQuery(t, built, verdicts, r, n, err)
		valid := uint32(mask)&^allVerdicts == 0 && (rate == 0 || rate >= 1 && rate <= MaxRate) &&
			len(rule) <= maxRule && utf8.ValidString(rule)
		if !valid {
			if err == nil {
				t.Fatalf("%q: accepted mask %b rule %q rate %d", built, mask, rule, rate)
			}
			return
		}
		wantMask, wantRate := uint32(mask), rate
		if mask == 0 {
			wantMask = allVerdicts
		}
		if rate == 0 {
			wantRate = 100
		}
		if err != nil || verdicts != wantMask || r != rule || n != wantRate {
			t.Fatalf("%q: got %b %q %d, %v; want %b %q %d", built, verdicts, r, n, err, wantMask, rule, wantRate)
		}
	})
}

// TestTapQueryRefuses: what the tap used to read differently from what the
// client meant (a malformed escape or a ';' dropped verdict= and streamed
// every verdict; a typo'd or repeated key was ignored) is a 400 now.
func TestTapQueryRefuses(t *testing.T) {
	for _, raw := range []string{
		"verdict=drop%zz", "verdict=drop;rate=1", "verdicts=drop", "rate=5&rate=10000",
		"verdict=pass&verdict=drop", "rule=%ff", "rule=" + strings.Repeat("r", maxRule+1),
	} {
		if v, r, n, err := parseQuery(raw); err == nil {
			t.Errorf("%q: accepted as %b %q %d", raw, v, r, n)
		}
	}
	v, r, n, err := parseQuery("verdict=drop,%20block&rule=caf%C3%A9&rate=7")
	if err != nil || v != 1<<engine.ActionDrop|1<<engine.ActionBlock || r != "café" || n != 7 {
		t.Fatalf("got %b %q %d, %v", v, r, n, err)
	}
}
