package sink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/kafka"
	"github.com/xgate/xgate/gateway/sink/nats"
	"github.com/xgate/xgate/gateway/sink/output"
)

// ---------------------------------------------------------------------------
// helpers

func newTestSinks(t testing.TB, specs []Spec, workers int) *Sinks {
	t.Helper()
	s, err := New(specs, workers)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

func closeSinks(t testing.TB, s *Sinks) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func event(i int) []byte {
	return fmt.Appendf(nil, `{"event_id":"e-%06d","user_id":"u-%d","amount":%d.25,"currency":"USD","event_type":"payment"}`, i, i%97, i%5000)
}

func passed(raw []byte) *engine.Decision {
	return &engine.Decision{Raw: raw, Action: engine.ActionPass}
}

// pipePath returns a path that opens the write end of a new pipe, the read
// end, and the test's own write end (close it so that the reader sees EOF
// once the sink has closed its own). Both are closed at cleanup too.
func pipePath(t *testing.T) (string, *os.File, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return fmt.Sprintf("/proc/self/fd/%d", w.Fd()), r, w
}

// countLines reads r until EOF, counting newline-terminated lines.
func countLines(r io.Reader) (lines int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 && b[len(b)-1] == '\n' {
			lines++
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return lines, nil
		}
		if err != nil {
			return lines, err
		}
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// routing and formats

func TestSinkRouting(t *testing.T) {
	pretty := []byte("{\n  \"event_id\": \"e-pretty\",\n\t\"amount\": 5\r\n}")
	decisions := []engine.Decision{
		{Raw: event(1), Action: engine.ActionPass},
		{Raw: pretty, Action: engine.ActionPass, Rule: "allow-list"},
		{Raw: event(2), Action: engine.ActionAlert, Rule: "big-payment", Value: 51234.5},
		{Raw: event(3), Action: engine.ActionDrop, Rule: "per-user-rate"},
		{Raw: event(4), Action: engine.ActionBlock, Rule: "flood-source", Block: 30 * time.Second},
		{Raw: []byte(`{"amount": 12,`), Err: engine.ErrInvalidJSON},
		{Raw: []byte(`{"amount":"12"}`), Err: engine.ErrWrongType},
	}
	wants := map[string]func(d *engine.Decision) bool{
		"passed": func(d *engine.Decision) bool {
			return d.Err == engine.DecodeOK && (d.Action == engine.ActionPass || d.Action == engine.ActionAlert)
		},
		"alerts": func(d *engine.Decision) bool { return d.Err == engine.DecodeOK && d.Action == engine.ActionAlert },
		"dropped": func(d *engine.Decision) bool {
			return d.Err == engine.DecodeOK && (d.Action == engine.ActionDrop || d.Action == engine.ActionBlock)
		},
		"rejects": func(d *engine.Decision) bool { return d.Err != engine.DecodeOK },
		"all":     func(*engine.Decision) bool { return true },
	}
	dir := t.TempDir()
	type tc struct{ what, format, path string }
	var cases []tc
	var specs []Spec
	for _, what := range []string{"passed", "alerts", "dropped", "rejects", "all"} {
		for _, format := range []string{"", "raw", "annotated"} {
			c := tc{what, format, filepath.Join(dir, what+"-"+format+".ndjson")}
			cases = append(cases, c)
			specs = append(specs, Spec{Type: "file", Path: c.path, What: what, Format: format})
		}
	}
	s := newTestSinks(t, specs, 1)
	w := s.Writer(0)
	for i := range decisions {
		w.Add(&decisions[i])
	}
	// Raw is a view into a buffer the worker reuses: scribble over it after
	// Add to prove the sinks copied it.
	keep := make([][]byte, len(decisions))
	for i := range decisions {
		keep[i] = bytes.Clone(decisions[i].Raw)
		for j := range decisions[i].Raw {
			decisions[i].Raw[j] = 'X'
		}
		decisions[i].Raw = keep[i]
	}
	w.FlushAll()
	closeSinks(t, s)

	for _, c := range cases {
		t.Run(c.what+"/"+c.format, func(t *testing.T) {
			got, err := os.ReadFile(c.path)
			if err != nil {
				t.Fatal(err)
			}
			var sel []*engine.Decision
			for i := range decisions {
				if wants[c.what](&decisions[i]) {
					sel = append(sel, &decisions[i])
				}
			}
			format := c.format
			if format == "" {
				format = map[bool]string{true: "raw", false: "annotated"}[c.what == "passed"]
			}
			if format == "raw" {
				// One record per line: each record is the event's bytes on
				// one line (compacted when it spanned lines).
				var want []byte
				for _, d := range sel {
					want = append(engine.AppendOneLine(want, d.Raw), '\n')
				}
				if n := bytes.Count(got, []byte("\n")); n != len(sel) {
					t.Errorf("%d lines for %d records", n, len(sel))
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("raw file:\n got %q\nwant %q", got, want)
				}
				return
			}
			lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
			if len(got) == 0 {
				lines = nil
			}
			if len(lines) != len(sel) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(sel), got)
			}
			for i, line := range lines {
				checkAnnotated(t, line, sel[i])
			}
		})
	}
}

func checkAnnotated(t *testing.T, line string, d *engine.Decision) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("line %q is not JSON: %v", line, err)
	}
	if d.Err != engine.DecodeOK {
		want := map[string]any{"error": d.Err.String(), "raw": string(d.Raw)}
		if !reflect.DeepEqual(m, want) {
			t.Fatalf("reject line %s, want %v", line, want)
		}
		return
	}
	var ev any
	if err := json.Unmarshal(d.Raw, &ev); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"verdict": d.Action.String(), "rule": d.Rule, "value": d.Value, "event": ev}
	if d.Action == engine.ActionBlock {
		want["block_ms"] = float64(d.Block.Milliseconds())
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("line %s\nwant %v", line, want)
	}
}

