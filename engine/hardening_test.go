package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
)

// These tests are the engine's cases of issue 16 ("Hardening"): one event,
// one meaning; what validates, runs.

// TestVelocityAfterOutOfRangeAmounts: 1e400 and -1e400 are decode errors
// (never ±Inf), and finite extremes saturate the window sum instead of
// making it Inf - Inf = NaN: the velocity rule keeps firing for the victim
// exactly as for a control user.
func TestVelocityAfterOutOfRangeAmounts(t *testing.T) {
	clk := &ManualClock{}
	e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{{
		Name: "velocity", Window: &WindowSpec{Key: "user_id", Size: 10 * time.Second, Slide: time.Second, Agg: "sum(amount)"},
		When: "value > 1000", Action: "alert",
	}}})
	w := e.NewWorker()
	send := func(user, amount string) Decision {
		t.Helper()
		return decideOne(t, w, fmt.Sprintf(`{"user_id":%q,"amount":%s}`, user, amount), netipZero)
	}
	for _, a := range []string{"1e400", "-1e400"} {
		if d := send("victim", a); d.Err != ErrNumberRange {
			t.Fatalf("amount %s: err %v, want %v", a, d.Err, ErrNumberRange)
		}
	}
	// Finite but huge: +Max twice in step 0, -Max twice in step 1.
	send("victim", "1.7976931348623157e308")
	send("victim", "1.7976931348623157e308")
	clk.Advance(time.Second)
	send("victim", "-1.7976931348623157e308")
	if d := send("victim", "-1.7976931348623157e308"); math.IsNaN(d.Value) || math.IsInf(d.Value, 0) {
		t.Fatalf("window value %v", d.Value)
	}
	alerts := map[string]int{}
	for s := 2; s < 10; s++ {
		clk.Advance(time.Second)
		for _, u := range []string{"victim", "control"} {
			d := send(u, "600")
			if math.IsNaN(d.Value) {
				t.Fatalf("%s at %ds: NaN", u, s)
			}
			if d.Action == ActionAlert {
				alerts[u]++
			}
		}
	}
	if alerts["control"] != 7 || alerts["victim"] != alerts["control"] {
		t.Fatalf("alerts %v, want 7 each", alerts)
	}
	w.Flush()
	if n := e.Stats().DecodeErrors[ErrNumberRange]; n != 2 {
		t.Fatalf("number_out_of_range = %d, want 2", n)
	}
}

// TestFullRateLimitFailsClosed: 1000 users against max_keys 64. By default
// a key without a slot is limited (the rule fires and drops), so nobody
// gets through unlimited; with on_full: allow they pass, as before. The
// Full counter counts either way.
func TestFullRateLimitFailsClosed(t *testing.T) {
	for _, onFull := range []string{"", "deny", "allow"} {
		t.Run("on_full="+onFull, func(t *testing.T) {
			clk := &ManualClock{}
			e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{{
				Name: "per-user", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "1/s", Burst: 1, MaxKeys: 64, OnFull: onFull},
				Action: "drop",
			}}})
			w := e.NewWorker()
			unlimited, passed := 0, 0
			for u := 0; u < 1000; u++ {
				n := 0
				for i := 0; i < 3; i++ {
					if decideOne(t, w, fmt.Sprintf(`{"user_id":"u%d"}`, u), netipZero).Action == ActionPass {
						n++
					}
				}
				passed += n
				if n == 3 {
					unlimited++
				}
			}
			w.Flush()
			rs := e.Stats().Rules[0]
			if rs.Limiter.Full == 0 {
				t.Fatalf("no full events counted: %+v", rs.Limiter)
			}
			if onFull == "allow" {
				if rs.OnFull != OnFullAllow || unlimited < 1000-64 {
					t.Fatalf("allow: %d users unlimited, on_full %v", unlimited, rs.OnFull)
				}
				return
			}
			if rs.OnFull != OnFullDeny || unlimited != 0 || passed > 64 {
				t.Fatalf("deny: %d users unlimited, %d events passed (at most one per slot, 64), on_full %v", unlimited, passed, rs.OnFull)
			}
			if rs.Limiter.Limited != 3000-uint64(passed) || rs.Fired != 3000-uint64(passed) {
				t.Fatalf("deny: limited %d fired %d, want %d", rs.Limiter.Limited, rs.Fired, 3000-passed)
			}
		})
	}
}

