package engine

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/xgate/xgate/engine/lists"
)

var benchSinkBool bool

// benchLists are lists of realistic sizes: 10k networks, 100k keys.
func benchLists(tb testing.TB) map[string]*lists.List {
	var cidrs, keys, pairs strings.Builder
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&cidrs, "%d.%d.%d.0/24\n", 20+i>>16, (i>>8)&0xff, i&0xff)
	}
	cidrs.WriteString("198.51.100.0/24\n203.0.113.0/24\n")
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&keys, "u-%d\n", i)
		fmt.Fprintf(&pairs, "u-%d,tier-%d\n", i, i%3)
	}
	return map[string]*lists.List{
		"partners":  mustList(tb, "partners", lists.ListCIDR, lists.FormatLines, cidrs.String()),
		"vip":       mustList(tb, "vip", lists.ListSet, lists.FormatLines, keys.String()),
		"risk_tier": mustList(tb, "risk_tier", lists.ListMap, lists.FormatCSV, pairs.String()),
	}
}

// BenchmarkListLookup is one lookup of each kind, hit and miss alternating.
func BenchmarkListLookup(b *testing.B) {
	ls := benchLists(b)
	b.Run("cidr", func(b *testing.B) {
		d := ls["partners"].Load()
		addrs := []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("192.0.2.1")}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			benchSinkBool = d.ContainsAddr(addrs[i&1])
			i++
		}
	})
	b.Run("cidr_text", func(b *testing.B) { // an address field of the event: parse, then look up
		l := ls["partners"]
		vals := []Value{{Kind: KindString, Str: "203.0.113.7"}, {Kind: KindString, Str: "192.0.2.1"}}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			benchSinkBool = addrIn(l, &vals[i&1])
			i++
		}
	})
	b.Run("set", func(b *testing.B) {
		l := ls["vip"]
		keys := []string{"u-48213", "x-48213"}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			benchSinkBool = l.Load().ContainsKey(keys[i&1])
			i++
		}
	})
	b.Run("map", func(b *testing.B) {
		l := ls["risk_tier"]
		keys := []string{"u-48213", "x-48213"}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			benchSinkString = l.Load().Lookup(keys[i&1]).Str
			i++
		}
	})
}

// listPipelineConfig has a rule of each lookup kind and added fields.
func listPipelineConfig(tb testing.TB) Config {
	return Config{Lists: benchLists(tb),
		Rules: []RuleSpec{
			{Name: "partner", When: `src_ip in cidrs("partners") && ip in cidrs("partners")`, Action: "alert"},
			{Name: "vip", When: `user_id in set("vip") && lookup("risk_tier", user_id) == "nope"`, Action: "drop"},
		},
		Enrich: []EnrichSpec{{Field: "risk_tier", From: `lookup("risk_tier", user_id)`}, {Field: "vip", From: `user_id in set("vip")`}},
	}
}

// BenchmarkListPipeline is the whole engine on the default event: without
// lists (one filter rule), and with a rule of each lookup kind plus two
// added fields.
func BenchmarkListPipeline(b *testing.B) {
	frame := []byte(benchEvent)
	src := netip.MustParseAddr("198.51.100.7")
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"without", Config{Rules: []RuleSpec{{Name: "big", When: `event_type == "payment" && amount > 10000`, Action: "alert"}}}},
		{"with", listPipelineConfig(b)},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := mustEngine(b, c.cfg)
			w := e.NewWorker()
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				benchSinkDecisions = w.Process(frame, src)
			}
			if ds := w.Process(frame, src); ds[0].Err != DecodeOK {
				b.Fatal(ds[0].Err)
			}
		})
	}
}