// expectJSONString is what a JSON decoder must read back from
// appendJSONString(s): s with every invalid byte replaced by U+FFFD.
func expectJSONString(s []byte) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.Write(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

func TestSinkRejectEscaping(t *testing.T) {
	inputs := [][]byte{
		[]byte("line one\nline two\r\n"),
		[]byte("\xff\xfe{\"a\":\xc3}"),
		[]byte("quote \" backslash \\ slash / tab \t nul \x00 unit \x1f del \x7f"),
		[]byte("é € 😀 \u2028 \u2029 end"),
		[]byte("\xed\xa0\x80 surrogate, \xf4\x90\x80\x80 beyond U+10FFFF, \xe2\x82 truncated"),
		{},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		b := make([]byte, rng.IntN(200))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		inputs = append(inputs, b)
	}
	path := filepath.Join(t.TempDir(), "rejects.ndjson")
	s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "rejects"}}, 1)
	w := s.Writer(0)
	for _, in := range inputs {
		w.Add(&engine.Decision{Raw: in, Err: engine.ErrInvalidUTF8})
	}
	long := bytes.Repeat([]byte("\"\n"), sinkRejectMax) // 8 KiB: truncated to 4 KiB
	w.Add(&engine.Decision{Raw: long, Err: engine.ErrOversized})
	w.FlushAll()
	closeSinks(t, s)

	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
	if len(lines) != len(inputs)+1 {
		t.Fatalf("%d lines for %d records: a raw newline escaped unescaped", len(lines), len(inputs)+1)
	}
	for i, in := range inputs {
		var m struct{ Error, Raw string }
		if err := json.Unmarshal([]byte(lines[i]), &m); err != nil {
			t.Fatalf("input %q: line %q is not JSON: %v", in, lines[i], err)
		}
		if want := expectJSONString(in); m.Raw != want || m.Error != "invalid_utf8" {
			t.Fatalf("input %q: got %+v, want raw %q", in, m, want)
		}
	}
	var m struct {
		Error, Raw string
		Truncated  bool
	}
	if err := json.Unmarshal([]byte(lines[len(inputs)]), &m); err != nil {
		t.Fatal(err)
	}
	if m.Error != "oversized" || !m.Truncated || m.Raw != string(long[:sinkRejectMax]) {
		t.Fatalf("oversized reject: error %q truncated %v raw %d bytes", m.Error, m.Truncated, len(m.Raw))
	}
}

func TestSinkJSONFloat(t *testing.T) {
	for _, v := range []float64{0, 1, -1, 51234.5, 1e20, 1e21, 1.5e300, 1e-6, 1.2345678901234567e-6, 1e-7, -1.7976931348623157e308} {
		b := appendJSONFloat(nil, v)
		if len(b) > 26 {
			t.Errorf("%v: %d bytes, bound says 26", v, len(b))
		}
		var got float64
		if err := json.Unmarshal(b, &got); err != nil || got != v {
			t.Errorf("%v → %s → %v, %v", v, b, got, err)
		}
	}
}

// ---------------------------------------------------------------------------
// concurrency

func TestSinkConcurrentWorkers(t *testing.T) {
	const workers, per = 4, 20000
	dir := t.TempDir()
	raw, all := filepath.Join(dir, "passed.ndjson"), filepath.Join(dir, "all.ndjson")
	s := newTestSinks(t, []Spec{
		{Type: "file", Path: raw, What: "passed", OnFull: "block", BlockTimeout: time.Minute, Buffer: 128 << 10},
		{Type: "file", Path: all, What: "all", OnFull: "block", BlockTimeout: time.Minute, Buffer: 64 << 10},
	}, workers)
	var want atomic.Uint64 // order-independent checksum: sum of line hashes
	var wg sync.WaitGroup
	for wk := range workers {
		wg.Go(func() {
			sw := s.Writer(wk)
			buf := make([]byte, 0, 256) // reused like a receive buffer
			var sum uint64
			for i := range per {
				buf = fmt.Appendf(buf[:0], `{"event_id":"w%d-%06d","amount":%d}`, wk, i, i)
				d := engine.Decision{Raw: buf, Action: engine.ActionPass}
				if i%10 == 0 {
					d.Action, d.Rule, d.Value = engine.ActionAlert, "r", float64(i)
				}
				sw.Add(&d)
				h := fnv.New64a()
				h.Write(buf)
				sum += h.Sum64()
				if i%64 == 63 {
					sw.FlushAll()
				}
			}
			sw.FlushAll()
			want.Add(sum)
		})
	}
	wg.Wait()
	closeSinks(t, s)
	for _, st := range s.Stats() {
		if st.Records != workers*per || st.Dropped != 0 || st.Errors != 0 {
			t.Errorf("stats %+v, want %d records", st, workers*per)
		}
	}

	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := make(map[string]bool, workers*per)
	last := make([]int, workers)
	for i := range last {
		last[i] = -1
	}
	var sum uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		h := fnv.New64a()
		h.Write(line)
		sum += h.Sum64()
		var ev struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if seen[ev.EventID] {
			t.Fatalf("%s twice", ev.EventID)
		}
		seen[ev.EventID] = true
		var wk, i int
		fmt.Sscanf(ev.EventID, "w%d-%d", &wk, &i)
		if i <= last[wk] {
			t.Fatalf("worker %d: record %d after %d: a worker's records must stay in order", wk, i, last[wk])
		}
		last[wk] = i
	}
	if len(seen) != workers*per {
		t.Fatalf("%d distinct records, want %d", len(seen), workers*per)
	}
	if sum != want.Load() {
		t.Fatalf("checksum %x, want %x", sum, want.Load())
	}
	b, _ := os.ReadFile(all)
	if n := bytes.Count(b, []byte("\n")); n != workers*per {
		t.Fatalf("all: %d lines, want %d", n, workers*per)
	}
}

// ---------------------------------------------------------------------------
// slow sinks: drop, backpressure, memory

// TestSinkFlushCoalesces: a worker that flushes after every record while
// the writer is stuck keeps filling its current slab instead of handing
// over one nearly empty slab per batch, so a stall of the writer costs no
// records until the buffer is really full.
func TestSinkFlushCoalesces(t *testing.T) {
	hold := sinkMaxHold
	sinkMaxHold = time.Hour // this test is about the fill rule, not the time cap
	defer func() { sinkMaxHold = hold }()
	path, r, pw := pipePath(t)
	defer r.Close()
	s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "passed", Buffer: 256 << 10}}, 1)
	w := s.Writer(0)
	ev := event(1)
	// Two full slabs: the writer blocks on the full pipe (64 KiB) with
	// them; two of the four slabs stay free.
	for i := 0; i < 1000; i++ { // ~110 KB: two slabs
		w.Add(passed(ev))
	}
	w.FlushAll()
	time.Sleep(50 * time.Millisecond)
	before := s.Stats()[0]
	if before.Dropped != 0 {
		t.Fatalf("setup dropped: %+v", before)
	}
	// Now one record per batch: 400 records fit in the two free slabs,
	// not in 400.
	for i := 0; i < 400; i++ {
		w.Add(passed(ev))
		w.Flush()
	}
	if d := s.Stats()[0].Dropped - before.Dropped; d != 0 {
		t.Fatalf("%d records dropped with most of the buffer free: Flush handed over a slab per batch", d)
	}
	pw.Close()
	go func() { _, _ = countLines(r) }()
	closeSinks(t, s)
}