// TestFullWindowFailsClosed: a window that cannot track a key fires its
// rule by default (its action applies, Value is the event alone); with
// on_full: allow it evaluates its condition on the event alone.
func TestFullWindowFailsClosed(t *testing.T) {
	for _, onFull := range []string{"deny", "allow"} {
		clk := &ManualClock{}
		e := mustEngine(t, Config{Clock: clk, Rules: []RuleSpec{{
			Name:   "velocity",
			Window: &WindowSpec{Key: "user_id", Size: 10 * time.Second, Slide: time.Second, Agg: "sum(amount)", MaxKeys: 16, OnFull: onFull},
			When:   "value > 1000", Action: "drop",
		}}})
		w := e.NewWorker()
		dropped := 0
		for u := 0; u < 200; u++ {
			d := decideOne(t, w, fmt.Sprintf(`{"user_id":"u%d","amount":5}`, u), netipZero)
			if d.Action == ActionDrop {
				dropped++
				if d.Value != 5 || d.Rule != "velocity" {
					t.Fatalf("full drop: value %v rule %q", d.Value, d.Rule)
				}
			}
		}
		w.Flush()
		ws := e.Stats().Rules[0].Window
		switch {
		case ws.Full == 0:
			t.Fatalf("%s: no full events counted", onFull)
		case onFull == "deny" && uint64(dropped) != ws.Full:
			t.Fatalf("deny: %d dropped, %d full", dropped, ws.Full)
		case onFull == "allow" && dropped != 0:
			t.Fatalf("allow: %d dropped", dropped)
		}
	}
}

func TestOnFullSpec(t *testing.T) {
	_, err := New(Config{Rules: []RuleSpec{{Name: "r", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "1/s", OnFull: "maybe"}, Action: "drop"}}})
	if err == nil || !strings.Contains(err.Error(), `on_full "maybe"`) {
		t.Fatalf("err %v", err)
	}
	for _, s := range []string{"", "deny", "allow"} {
		o, err := ParseOnFull(s)
		if err != nil || (s == "allow") != (o == OnFullAllow) {
			t.Fatalf("%q: %v %v", s, o, err)
		}
	}
}

// bigConfig has state tables of a few tens of MB.
func bigConfig(rlKeys int) Config {
	return Config{Rules: []RuleSpec{
		{Name: "per-user", RateLimit: &RateLimitSpec{Key: "user_id", Rate: "1/s", Burst: 1, MaxKeys: rlKeys}, Action: "drop"},
		{Name: "velocity", Window: &WindowSpec{Key: "user_id", Size: 60 * time.Second, Slide: time.Second, Agg: "sum(amount)", MaxKeys: 1 << 14},
			When: "value > 1000", Action: "alert"},
		{Name: "big", When: "amount > 10000", Action: "alert"},
	}}
}

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// allocated runs setup (not measured) and then f, three times, and returns
// the least that f allocated: goroutines other tests left behind can only
// add to the process-wide count, never subtract from it.
func allocated(setup, f func()) uint64 {
	least := uint64(math.MaxUint64)
	for i := 0; i < 3; i++ {
		if setup != nil {
			setup()
		}
		runtime.GC()
		before := totalAlloc()
		f()
		least = min(least, totalAlloc()-before)
	}
	return least
}

// TestMemoryExact: Validate's per-rule figures are the tables' sizes,
// equal to what Stats reports and to what New allocates.
func TestMemoryExact(t *testing.T) {
	cfg := bigConfig(1 << 20)
	mem, err := Validate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []RuleMemory{
		{Name: "per-user", Kind: "rate_limit", Keys: 1 << 20, BytesPerKey: 16, Bytes: 16 << 20},
		{Name: "velocity", Kind: "window", Keys: 1 << 14, BytesPerKey: 16 + 60*3*8, Bytes: (16 + 60*3*8) << 14},
	}
	if len(mem.Rules) != 2 || mem.Rules[0] != want[0] || mem.Rules[1] != want[1] || mem.Total != want[0].Bytes+want[1].Bytes {
		t.Fatalf("memory %+v, want %+v", mem, want)
	}
	var e *Engine
	got := allocated(nil, func() { e = mustEngine(t, cfg) })
	if got < mem.Total || got > mem.Total+256<<10 {
		t.Fatalf("New allocated %d bytes, Validate said %d", got, mem.Total)
	}
	s := e.Stats()
	if s.Rules[0].Limiter.Bytes != want[0].Bytes || s.Rules[1].Window.Bytes != want[1].Bytes {
		t.Fatalf("stats bytes %d %d", s.Rules[0].Limiter.Bytes, s.Rules[1].Window.Bytes)
	}
	// Distinct windows count their registers.
	m, err := Validate(Config{Rules: []RuleSpec{{Name: "ips", Window: &WindowSpec{Key: "user_id", Size: 60 * time.Second, Slide: 5 * time.Second, Agg: "distinct(ip)", MaxKeys: 100}, When: "value > 3", Action: "alert"}}})
	if err != nil || m.Total != 3280*128 {
		t.Fatalf("distinct: %+v %v", m, err)
	}
}

