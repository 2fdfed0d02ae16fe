package lists

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/xgate/xgate/engine/value"
)

func mustList(t testing.TB, name string, k ListKind, f ListFormat, text string) *List {
	t.Helper()
	d, err := ParseList(k, f, []byte(text), ListLimits{})
	if err != nil {
		t.Fatalf("ParseList %s: %v", name, err)
	}
	l, err := NewList(name, k, d)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestCIDRListContains(t *testing.T) {
	l := mustList(t, "p", ListCIDR, FormatLines, `# partners
198.51.100.0/24   # office
203.0.113.7
10.0.0.0/8
10.1.0.0/16        # inside the /8: merged
2001:db8::/32
::ffff:192.0.2.0/120
`)
	d := l.Load()
	if d.Len() != 6 {
		t.Errorf("Len %d, want 6", d.Len())
	}
	for _, c := range []struct {
		addr string
		in   bool
	}{
		{"198.51.100.0", true}, {"198.51.100.255", true}, {"198.51.101.0", false}, {"198.51.99.255", false},
		{"203.0.113.7", true}, {"203.0.113.8", false}, {"203.0.113.6", false},
		{"10.255.255.255", true}, {"11.0.0.0", false}, {"9.255.255.255", false},
		{"2001:db8::1", true}, {"2001:db9::", false}, {"::ffff:198.51.100.9", true},
		{"192.0.2.77", true}, {"192.0.3.1", false}, {"::", false}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
	} {
		if got := d.ContainsAddr(netip.MustParseAddr(c.addr)); got != c.in {
			t.Errorf("%s: in=%v, want %v", c.addr, got, c.in)
		}
	}
	if d.ContainsAddr(netip.Addr{}) {
		t.Error("the zero Addr is in the list")
	}
}

// TestCIDRListAgreesWithPrefixes: the merged ranges answer as a scan over
// the prefixes does, on random lists and addresses (near the edges too).
func TestCIDRListAgreesWithPrefixes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randAddr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.IntN(4)) // a small space: overlaps happen
			}
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(256)), byte(rng.IntN(256))})
	}
	for round := 0; round < 50; round++ {
		var text strings.Builder
		var pfx []netip.Prefix
		for i := 0; i < 1+rng.IntN(40); i++ {
			v6 := rng.IntN(3) == 0
			a := randAddr(v6)
			bits := 8 + rng.IntN(a.BitLen()-7)
			p := netip.PrefixFrom(a, bits).Masked()
			pfx = append(pfx, p)
			fmt.Fprintln(&text, p)
		}
		d, err := ParseList(ListCIDR, FormatLines, []byte(text.String()), ListLimits{})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2000; i++ {
			a := randAddr(rng.IntN(3) == 0)
			if i%2 == 0 { // an edge of a listed network, or next to it
				p := pfx[rng.IntN(len(pfx))]
				r := prefixRange(p)
				x := r.lo
				if rng.IntN(2) == 0 {
					x = r.hi
				}
				if nx, ok := x.addOne(); ok && rng.IntN(2) == 0 {
					x = nx
				}
				var b [16]byte
				for j := 0; j < 8; j++ {
					b[j] = byte(x.hi >> (56 - 8*j))
					b[8+j] = byte(x.lo >> (56 - 8*j))
				}
				a = netip.AddrFrom16(b).Unmap()
			}
			// IPv4 is v4-mapped, as in the XDP trie: an IPv6 network over
			// ::ffff:0:0/96 holds IPv4 addresses too.
			want := false
			for _, p := range pfx {
				want = want || p.Contains(a) || a.Is4() && p.Contains(netip.AddrFrom16(a.As16()))
			}
			if got := d.ContainsAddr(a); got != want {
				t.Fatalf("round %d: %v: got %v, want %v (list %v)", round, a, got, want, pfx)
			}
		}
	}
}