func TestSinkSlowDrops(t *testing.T) {
	path, r, pw := pipePath(t)
	s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "passed", Buffer: 16 << 10}}, 1)
	w := s.Writer(0)
	const added = 50000 // 5 MB: far beyond the pipe (64 KiB) and the slabs (16 KiB)
	ev := event(7)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	for i := range added {
		w.Add(passed(ev))
		if i%64 == 63 {
			w.FlushAll()
		}
	}
	w.FlushAll()
	runtime.ReadMemStats(&ms1)
	// Memory is bounded: nothing grows while the writer is stuck.
	if n := ms1.Mallocs - ms0.Mallocs; n > 20 {
		t.Errorf("%d allocations while adding %d records to a stuck sink", n, added)
	}
	st := s.Stats()[0]
	if st.Dropped == 0 || st.Records+st.Dropped > added {
		t.Fatalf("stuck writer: %+v", st)
	}
	// Let the writer catch up; what was not dropped arrives.
	got := make(chan int, 1)
	go func() {
		n, _ := countLines(r)
		got <- n
	}()
	closeSinks(t, s)
	st = s.Stats()[0]
	if st.Records+st.Dropped != added || st.Errors != 0 {
		t.Fatalf("Records %d + Dropped %d != added %d (%+v)", st.Records, st.Dropped, added, st)
	}
	pw.Close()
	if n := <-got; uint64(n) != st.Records {
		t.Fatalf("reader got %d lines, sink counted %d records", n, st.Records)
	}
	t.Logf("%+v", st)
}

func TestSinkBackpressure(t *testing.T) {
	path, r, pw := pipePath(t)
	s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "passed", OnFull: "block", BlockTimeout: time.Minute, Buffer: 16 << 10}}, 1)
	const added = 5000 // ~500 KB: more than the pipe and the slabs hold
	var progress atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := s.Writer(0)
		for i := range added {
			w.Add(passed(event(i)))
			progress.Store(int64(i + 1))
			if i%64 == 63 {
				w.FlushAll()
			}
		}
		w.FlushAll()
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("the worker finished although nobody reads the sink: it did not wait")
	default:
	}
	stuck := progress.Load()
	time.Sleep(100 * time.Millisecond)
	if p := progress.Load(); p != stuck || s.Stats()[0].Dropped != 0 {
		t.Fatalf("worker moved from %d to %d or dropped (%+v) while it should wait", stuck, p, s.Stats()[0])
	}
	got := make(chan int, 1)
	go func() {
		n, _ := countLines(r)
		got <- n
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("worker still blocked after the reader started")
	}
	closeSinks(t, s)
	pw.Close()
	st := s.Stats()[0]
	if n := <-got; n != added || st.Records != added || st.Dropped != 0 {
		t.Fatalf("read %d lines, stats %+v; want %d records, none dropped", n, st, added)
	}
	t.Logf("worker waited at record %d of %d", stuck, added)
}

func TestSinkBlockTimeout(t *testing.T) {
	path, r, pw := pipePath(t)
	s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "passed", OnFull: "block", BlockTimeout: 50 * time.Millisecond, Buffer: 16 << 10}}, 1)
	w := s.Writer(0)
	const added = 5000
	start := time.Now()
	for i := range added {
		w.Add(passed(event(i)))
		if i%64 == 63 {
			w.FlushAll()
		}
	}
	w.FlushAll()
	// One wait of BlockTimeout, then drops without waiting while stuck.
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("adding took %v: a stuck sink must cost one BlockTimeout, not one per record", el)
	}
	st := s.Stats()[0]
	if st.Dropped == 0 {
		t.Fatalf("no drops after the block timeout: %+v", st)
	}
	// Once the writer catches up, the worker waits again instead of dropping.
	got := make(chan int, 1)
	go func() {
		n, _ := countLines(r)
		got <- n
	}()
	waitFor(t, "the backlog to drain", 10*time.Second, func() bool {
		return s.Stats()[0].Records+s.Stats()[0].Dropped == added
	})
	s.sinks[0].blockFor = time.Minute // test-only: this phase must never time out
	for i := range added {
		w.Add(passed(event(i)))
		if i%64 == 63 {
			w.FlushAll()
		}
	}
	w.FlushAll()
	closeSinks(t, s)
	pw.Close()
	st2 := s.Stats()[0]
	if st2.Dropped != st.Dropped || st2.Records+st2.Dropped != 2*added {
		t.Fatalf("after recovery: %+v (before: %+v)", st2, st)
	}
	if n := <-got; uint64(n) != st2.Records {
		t.Fatalf("read %d lines, %d records", n, st2.Records)
	}
}

func TestSinkCloseStuck(t *testing.T) {
	path, _, _ := pipePath(t)
	// Block (briefly) so that the writer surely fills the pipe and sticks.
	s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "passed", Buffer: 16 << 10, OnFull: "block", BlockTimeout: 50 * time.Millisecond}}, 1)
	w := s.Writer(0)
	for i := range 5000 {
		w.Add(passed(event(i)))
		w.FlushAll()
	}
	if s.Stats()[0].Dropped == 0 {
		t.Fatal("the sink is not stuck")
	}
	// Close is bounded although the writer is stuck.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v (%+v)", err, s.Stats()[0])
	}
}

func TestSinkTooBig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "all", Format: "raw", Buffer: 8 << 10}}, 1)
	w := s.Writer(0)
	big := bytes.Repeat([]byte("x"), 5000) // slab is 4 KiB
	w.Add(passed(event(1)))
	w.Add(passed(big))
	w.Add(passed(event(2)))
	w.FlushAll()
	closeSinks(t, s)
	st := s.Stats()[0]
	if st.TooBig != 1 || st.Records != 2 {
		t.Fatalf("%+v", st)
	}
	b, _ := os.ReadFile(path)
	if want := string(event(1)) + "\n" + string(event(2)) + "\n"; string(b) != want {
		t.Fatalf("got %q", b)
	}
}