// TestMemoryBudget: a config over the budget is refused by Validate, New
// and Reload with the rule and its bytes named, before anything is
// allocated: max_keys 1<<30 is a clean error, not an out-of-memory crash.
func TestMemoryBudget(t *testing.T) {
	huge := Config{MemoryBudget: 1 << 30, Rules: []RuleSpec{{
		Name: "velocity", Window: &WindowSpec{Key: "user_id", Size: 60 * time.Second, Slide: 5 * time.Second, Agg: "sum(amount)", MaxKeys: 1 << 30},
		When: "value > 1000", Action: "alert",
	}}}
	wantBytes := uint64(16+12*3*8) << 30
	check := func(what string, err error) {
		t.Helper()
		var be *BudgetError
		if !errors.Is(err, ErrMemoryBudget) || !errors.As(err, &be) {
			t.Fatalf("%s: err %v, want a budget error", what, err)
		}
		if msg := err.Error(); !strings.Contains(msg, `rule "velocity": `+fmt.Sprint(wantBytes)+" bytes") {
			t.Fatalf("%s: %q does not name the rule and its bytes", what, msg)
		}
	}
	e := mustEngine(t, Config{MemoryBudget: 1 << 30})
	if got := allocated(nil, func() {
		mem, err := Validate(huge)
		check("Validate", err)
		if mem.Total != wantBytes {
			t.Fatalf("Validate total %d, want %d", mem.Total, wantBytes)
		}
		_, err = New(huge)
		check("New", err)
		check("Reload", e.Reload(huge))
	}); got > 1<<20 {
		t.Fatalf("refusing allocated %d bytes", got)
	}
	// Within the budget: fine.
	ok := huge
	ok.Rules = []RuleSpec{huge.Rules[0]}
	ok.Rules[0].Window = &WindowSpec{Key: "user_id", Size: 60 * time.Second, Slide: 5 * time.Second, Agg: "sum(amount)", MaxKeys: 1 << 10}
	if err := e.Reload(ok); err != nil {
		t.Fatal(err)
	}
}

// TestReloadUnchangedAllocatesNoState: reloading an unchanged config keeps
// every table (same state, nothing of their size allocated); changing one
// rule allocates that rule's table only.
func TestReloadUnchangedAllocatesNoState(t *testing.T) {
	cfg := bigConfig(1 << 20)
	mem, _ := Validate(cfg)
	e := mustEngine(t, cfg)
	w := e.NewWorker()
	if d := decideOne(t, w, `{"user_id":"u1"}`, netipZero); d.Action != ActionPass {
		t.Fatal("first event limited")
	}
	const reloads = 20
	if got := allocated(nil, func() {
		for i := 0; i < reloads; i++ {
			if err := e.Reload(bigConfig(1 << 20)); err != nil {
				t.Fatal(err)
			}
		}
	}) / reloads; got > 64<<10 {
		t.Fatalf("a reload of an unchanged config allocated %d bytes (tables: %d)", got, mem.Total)
	}
	// The state survived: u1's bucket is still empty.
	if d := decideOne(t, w, `{"user_id":"u1"}`, netipZero); d.Action != ActionDrop {
		t.Fatalf("after reloads: %v, want drop (state kept)", d.Action)
	}
	// Changing only on_full keeps the table as well.
	c2 := bigConfig(1 << 20)
	c2.Rules[0].RateLimit.OnFull = "allow"
	if got := allocated(nil, func() {
		if err := e.Reload(c2); err != nil {
			t.Fatal(err)
		}
	}); got > 64<<10 {
		t.Fatalf("on_full change allocated %d bytes", got)
	}
	if s := e.Stats(); s.Rules[0].OnFull != OnFullAllow {
		t.Fatalf("on_full not applied: %v", s.Rules[0].OnFull)
	}
	// Changing the rate limit's max_keys allocates its table, not the window's.
	if got := allocated(func() {
		if err := e.Reload(c2); err != nil { // back to 1<<20 keys
			t.Fatal(err)
		}
	}, func() {
		if err := e.Reload(bigConfig(1 << 19)); err != nil {
			t.Fatal(err)
		}
	}); got < 8<<20 || got > 8<<20+64<<10 {
		t.Fatalf("changing one rule allocated %d bytes, want its table's %d", got, 8<<20)
	}
}