func TestSetAndMapLists(t *testing.T) {
	s := mustList(t, "vip", ListSet, FormatLines, "# vip users\nu-1\n  u-2  \n\nu-1\n42\n").Load()
	if s.Len() != 3 || !s.ContainsKey("u-2") || !s.ContainsKey("42") || s.ContainsKey("u-3") || s.ContainsKey("# vip users") {
		t.Errorf("set: len %d, u-2 %v, 42 %v", s.Len(), s.ContainsKey("u-2"), s.ContainsKey("42"))
	}
	m := mustList(t, "risk", ListMap, FormatCSV, "# user,tier\nu-1,high\nu-2, low\n\"u,3\",\"say \"\"hi\"\"\"\n").Load()
	if v := m.Lookup("u-1"); v.Kind != KindString || v.Str != "high" {
		t.Errorf("u-1: %+v", v)
	}
	if v := m.Lookup("u-2"); v.Str != "low" {
		t.Errorf("u-2: %+v", v)
	}
	if js, _ := m.LookupJSON("u,3"); js != `"say \"hi\""` {
		t.Errorf("u,3 as JSON: %s", js)
	}
	if v := m.Lookup("nobody"); v.Kind != value.KindMissing {
		t.Errorf("nobody: %+v", v)
	}
	j := mustList(t, "limits", ListMap, FormatJSON, `{"u-1": "high", "u-2": 12.5, "u-3": true, "u-<4>": "a&b"}`).Load()
	if v := j.Lookup("u-2"); v.Kind != KindNumber || v.Num != 12.5 {
		t.Errorf("u-2: %+v", v)
	}
	if v := j.Lookup("u-3"); v.Kind != KindBool || !v.Bool {
		t.Errorf("u-3: %+v", v)
	}
	if js, _ := j.LookupJSON("u-<4>"); js != `"a&b"` {
		t.Errorf("u-<4> as JSON: %s", js)
	}
}

func TestListParseErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		kind ListKind
		f    ListFormat
		text string
		line int
		msg  string
	}{
		{"bad network", ListCIDR, FormatLines, "10.0.0.0/8\n\n10.0.0.300/8\n", 3, `"10.0.0.300/8" is not a network`},
		{"zone", ListCIDR, FormatLines, "fe80::1%eth0\n", 1, "is not a network"},
		{"too many", ListCIDR, FormatLines, "10.0.0.1\n10.0.0.2\n10.0.0.3\n", 3, "more than 2 entries"},
		{"set too many", ListSet, FormatLines, "a\nb\nc\n", 3, "more than 2 entries"},
		{"csv one field", ListMap, FormatCSV, "a,1\nb\n", 2, "1 fields: want key,value"},
		{"csv three fields", ListMap, FormatCSV, "a,1,2\n", 1, "3 fields"},
		{"csv repeated", ListMap, FormatCSV, "a,1\nb,2\na,3\n", 3, `key "a" repeated (first on line 1)`},
		{"csv quote", ListMap, FormatCSV, "a,1\n\"b,2\n", 2, "quote"},
		{"csv empty key", ListMap, FormatCSV, " ,1\n", 1, "empty key"},
		{"json array", ListMap, FormatJSON, `["a"]`, 1, "want one JSON object"},
		{"json nested", ListMap, FormatJSON, "{\n\"a\": \"x\",\n\"b\": {\"c\": 1}\n}", 3, `key "b": want a string, number or boolean`},
		{"json syntax", ListMap, FormatJSON, "{\n\"a\": \"x\"\n\"b\": 1}", 3, "invalid JSON"},
		{"json truncated", ListMap, FormatJSON, "{\"a\": \"x\",\n", 2, "invalid JSON"},
		{"json trailing", ListMap, FormatJSON, "{\"a\": \"x\"}\n{}", 2, "something after the object"},
		{"json repeated", ListMap, FormatJSON, "{\"a\": 1,\n\"a\": 2}", 2, "repeated"},
		{"utf8", ListSet, FormatLines, "ok\n\xff\xfe\n", 2, "not valid UTF-8"},
		{"long key", ListSet, FormatLines, strings.Repeat("k", MaxListKey+1), 1, "at most 4096"},
		{"cidr as csv", ListCIDR, FormatCSV, "10.0.0.0/8\n", 0, "one network a line"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseList(c.kind, c.f, []byte(c.text), ListLimits{MaxEntries: 2})
			var le *ListError
			if !errors.As(err, &le) {
				t.Fatalf("error %v, want a *ListError", err)
			}
			if le.Line != c.line || !strings.Contains(le.Msg, c.msg) {
				t.Errorf("got line %d %q, want line %d containing %q", le.Line, le.Msg, c.line, c.msg)
			}
		})
	}
}

func TestListStoreKind(t *testing.T) {
	l := mustList(t, "p", ListCIDR, FormatLines, "10.0.0.0/8")
	set, _ := ParseList(ListSet, FormatLines, []byte("a"), ListLimits{})
	if err := l.Store(set); err == nil {
		t.Error("a set stored into a cidr list")
	}
	if err := l.Store(nil); err == nil {
		t.Error("nil stored")
	}
}