// ---------------------------------------------------------------------------
// rotation and fsync

func TestSinkRotation(t *testing.T) {
	for _, keep := range []int{100, 2} {
		t.Run(fmt.Sprint("keep", keep), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "events.ndjson")
			const limit = 4096
			s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "passed", RotateBytes: limit, RotateKeep: keep}}, 1)
			w := s.Writer(0)
			var stream []byte
			for i := range 600 {
				ev := event(i * 7919) // varying lengths
				if i == 300 {
					ev = append(bytes.Repeat([]byte(" "), limit+100), ev...) // larger than a file
				}
				w.Add(passed(ev))
				stream = append(append(stream, ev...), '\n')
				if i%50 == 49 {
					w.FlushAll()
				}
			}
			w.FlushAll()
			closeSinks(t, s)
			st := s.Stats()[0]

			var files []string
			for i := 1; ; i++ {
				p := fmt.Sprintf("%s.%d", path, i)
				if _, err := os.Stat(p); err != nil {
					break
				}
				files = append([]string{p}, files...) // oldest first
			}
			files = append(files, path)
			var cat []byte
			for _, p := range files {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if len(b) > limit && bytes.Count(b, []byte("\n")) > 1 {
					t.Errorf("%s: %d bytes (limit %d) with several records", p, len(b), limit)
				}
				if len(b) == 0 || b[len(b)-1] != '\n' {
					t.Errorf("%s: a record was split across files", p)
				}
				cat = append(cat, b...)
			}
			if keep == 100 {
				if len(files) != int(st.Rotations)+1 {
					t.Errorf("%d files after %d rotations", len(files), st.Rotations)
				}
				if !bytes.Equal(cat, stream) {
					t.Fatalf("concatenated files (%d bytes) differ from the stream (%d bytes)", len(cat), len(stream))
				}
				return
			}
			if len(files) != keep+1 || st.Rotations <= uint64(keep) {
				t.Fatalf("%d files (want %d), %d rotations", len(files), keep+1, st.Rotations)
			}
			if !bytes.HasSuffix(stream, cat) {
				t.Fatalf("kept files are not the end of the stream")
			}
			if _, err := os.Stat(fmt.Sprintf("%s.%d", path, keep+1)); err == nil {
				t.Fatalf("%s.%d exists: RotateKeep %d not respected", path, keep+1, keep)
			}
		})
	}
}

func TestSinkFsync(t *testing.T) {
	rounds := func(t *testing.T, s *Sinks, n int, pause time.Duration) {
		w := s.Writer(0)
		for r := range n {
			for i := range 10 {
				w.Add(passed(event(r*10 + i)))
			}
			w.FlushAll()
			waitFor(t, "records written", 5*time.Second, func() bool { return s.Stats()[0].Records == uint64(r*10+10) })
			time.Sleep(pause)
		}
	}
	spec := func(t *testing.T, fsync string) []Spec {
		return []Spec{{Type: "file", Path: filepath.Join(t.TempDir(), "f"), What: "passed", Fsync: fsync}}
	}
	t.Run("never", func(t *testing.T) {
		s := newTestSinks(t, spec(t, "never"), 1)
		rounds(t, s, 20, 0)
		closeSinks(t, s)
		if st := s.Stats()[0]; st.Fsyncs != 0 {
			t.Fatalf("%+v", st)
		}
	})
	t.Run("always", func(t *testing.T) {
		s := newTestSinks(t, spec(t, "always"), 1)
		rounds(t, s, 20, 0)
		// Every round was written (and fsynced) before the next was added.
		waitFor(t, "fsyncs", 5*time.Second, func() bool { return s.Stats()[0].Fsyncs >= 20 })
		closeSinks(t, s)
		if st := s.Stats()[0]; st.Fsyncs != 20 || st.Errors != 0 {
			t.Fatalf("want exactly one fsync per round: %+v", st)
		}
	})
	t.Run("interval", func(t *testing.T) {
		s := newTestSinks(t, spec(t, "interval 50ms"), 1)
		start := time.Now()
		rounds(t, s, 40, 10*time.Millisecond) // ≥ 400ms of writing
		el := time.Since(start)
		closeSinks(t, s) // may add one
		st := s.Stats()[0]
		most := uint64(el/(50*time.Millisecond)) + 2
		if st.Fsyncs < 2 || st.Fsyncs > most {
			t.Fatalf("%d fsyncs in %v at a 50ms interval, want 2..%d", st.Fsyncs, el, most)
		}
	})
	t.Run("interval close", func(t *testing.T) {
		s := newTestSinks(t, spec(t, "interval 1h"), 1)
		rounds(t, s, 3, 0)
		if st := s.Stats()[0]; st.Fsyncs != 0 {
			t.Fatalf("fsync before the interval: %+v", st)
		}
		closeSinks(t, s)
		if st := s.Stats()[0]; st.Fsyncs != 1 {
			t.Fatalf("Close must fsync what was written: %+v", st)
		}
	})
	t.Run("interval idle", func(t *testing.T) {
		s := newTestSinks(t, spec(t, "interval 20ms"), 1)
		rounds(t, s, 1, 0)
		// The data is synced by the idle tick, without more writes or Close.
		waitFor(t, "an idle fsync", 5*time.Second, func() bool { return s.Stats()[0].Fsyncs == 1 })
		time.Sleep(100 * time.Millisecond)
		closeSinks(t, s)
		if st := s.Stats()[0]; st.Fsyncs != 1 {
			t.Fatalf("clean file synced again: %+v", st)
		}
	})
}

// ---------------------------------------------------------------------------
// Close