// TestPrettyDatagramIsOneRecord: a datagram with one pretty-printed
// object whose nested value is an object on a line of its own (column 0)
// is one event, decided on its own fields; its compacted copy is one line
// that reads back as the same object. The same datagram broken after the
// nested line is one error for the object, and no nested line becomes an
// event nobody evaluated.
func TestPrettyDatagramIsOneRecord(t *testing.T) {
	e := mustEngine(t, Config{Rules: []RuleSpec{{Name: "big", When: "amount > 1000000", Action: "drop"}}})
	w := e.NewWorker()
	frame := "{\n  \"user_id\": \"attacker\",\n  \"amount\": 5,\n  \"note\":\n{\"user_id\":\"victim\",\"amount\":5000000,\"event_type\":\"payment\"}\n}\n"
	ds := w.Process([]byte(frame), netipZero)
	if len(ds) != 1 || ds[0].Err != DecodeOK || ds[0].Key != "attacker" || ds[0].Action != ActionPass {
		t.Fatalf("decisions %v %q", errsOf(ds), rawsOf(ds))
	}
	line := AppendCompact(nil, ds[0].Raw)
	if bytes.ContainsAny(line, "\r\n") {
		t.Fatalf("compact copy spans lines: %q", line)
	}
	var a, b map[string]any
	if err := json.Unmarshal(line, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ds[0].Raw, &b); err != nil || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("compact copy %s differs from %s", line, ds[0].Raw)
	}
	if want := `{"user_id":"attacker","amount":5,"note":{"user_id":"victim","amount":5000000,"event_type":"payment"}}`; string(line) != want {
		t.Fatalf("compact %s, want %s", line, want)
	}
	// Broken after the nested line: one reject, no event.
	broken := "{\n  \"user_id\": \"attacker\",\n  \"note\":\n{\"user_id\":\"victim\",\"amount\":5000000}\n  oops\n}\n"
	ds = w.Process([]byte(broken), netipZero)
	if len(ds) != 1 || ds[0].Err != ErrInvalidJSON {
		t.Fatalf("broken: decisions %v %q", errsOf(ds), rawsOf(ds))
	}
	// Broken before it: after the error the decoder resumes at the next
	// line that starts in column 0 (NDJSON), so the nested line is decoded
	// as an event of its own, and the rules decide it like any other; the
	// lone closing brace is one more reject. Nothing is passed undecided.
	early := "{\n  \"user_id\": \"attacker\",\n  \"note\": oops\n{\"user_id\":\"victim\",\"amount\":5000000}\n}\n"
	ds = w.Process([]byte(early), netipZero)
	if len(ds) != 3 || ds[0].Err != ErrInvalidJSON || ds[1].Err != DecodeOK || ds[1].Key != "victim" ||
		ds[1].Action != ActionDrop || ds[1].Rule != "big" || ds[2].Err != ErrInvalidJSON {
		t.Fatalf("broken early: decisions %v %q", errsOf(ds), rawsOf(ds))
	}
}

func TestAppendCompact(t *testing.T) {
	for in, want := range map[string]string{
		`{ "a" : [ 1 , 2 ] , "b" : { } }`:                           `{"a":[1,2],"b":{}}`,
		"{\n\t\"s\": \" keep  \\\" spaces\\n \",\r\n \"t\":true\n}": `{"s":" keep  \" spaces\n ","t":true}`,
		`"x\\"`:                      `"x\\"`,
		" 12.5e3 ":                   `12.5e3`,
		"{\"bad\":\"a\nb\rc\\\nd\"}": `{"bad":"a\nb\rc\\\nd"}`, // invalid: raw CR/LF escaped
		"{\"unterminated\":\"a\n":    `{"unterminated":"a\n`,
		"":                           ``,
	} {
		got := AppendCompact(nil, []byte(in))
		if string(got) != want {
			t.Errorf("AppendCompact(%q) = %q, want %q", in, got, want)
		}
		if bytes.ContainsAny(got, "\r\n") {
			t.Errorf("AppendCompact(%q) spans lines", in)
		}
		one := AppendOneLine(nil, []byte(in))
		if bytes.ContainsAny(one, "\r\n") || (!strings.ContainsAny(in, "\r\n") && string(one) != in) {
			t.Errorf("AppendOneLine(%q) = %q", in, one)
		}
	}
	raw := []byte("{\n  \"user_id\": \"u\\u002d1\",\n  \"meta\": {\"a\": [1, 2]}\n}")
	buf := make([]byte, 0, len(raw))
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendCompact(buf[:0], raw)
		buf = AppendOneLine(buf[:0], raw)
	}); n != 0 {
		t.Fatalf("%v allocs, want 0", n)
	}
}
