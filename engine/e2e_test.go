package engine

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// The end-to-end test feeds 100k generated events, in datagrams of one to
// three objects with malformed ones mixed in, through one worker and checks
// every decision against refEngine: a direct, unoptimised implementation of
// the same rules written against the generator's own structs (no JSON, no
// compiled conditions, no lock-free tables).

type genEvent struct {
	user, typ, currency, ip string
	amount                  int // 0 = field absent
	bad                     DecodeError
	src                     netip.Addr
}

func (g genEvent) json() string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"event_id":"e","user_id":%q,"event_type":%q,"currency":%q,"ip":%q`, g.user, g.typ, g.currency, g.ip)
	if g.amount != 0 {
		fmt.Fprintf(&b, `,"amount":%d`, g.amount)
	}
	b.WriteString(`,"meta":{"tags":["x",{"y":[1,2]}]}}`)
	s := b.String()
	switch g.bad {
	case ErrInvalidJSON:
		return s[:len(s)-1] + `,}`
	case ErrMissingField:
		return strings.Replace(s, `"user_id"`, `"uid"`, 1)
	case ErrWrongType:
		return strings.Replace(s, `"event_type":`, `"event_type":7,"x":`, 1)
	case ErrTrailingGarbage:
		return s + ` ]`
	case ErrInvalidUTF8:
		return strings.Replace(s, `"e"`, "\"\xfe\"", 1)
	case ErrNotObject:
		return `[` + s + `]`
	}
	return s
}

var e2eRules = []RuleSpec{
	{Name: "vip", When: `user_id in ["u-1", "u-2"]`, Action: "pass"},
	{Name: "big-payment", When: `event_type == "payment" && amount > 15000`, Action: "alert"},
	{Name: "bad-currency", When: `!(currency in ["USD", "EUR"]) && event_type != "login"`, Action: "drop"},
	{Name: "test-user", When: `user_id startsWith "test-"`, Action: "block 30s"},
	{Name: "per-user-rate", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "50/s", Burst: 5}, Action: "drop"},
	{Name: "velocity", Window: &WindowSpec{Key: "user_id", Size: 10 * time.Second, Slide: time.Second, Agg: "sum(amount)", MaxKeys: 1 << 14},
		Filter: `event_type == "payment"`, When: `value > 60000`, Action: "alert"},
	{Name: "login-flood", RateLimit: &RateLimitSpec{Key: SrcKey, Rate: "200/s", Burst: 20, MaxKeys: 1 << 12}, When: `event_type == "login"`, Action: "drop"},
	{Name: "chatty", Window: &WindowSpec{Key: "user_id", Size: 5 * time.Second, Slide: time.Second, Agg: "count", MaxKeys: 1 << 14},
		When: `value > 30`, Action: "drop"},
	{Name: "max-from-ip", Window: &WindowSpec{Key: SrcKey, Size: 4 * time.Second, Slide: 2 * time.Second, Agg: "max(amount)", MaxKeys: 1 << 12},
		When: `value >= 19990 && currency contains "U"`, Action: "alert"},
}

type refEngine struct {
	buckets map[string]int64 // credit in ns, keyed by rule+key
	seen    map[string]int64 // last decision time, for credit refill
	windows map[string][]refObs
}

type refObs struct {
	step int64
	v    int
}

type refDecision struct {
	action Action
	rule   string
}

func (r *refEngine) allow(name, key string, now, interval, limit int64) bool {
	k := name + "\x00" + key
	credit, ok := r.buckets[k]
	if !ok {
		credit = limit
	} else {
		credit = min(limit, credit+(now-r.seen[k]))
	}
	r.seen[k] = now
	if credit >= interval {
		r.buckets[k] = credit - interval
		return true
	}
	r.buckets[k] = credit
	return false
}

// window adds an observation and returns the aggregate over steps k-n+1..k.
func (r *refEngine) window(name, key string, now int64, slide time.Duration, n int64, v int, agg string) float64 {
	k := name + "\x00" + key
	step := now / int64(slide)
	obs := append(r.windows[k], refObs{step, v})
	obs = slices.DeleteFunc(obs, func(o refObs) bool { return o.step < step-n+1 })
	r.windows[k] = obs
	var out float64
	for i, o := range obs {
		switch agg {
		case "count":
			out++
		case "sum":
			out += float64(o.v)
		case "max":
			if i == 0 || float64(o.v) > out {
				out = float64(o.v)
			}
		}
	}
	return out
}

func (r *refEngine) decide(g genEvent, now int64) refDecision {
	d := refDecision{action: ActionPass}
	alerted := false
	fire := func(name string, a Action) (stop bool) {
		switch a {
		case ActionAlert:
			if !alerted {
				alerted = true
				d = refDecision{ActionAlert, name}
			}
			return false
		case ActionPass:
			if !alerted {
				d.rule = name
			}
			return true
		}
		d = refDecision{a, name}
		return true
	}
	if g.user == "u-1" || g.user == "u-2" {
		if fire("vip", ActionPass) {
			return d
		}
	}
	if g.typ == "payment" && g.amount != 0 && g.amount > 15000 {
		fire("big-payment", ActionAlert)
	}
	if g.currency != "USD" && g.currency != "EUR" && g.typ != "login" {
		if fire("bad-currency", ActionDrop) {
			return d
		}
	}
	if strings.HasPrefix(g.user, "test-") {
		if fire("test-user", ActionBlock) {
			return d
		}
	}
	if !r.allow("per-user-rate", g.user, now, int64(20*time.Millisecond), int64(100*time.Millisecond)) {
		if fire("per-user-rate", ActionDrop) {
			return d
		}
	}
	if g.typ == "payment" && g.amount != 0 {
		if r.window("velocity", g.user, now, time.Second, 10, g.amount, "sum") > 60000 {
			fire("velocity", ActionAlert)
		}
	}
	if g.typ == "login" {
		if !r.allow("login-flood", g.src.String(), now, int64(5*time.Millisecond), int64(100*time.Millisecond)) {
			if fire("login-flood", ActionDrop) {
				return d
			}
		}
	}
	if r.window("chatty", g.user, now, time.Second, 5, 0, "count") > 30 {
		if fire("chatty", ActionDrop) {
			return d
		}
	}
	if g.amount != 0 {
		if r.window("max-from-ip", g.src.String(), now, 2*time.Second, 2, g.amount, "max") >= 19990 && strings.Contains(g.currency, "U") {
			fire("max-from-ip", ActionAlert)
		}
	}
	return d
}

func TestEndToEndAgainstReference(t *testing.T) {
	const events = 100_000
	rng := rand.New(rand.NewPCG(42, 4242))
	clk := &ManualClock{}
	clk.Set(int64(time.Hour))
	e := mustEngine(t, Config{Rules: e2eRules, Clock: clk})
	w := e.NewWorker()
	ref := &refEngine{buckets: map[string]int64{}, seen: map[string]int64{}, windows: map[string][]refObs{}}

	types := []string{"payment", "payment", "login", "click", "refund"}
	currencies := []string{"USD", "USD", "EUR", "GBP", "AUD"}
	badKinds := []DecodeError{ErrInvalidJSON, ErrMissingField, ErrWrongType, ErrTrailingGarbage, ErrInvalidUTF8, ErrNotObject}
	var wantVerdicts [NumActions]uint64
	var wantErrs [NumDecodeErrors]uint64
	wantFired := map[string]uint64{}
	sent := 0
	for sent < events {
		// Events of one datagram share its time and source, as they would.
		clk.Advance(time.Duration(rng.IntN(400)) * time.Microsecond)
		now := clk.Nanotime()
		src := netip.AddrFrom4([4]byte{198, 18, 0, byte(rng.IntN(40))})
		if rng.IntN(3) == 0 {
			src = netip.AddrFrom4([4]byte{198, 18, 0, 250}) // a flooding source
		}
		n := 1 + rng.IntN(3)
		var frame []string
		var gens []genEvent
		for j := 0; j < n && sent < events; j++ {
			g := genEvent{user: fmt.Sprintf("u-%d", 1+rng.IntN(1500)), typ: types[rng.IntN(len(types))],
				currency: currencies[rng.IntN(len(currencies))], ip: "203.0.113.9", src: src}
			if rng.IntN(10) == 0 {
				g.user = fmt.Sprintf("u-hot-%d", rng.IntN(5)) // over their rate
			}
			if rng.IntN(200) == 0 {
				g.user = fmt.Sprintf("test-%d", rng.IntN(10))
			}
			if g.typ != "login" {
				g.amount = 1 + rng.IntN(20000)
			}
			if rng.IntN(25) == 0 {
				g.bad = badKinds[rng.IntN(len(badKinds))]
			}
			frame = append(frame, g.json())
			gens = append(gens, g)
			sent++
		}
		ds := w.Process([]byte(strings.Join(frame, "\n")), src)
		if len(ds) != len(gens) {
			t.Fatalf("event %d: %d decisions for %d objects: %v", sent, len(ds), len(gens), errsOf(ds))
		}
		for j, g := range gens {
			got := ds[j]
			if got.Err != g.bad {
				t.Fatalf("event %d: decode %v, want %v: %s", sent, got.Err, g.bad, frame[j])
			}
			if g.bad != DecodeOK {
				wantErrs[g.bad]++
				continue
			}
			want := ref.decide(g, now)
			if got.Action != want.action || got.Rule != want.rule {
				t.Fatalf("event %d (%s): got %v by %q, reference %v by %q", sent, frame[j], got.Action, got.Rule, want.action, want.rule)
			}
			if want.action == ActionBlock && got.Block != 30*time.Second {
				t.Fatalf("block duration %v", got.Block)
			}
			wantVerdicts[want.action]++
			if want.rule != "" {
				wantFired[want.rule]++
			}
		}
	}
	w.Flush()
	s := e.Stats()
	if s.Verdicts != wantVerdicts || s.DecodeErrors != wantErrs {
		t.Fatalf("totals: verdicts %v errors %v, want %v %v", s.Verdicts, s.DecodeErrors, wantVerdicts, wantErrs)
	}
	if s.Events+s.DecodeErrorTotal() != events {
		t.Fatalf("accounting: %d events + %d errors != %d sent", s.Events, s.DecodeErrorTotal(), events)
	}
	// Every rule should have had its say, or the mix does not test it.
	for _, r := range s.Rules {
		if r.Fired == 0 {
			t.Errorf("rule %s never fired: adjust the generator", r.Name)
		}
		if r.Fired < wantFired[r.Name] {
			t.Errorf("rule %s fired %d times, but decided %d events", r.Name, r.Fired, wantFired[r.Name])
		}
	}
	t.Logf("verdicts %v, decode errors %v", s.Verdicts, s.DecodeErrors)
}