func TestSinkCloseDrains(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "passed", OnFull: "block", BlockTimeout: time.Minute}}, 2)
	const per = 10000
	for wk := range 2 {
		w := s.Writer(wk)
		for i := range per {
			w.Add(passed(event(i)))
		}
		w.FlushAll()
	}
	closeSinks(t, s) // right away: the writer has a backlog
	b, _ := os.ReadFile(path)
	if n := bytes.Count(b, []byte("\n")); n != 2*per {
		t.Fatalf("%d lines after Close, want %d", n, 2*per)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSinkCloseDeadline(t *testing.T) {
	path, _, _ := pipePath(t)
	file := filepath.Join(t.TempDir(), "fine")
	s := newTestSinks(t, []Spec{
		{Type: "file", Path: file, What: "passed", OnFull: "block", BlockTimeout: time.Minute},
		{Type: "file", Path: path, What: "passed"}, // nobody reads
	}, 1)
	w := s.Writer(0)
	for i := range 20000 {
		w.Add(passed(event(i)))
		if i%64 == 63 {
			w.FlushAll()
		}
	}
	w.FlushAll()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Close(ctx)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Close took %v with a 200ms deadline", el)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Close: %v; want the deadline error naming %s", err, path)
	}
	// The stuck writer was released (its file closed under it) and ends.
	waitFor(t, "the stuck writer to end", 5*time.Second, func() bool {
		select {
		case <-s.sinks[1].done:
			return true
		default:
			return false
		}
	})
	st := s.Stats()
	if st[0].Records != 20000 {
		t.Fatalf("healthy sink: %+v", st[0])
	}
	if st[1].Failed == 0 || st[1].Records+st[1].Dropped+st[1].Failed != 20000 {
		t.Fatalf("stuck sink does not add up: %+v", st[1])
	}
}

// ---------------------------------------------------------------------------
// UDP

func TestSinkUDP(t *testing.T) {
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.LocalAddr().String()
	s := newTestSinks(t, []Spec{
		{Type: "udp", Address: addr, What: "passed", OnFull: "block"},
		{Type: "udp", Address: addr, What: "alerts"},
	}, 1)
	const n = 200
	// Read while sending: a loopback socket's receive buffer holds only a
	// few hundred small datagrams.
	ln.SetReadBuffer(4 << 20)
	type result struct {
		raws      [][]byte
		annotated []string
		err       error
	}
	res := make(chan result, 1)
	go func() {
		var r result
		ln.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64<<10)
		for len(r.raws)+len(r.annotated) < n+1 {
			k, err := ln.Read(buf)
			if err != nil {
				r.err = fmt.Errorf("after %d datagrams: %w", len(r.raws)+len(r.annotated), err)
				break
			}
			if bytes.HasPrefix(buf[:k], []byte(`{"verdict"`)) {
				r.annotated = append(r.annotated, string(buf[:k]))
			} else {
				r.raws = append(r.raws, bytes.Clone(buf[:k]))
			}
		}
		res <- r
	}()
	w := s.Writer(0)
	for i := range n {
		d := passed(event(i))
		if i == n-1 {
			d.Action, d.Rule, d.Value = engine.ActionAlert, "big-payment", 51234.5
		}
		w.Add(d)
		if i%16 == 15 {
			w.FlushAll()
		}
	}
	w.FlushAll()
	closeSinks(t, s)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	raws, annotated := r.raws, r.annotated
	for i, r := range raws {
		if !bytes.Equal(r, event(i)) {
			t.Fatalf("datagram %d = %q, want %q", i, r, event(i))
		}
	}
	if len(annotated) != 1 {
		t.Fatalf("%d alert datagrams", len(annotated))
	}
	checkAnnotated(t, annotated[0], &engine.Decision{Raw: event(n - 1), Action: engine.ActionAlert, Rule: "big-payment", Value: 51234.5})
	if st := s.Stats(); st[0].Records != n || st[1].Records != 1 || st[0].Name != "udp:"+addr {
		t.Fatalf("%+v", st)
	}
}

func TestSinkUDPErrorsNotFatal(t *testing.T) {
	// A port nobody listens on: the kernel answers with ICMP port
	// unreachable, and later sends fail with ECONNREFUSED.
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.LocalAddr().String()
	ln.Close()
	s := newTestSinks(t, []Spec{{Type: "udp", Address: addr, What: "passed"}}, 1)
	w := s.Writer(0)
	const n = 100
	for i := range n {
		w.Add(passed(event(i)))
		w.FlushAll()
		time.Sleep(100 * time.Microsecond)
	}
	closeSinks(t, s)
	st := s.Stats()[0]
	if st.Errors == 0 || st.Records+st.Failed+st.Dropped != n {
		t.Fatalf("%+v", st)
	}
}

// ---------------------------------------------------------------------------
// allocations, validation

func TestSinkAddZeroAllocs(t *testing.T) {
	dir := t.TempDir()
	s := newTestSinks(t, []Spec{
		{Type: "file", Path: filepath.Join(dir, "p"), What: "passed"},
		{Type: "file", Path: filepath.Join(dir, "a"), What: "all", Fsync: "always"},
		{Type: "file", Path: filepath.Join(dir, "r"), What: "rejects", OnFull: "block"},
	}, 1)
	w := s.Writer(0)
	ds := []engine.Decision{
		{Raw: event(1), Action: engine.ActionPass},
		{Raw: event(2), Action: engine.ActionAlert, Rule: "big-payment", Value: 1.5},
		{Raw: event(3), Action: engine.ActionBlock, Rule: "flood", Block: time.Second},
		{Raw: []byte("\xff\"bad\n"), Err: engine.ErrInvalidJSON},
	}
	batch := func() {
		for i := range 64 {
			w.Add(&ds[i%len(ds)])
		}
		w.FlushAll()
	}
	for range 100 {
		batch()
	}
	if n := testing.AllocsPerRun(500, batch); n != 0 {
		t.Fatalf("%v allocs per batch of 64 Add + Flush", n)
	}

	// Keyed records (Kafka, NATS), on the worker's side: the key looked
	// up, the header, rule, key, receive time and event copied.
	ks := keyedFileSinks(t, filepath.Join(dir, "k"))
	kw := ks.Writer(0)
	ds = append(ds, engine.Decision{Raw: []byte(`{"amount":1,"user_id":12345}`), Action: engine.ActionPass},
		engine.Decision{Raw: []byte(`{"nested":{"user_id":"x"}}`), Action: engine.ActionDrop, Rule: "r"})
	rx := monotonicNs()
	batch = func() {
		for i := range 64 {
			kw.AddAt(&ds[i%len(ds)], rx*uint64(i&1))
		}
		kw.Flush()
	}
	for range 100 {
		batch()
	}
	if n := testing.AllocsPerRun(500, batch); n != 0 {
		t.Fatalf("keyed: %v allocs per batch of 64 AddAt + Flush", n)
	}

	// Metadata (every field, raw and annotated, with clash checks) and
	// routing by rule: still nothing allocated per record.
	all := MetaSpec{Src: true, RxTime: true, Queue: true, GatewayID: true, Rule: true, Verdict: true}
	ms := newTestSinks(t, []Spec{
		{Name: "raw", Type: "file", Path: filepath.Join(dir, "m-raw"), What: "all", Format: "raw", Fsync: "never", Meta: all},
		{Name: "ann", Type: "file", Path: filepath.Join(dir, "m-ann"), What: "alerts", Fsync: "never", Meta: all},
		{Name: "routed", Type: "file", Path: filepath.Join(dir, "m-routed"), What: "routed", Fsync: "never", Meta: MetaSpec{Src: true}},
	}, 1)
	tbl, err := ms.Routes(map[string][]string{"flood": {"routed", "ann"}, "big-payment": {"routed"}})
	if err != nil {
		t.Fatal(err)
	}
	ms.SetRoutes(tbl)
	ks.sinks[0].metaOn, ks.sinks[0].metaWant = true, all.bits()
	mw := ms.Writer(0)
	ds = append(ds, engine.Decision{Raw: []byte(`{"_src":1,"\u005f_src":2,"n":{"_queue":[1,"x"]}}`), Action: engine.ActionAlert, Rule: "big-payment"})
	origins := []Origin{
		{Src: netip.MustParseAddrPort("198.18.0.2:40000"), RxNs: rx, Queue: 1},
		{Src: netip.MustParseAddrPort("[2001:db8::7]:9"), Queue: 0},
		{Queue: -1},
	}
	batch = func() {
		for i := range 64 {
			mw.AddFrom(&ds[i%len(ds)], &origins[i%len(origins)])
			// (Not the last event: gjson unescapes an escaped member name
			// while it looks for the key, a known allocation of Add.)
			kw.AddFrom(&ds[i%(len(ds)-1)], &origins[i%len(origins)])
		}
		mw.Flush()
		kw.Flush()
	}
	for range 100 {
		batch()
	}
	if n := testing.AllocsPerRun(500, batch); n != 0 {
		t.Fatalf("meta and routes: %v allocs per batch of 64 AddFrom + Flush", n)
	}
}

// keyedFileSinks returns sinks whose one sink encodes keyed records, as
// Kafka and NATS sinks do, but writes them to a file: the worker's side of
// a keyed sink without a broker.
func keyedFileSinks(t testing.TB, path string) *Sinks {
	s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "all", Fsync: "never"}}, 1)
	s.sinks[0].keyed, s.sinks[0].keyPath = true, gjsonPath("user_id")
	s.writers[0].timed = true
	return s
}

// TestSinkKeyedRecord: what Add writes for a keyed sink, read back as the
// Kafka and NATS outputs read it.
func TestSinkKeyedRecord(t *testing.T) {
	s := keyedFileSinks(t, filepath.Join(t.TempDir(), "k"))
	w := s.Writer(0)
	for _, c := range []struct {
		name    string
		d       engine.Decision
		path    string
		key     string
		verdict string
		rule    string
		noKey   bool
		xdp     bool
	}{
		{name: "string key", d: engine.Decision{Raw: []byte(`{"user_id":"u-1","amount":5}`), Action: engine.ActionPass}, key: "u-1", verdict: "pass"},
		{name: "number key as written", d: engine.Decision{Raw: []byte(`{"user_id":1.50e3}`), Action: engine.ActionAlert, Rule: "big"}, key: "1.50e3", verdict: "alert", rule: "big", xdp: true},
		{name: "escaped key", d: engine.Decision{Raw: []byte(`{"user_id":"a\"\u00e9\n"}`), Action: engine.ActionDrop, Rule: "r"}, key: "a\"\u00e9\n", verdict: "drop", rule: "r"},
		{name: "first of duplicates", d: engine.Decision{Raw: []byte(`{"user_id":"first","user_id":"second"}`), Action: engine.ActionBlock, Rule: "b"}, key: "first", verdict: "block", rule: "b"},
		{name: "no key", d: engine.Decision{Raw: []byte(`{"amount":5}`), Action: engine.ActionPass}, noKey: true, verdict: "pass"},
		{name: "object key is none", d: engine.Decision{Raw: []byte(`{"user_id":{"a":1}}`), Action: engine.ActionPass}, noKey: true, verdict: "pass"},
		{name: "nested path", d: engine.Decision{Raw: []byte(`{"user":{"id":"n-1"}}`), Action: engine.ActionPass}, path: "user.id", key: "n-1", verdict: "pass"},
		{name: "gjson syntax in a path is literal", d: engine.Decision{Raw: []byte(`{"!true":"lit","a":"b"}`), Action: engine.ActionPass}, path: "!true", key: "lit", verdict: "pass"},
		{name: "reject", d: engine.Decision{Raw: []byte(`{"user_id":"u-1"`), Err: engine.ErrInvalidJSON, Action: engine.ActionDrop}, noKey: true, verdict: "reject", rule: "invalid_json"},
		// The engine's key (Decision.Key) is taken as it is, not read again.
		{name: "engine key", d: engine.Decision{Raw: []byte(`{"user_id":"u-1"}`), Key: "from-engine", Action: engine.ActionPass}, key: "from-engine", verdict: "pass"},
		{name: "engine key of a reject is ignored", d: engine.Decision{Raw: []byte(`{"user_id":"u-1"`), Key: "k", Err: engine.ErrInvalidJSON, Action: engine.ActionDrop}, noKey: true, verdict: "reject", rule: "invalid_json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := c.path
			if path == "" {
				path = "user_id"
			}
			s.sinks[0].keyPath = gjsonPath(path)
			var rx uint64
			want := time.Now().UnixNano()
			if c.xdp {
				rx = monotonicNs() - uint64(time.Second)
				want -= int64(time.Second)
			}
			b := make([]byte, 0, keyedBound(&c.d, classOf(&c.d)))
			b = s.sinks[0].encodeKeyed(b, &c.d, classOf(&c.d), &recOrigin{o: &Origin{RxNs: rx, Queue: -1}, rxWall: w.rxWall(rx)})
			if len(b) > cap(b) || cap(b) != keyedBound(&c.d, classOf(&c.d)) {
				t.Fatalf("encoded %d bytes beyond the bound %d", len(b), keyedBound(&c.d, classOf(&c.d)))
			}
			var r output.Record
			output.Parse(b, &r)
			if c.noKey != (r.Key == nil) || string(r.Key) != c.key {
				t.Errorf("key %q (nil %v), want %q", r.Key, r.Key == nil, c.key)
			}
			if v := string(output.Verdicts[r.Verdict]); v != c.verdict || string(r.Rule) != c.rule || !bytes.Equal(r.Value, c.d.Raw) {
				t.Errorf("verdict %s rule %q value %q", v, r.Rule, r.Value)
			}
			if txt, err := strconv.ParseInt(string(r.RxText), 10, 64); err != nil || txt != r.RxNs ||
				r.RxNs < want-int64(time.Second/2) || r.RxNs > want+int64(time.Second/2) {
				t.Errorf("rx %d %q, want about %d", r.RxNs, r.RxText, want)
			}
		})
	}
}

func TestSinkSpecErrors(t *testing.T) {
	dir := t.TempDir()
	ok := Spec{Type: "file", Path: filepath.Join(dir, "ok"), What: "passed"}
	for _, c := range []struct {
		spec  Spec
		field string
	}{
		{Spec{What: "all"}, "type"},
		{Spec{Type: "kafak", What: "all"}, "type"},
		{Spec{Type: "kafka", What: "all", Kafka: kafka.Config{Brokers: []string{"b:1"}, Topic: "t"}}, "key_path"},
		{Spec{Type: "kafka", What: "all", KeyPath: "a.*", Kafka: kafka.Config{Brokers: []string{"b:1"}, Topic: "t"}}, "key_path"},
		{Spec{Type: "kafka", What: "all", KeyPath: "k", Format: "raw", Kafka: kafka.Config{Brokers: []string{"b:1"}, Topic: "t"}}, "format"},
		{Spec{Type: "kafka", What: "all", KeyPath: "k", Kafka: kafka.Config{Topic: "t"}}, "brokers"},
		{Spec{Type: "kafka", What: "all", KeyPath: "k", Kafka: kafka.Config{Brokers: []string{"b:1"}}}, "topic"},
		{Spec{Type: "kafka", What: "all", KeyPath: "k", DeliveryTimeout: time.Millisecond, Kafka: kafka.Config{Brokers: []string{"b:1"}, Topic: "t"}}, "delivery_timeout"},
		{Spec{Type: "kafka", What: "all", KeyPath: "k", GatewayID: "a b", Kafka: kafka.Config{Brokers: []string{"b:1"}, Topic: "t"}}, "gateway_id"},
		{Spec{Type: "kafka", What: "all", KeyPath: "k", Kafka: kafka.Config{Brokers: []string{"b:1"}, Topic: "t"}, NATS: nats.Config{Stream: "S"}}, "stream"},
		{Spec{Type: "nats", What: "all", KeyPath: "k", NATS: nats.Config{URLs: []string{"nats://x:1"}, Stream: "S"}}, "subject"},
		{Spec{Type: "nats", What: "all", KeyPath: "k", NATS: nats.Config{URLs: []string{"nats://x:1"}, Subject: "a.{key}"}}, "stream"},
		{Spec{Type: "stdout", What: "all", KeyPath: "k"}, "key_path"},
		{Spec{Type: "stdout", What: "all", Kafka: kafka.Config{Topic: "t"}}, "topic"},
		{Spec{Type: "udp", Address: "127.0.0.1:1", What: "all", TLS: TLS{Enable: true}}, "tls"},
		{Spec{Type: "file", What: "all"}, "path"},
		{Spec{Type: "file", Path: ok.Path, What: "all"}, "path"}, // same file as sinks[0]
		{Spec{Type: "stdout", What: "all", Path: "x"}, "path"},
		{Spec{Type: "udp", What: "all"}, "address"},
		{Spec{Type: "file", Path: filepath.Join(dir, "a"), Address: "127.0.0.1:1", What: "all"}, "address"},
		{Spec{Type: "stdout"}, "what"},
		{Spec{Type: "stdout", What: "everything"}, "what"},
		{Spec{Type: "stdout", What: "all", Format: "xml"}, "format"},
		{Spec{Type: "file", Path: filepath.Join(dir, "b"), What: "all", Fsync: "sometimes"}, "fsync"},
		{Spec{Type: "stdout", What: "all", RotateBytes: 1 << 20}, "rotate_bytes"},
		{Spec{Type: "file", Path: filepath.Join(dir, "c"), What: "all", RotateBytes: -1}, "rotate_bytes"},
		{Spec{Type: "stdout", What: "all", OnFull: "wait"}, "on_full"},
		{Spec{Type: "stdout", What: "all", Buffer: 100}, "buffer"},
		{Spec{Type: "stdout", What: "all", BlockTimeout: -time.Second}, "block_timeout"},
		{Spec{Type: "file", Path: filepath.Join(dir, "d"), What: "all", Fsync: "interval -1s"}, "fsync"},
		{Spec{Type: "stdout", What: "all", Fsync: "always"}, "fsync"},
		{Spec{Type: "file", Path: filepath.Join(dir, "f"), What: "all", RotateBytes: 100}, "rotate_bytes"},
		{Spec{Type: "udp", Address: "127.0.0.1:0", What: "all"}, "address"},
		{Spec{Type: "file", Path: filepath.Join(dir, "e"), What: "all", RotateKeep: -1}, "rotate_keep"},
	} {
		_, err := New([]Spec{ok, c.spec}, 1)
		var se *SpecError
		if !errors.As(err, &se) || se.Index != 1 || se.Key != c.field {
			t.Errorf("%+v: error %v, want one for sinks[1].%s", c.spec, err, c.field)
		} else if !strings.HasPrefix(err.Error(), "sinks[1]."+c.field+": ") {
			t.Errorf("message %q", err)
		}
	}
	missing := filepath.Join(dir, "no-such-dir", "events.ndjson")
	_, err := New([]Spec{ok, {Type: "file", Path: missing, What: "passed"}}, 1)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "directory must exist") || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("open error %v: want the path, the advice and ErrNotExist", err)
	}
	if _, err := New([]Spec{{Type: "udp", Address: "no-port", What: "all"}}, 1); err == nil || !strings.Contains(err.Error(), "no-port") {
		t.Fatalf("udp address error %v", err)
	}
	if _, err := New(nil, 0); err == nil {
		t.Fatal("0 workers accepted")
	}
}

func TestSinkStdoutNotClosed(t *testing.T) {
	s := newTestSinks(t, []Spec{{Type: "stdout", What: "passed"}}, 1)
	closeSinks(t, s)
	if _, err := os.Stdout.Stat(); err != nil {
		t.Fatalf("stdout closed by the sink: %v", err)
	}
	if st := s.Stats()[0]; st.Name != "stdout" {
		t.Fatalf("%+v", st)
	}
}

// TestFileSinkOpenSafely: a file sink does not follow a symbolic link at
// its path, and cuts a torn last record back to the last whole line.
func TestFileSinkOpenSafely(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "events.ndjson")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if _, err := New([]Spec{{Type: "file", Path: link, What: "all"}}, 1); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("sink on a symlink: %v, want refused", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "secret\n" {
		t.Errorf("victim changed: %q", b)
	}

	torn := filepath.Join(dir, "torn.ndjson")
	if err := os.WriteFile(torn, []byte("{\"a\":1}\n{\"user_id\":\"u26\",\"am"), 0o640); err != nil {
		t.Fatal(err)
	}
	s, err := New([]Spec{{Type: "file", Path: torn, What: "all"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()[0]
	closeSinks(t, s)
	if b, _ := os.ReadFile(torn); string(b) != "{\"a\":1}\n" || st.TornBytes != uint64(len("{\"user_id\":\"u26\",\"am")) {
		t.Errorf("after open: %q, torn %d", b, st.TornBytes)
	}
}

// TestFileSinkFullDisk: on a full file system (a small tmpfs) a write of a
// slab stops in the middle of a record. The sink counts the records that
// did not make it as failed and leaves no torn record behind: once space
// is back, the next records start on a line of their own, so every line
// of the file is one whole record, and written + failed = added.
func TestFileSinkFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	path := filepath.Join(dir, "events.ndjson")
	// The filler leaves a little more than a page: the first slab of
	// records (about 9 KiB) stops in the middle of one.
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, bytes.Repeat([]byte{'x'}, 64<<10-6<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newTestSinks(t, []Spec{{Type: "file", Path: path, What: "passed", Fsync: "never"}}, 1)
	w := s.Writer(0)
	added := 0
	add := func(n int) {
		for range n {
			w.Add(passed(event(added)))
			added++
		}
		w.FlushAll()
	}
	add(100)
	waitFor(t, "a write error", 5*time.Second, func() bool { return s.Stats()[0].Errors > 0 })
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	add(100)
	closeSinks(t, s)
	st := s.Stats()[0]
	if st.Records+st.Failed != uint64(added) || st.Failed == 0 {
		t.Errorf("written %d + failed %d, added %d (want some failed)", st.Records, st.Failed, added)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	for i, l := range lines {
		if !json.Valid(l) {
			t.Fatalf("line %d of %d is torn: %.120q", i+1, len(lines), l)
		}
	}
	if len(b) == 0 || b[len(b)-1] != '\n' || uint64(len(lines)) != st.Records {
		t.Errorf("%d lines in the file, %d records written", len(lines), st.Records)
	}
}

// TestSinkAddedFields: a decision's added fields (Decision.Extra) are
// members of the event in raw, annotated and keyed records, within the
// bound Add checks, and never in a reject.
func TestSinkAddedFields(t *testing.T) {
	extra := []byte(`,"risk_tier":"high","vip":true`)
	for _, c := range []struct {
		name, raw, want string
	}{
		{"flat", `{"user_id":"u-1","amount":5}`, `{"user_id":"u-1","amount":5,"risk_tier":"high","vip":true}`},
		{"pretty", "{\n  \"user_id\": \"u-1\"\n}", `{"user_id":"u-1","risk_tier":"high","vip":true}`},
		{"empty object", "{ }", `{ "risk_tier":"high","vip":true}`},
		// A sender's own risk_tier and vip (names enrich: adds) are cut:
		// the record has the gateway's values only.
		{"forged", `{"vip":false,"user_id":"u-1","risk_tier":"none","n":{"vip":1}}`, `{"user_id":"u-1","n":{"vip":1},"risk_tier":"high","vip":true}`},
		{"only forged", `{"risk_tier":"none"}`, `{"risk_tier":"high","vip":true}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := engine.Decision{Raw: []byte(c.raw), Action: engine.ActionAlert, Rule: "r", Extra: extra}
			raw := &sink{newline: true, reserved: []string{"risk_tier", "vip"}}
			b := raw.encode(make([]byte, 0, raw.bound(&d, classAlert)), &d, classAlert, &recOrigin{})
			if len(b) > raw.bound(&d, classAlert) || string(b) != c.want+"\n" {
				t.Errorf("raw: %q (bound %d), want %q", b, raw.bound(&d, classAlert), c.want)
			}
			ann := &sink{annotated: true, newline: true, reserved: []string{"risk_tier", "vip"}}
			b = ann.encode(make([]byte, 0, ann.bound(&d, classAlert)), &d, classAlert, &recOrigin{})
			var rec struct{ Event map[string]any }
			if err := json.Unmarshal(b, &rec); err != nil || rec.Event["risk_tier"] != "high" || rec.Event["vip"] != true ||
				bytes.Count(b, []byte(`"risk_tier"`)) != 1 {
				t.Errorf("annotated: %q: %v", b, err)
			}
			keyed := &sink{keyed: true, keyPath: "user_id", reserved: []string{"risk_tier", "vip"}}
			b = keyed.encodeKeyed(make([]byte, 0, keyedBound(&d, classAlert)), &d, classAlert, &recOrigin{rxWall: 1})
			var r output.Record
			output.Parse(b, &r)
			var ev map[string]any
			if err := json.Unmarshal(r.Value, &ev); err != nil || ev["risk_tier"] != "high" || len(b) > keyedBound(&d, classAlert) ||
				bytes.Count(r.Value, []byte(`"risk_tier"`)) != 1 {
				t.Errorf("keyed value: %q: %v", r.Value, err)
			}
		})
	}
	rej := engine.Decision{Raw: []byte(`{"a":1`), Err: engine.ErrInvalidJSON, Extra: extra}
	raw := &sink{newline: true}
	if b := raw.encode(nil, &rej, classReject, &recOrigin{}); bytes.Contains(b, []byte("risk_tier")) {
		t.Errorf("a reject got added fields: %q", b)
	}
}
