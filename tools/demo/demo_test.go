package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/xgate/xgate/gateway/config"

	"go.yaml.in/yaml/v3"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/examples"
	"github.com/xgate/xgate/testenv"
)

// checkSinkFiles asserts that every sink file exists with as many lines
// as the gateway says it wrote, and that the alerts file holds alerts.
func checkSinkFiles(t *testing.T, rep *Report) {
	t.Helper()
	var whats []string
	for _, f := range rep.Files {
		whats = append(whats, f.Name+"/"+f.What)
	}
	// The example's big-payment rule routes to "fraud"; velocity emits.
	if want := []string{"alerts/alerts", "dropped/dropped", "rejects/rejects", "passed/passed", "fraud/routed", "aggregates/aggregates"}; !slices.Equal(whats, want) {
		t.Fatalf("sink files %+v: want %v", rep.Files, want)
	}
	for _, f := range rep.Files {
		// A short run may end before a window's first slide does.
		if f.Records == 0 && f.What != "rejects" && f.What != "aggregates" {
			t.Errorf("%s: no records", f.Path)
		}
		if filepath.Dir(f.Path) != rep.Dir {
			t.Errorf("%s is not in the run's directory %s", f.Path, rep.Dir)
		}
		b, err := os.ReadFile(f.Path)
		if err != nil {
			t.Errorf("sink file: %v", err)
			continue
		}
		if n := uint64(bytes.Count(b, []byte{'\n'})); n != f.Records {
			t.Errorf("%s: %d lines, the gateway says %d records", f.Path, n, f.Records)
		}
		if f.What != "alerts" {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r alertRecord
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Verdict != "alert" || r.Rule == "" || len(r.Event) == 0 {
				t.Fatalf("alerts file holds %q (%v): want annotated alerts", sc.Text(), err)
			}
		}
	}
	if _, err := os.Stat(rep.Log); err != nil {
		t.Errorf("gateway log: %v", err)
	}
}

// TestKernelDemo runs a short demo on test hosts: every packet sent is
// accounted for, alerts fire and land in the sink file, the flood is
// blocked in XDP, the junk is dropped there and the other port passed on,
// and the test hosts are gone afterwards.
func TestKernelDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the test hosts need root (network namespaces, veth, XDP)")
	}
	var out syncBuffer
	// While it runs, do what the demo tells the user: read /status at the
	// address it prints, with the token it prints.
	watched := make(chan string, 1)
	go func() { watched <- watchDemo(&out) }()
	rep, err := Run(context.Background(), Options{Duration: 3 * time.Second, Out: &out, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if got := <-watched; got != "200" {
		t.Errorf("GET /status at the printed address during the run: %s\n%s", got, out.String())
	}
	if rep.Mode != ModeTestHosts || rep.Path != config.ModeAFXDP || rep.Fallback != "" {
		t.Fatalf("mode %q path %q fallback %q: want test hosts with afxdp\n%s", rep.Mode, rep.Path, rep.Fallback, out.String())
	}
	st := &rep.Stats
	var timed uint64
	for _, n := range rep.Latency {
		timed += n
	}
	if timed == 0 || timed > st.Datagrams {
		t.Errorf("receive → verdict: %d frames timed, %d datagrams received: want every decided frame timed", timed, st.Datagrams)
	}
	if rep.Unaccounted != 0 || st.Accounted() != rep.Sent.Total() {
		t.Errorf("unaccounted %d (sent %d, accounted %d)", rep.Unaccounted, rep.Sent.Total(), st.Accounted())
	}
	if rep.Alerts == 0 || st.Engine.Verdicts[1] == 0 {
		t.Errorf("alerts %d, drops %d: want both", rep.Alerts, st.Engine.Verdicts[1])
	}
	if st.Feedback.Applied == 0 || st.XDP[bpf.ReasonBlocked].Packets == 0 {
		t.Errorf("the flood was not blocked in XDP: feedback %+v, blocked %d", st.Feedback, st.XDP[bpf.ReasonBlocked].Packets)
	}
	if st.XDP[bpf.ReasonPayloadNotJSON].Packets != rep.Sent.NotJSON || rep.Sent.NotJSON == 0 {
		t.Errorf("not JSON: sent %d, dropped in XDP %d", rep.Sent.NotJSON, st.XDP[bpf.ReasonPayloadNotJSON].Packets)
	}
	if st.NotForUs != rep.Sent.OtherPort || rep.Sent.OtherPort == 0 {
		t.Errorf("other port: sent %d, not for us %d", rep.Sent.OtherPort, st.NotForUs)
	}
	checkSinkFiles(t, rep)
	s := out.String()
	for _, want := range []string{"receive path afxdp", "flood starts", "put in the XDP blocklist", "unaccounted                   0", rep.Dir,
		"receive → verdict: "} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	// The test hosts are removed: no namespace of this process is left.
	ents, _ := os.ReadDir("/run/netns")
	mine := testenv.Prefix + strconv.Itoa(os.Getpid()) + "-"
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), mine) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
}

// TestPlainDemo runs the unprivileged fallback directly (as root too: the
// privileges are the caller's decision): the gateway's plain path on
// loopback.
func TestPlainDemo(t *testing.T) {
	var out bytes.Buffer
	o := Options{Duration: 3 * time.Second, Out: &out, Dir: t.TempDir()}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	rep, err := runPlain(context.Background(), o, "simulated: no privileges")
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if rep.Mode != ModePlain || rep.Path != config.ModePlain || rep.Fallback != "simulated: no privileges" {
		t.Fatalf("mode %q path %q fallback %q", rep.Mode, rep.Path, rep.Fallback)
	}
	if rep.Unaccounted != 0 || rep.Sent.Total() == 0 || rep.Sent.Flood == 0 {
		t.Errorf("unaccounted %d, sent %+v", rep.Unaccounted, rep.Sent)
	}
	if rep.Alerts == 0 {
		t.Error("no alerts")
	}
	checkSinkFiles(t, rep)
	s := out.String()
	if !strings.HasPrefix(s, "xgate demo: PLAIN MODE ON LOOPBACK") || !strings.Contains(s, "simulated: no privileges") {
		t.Errorf("the output does not say plain mode, and why, at the start:\n%s", s)
	}
	// Not a terminal: one status line per second, no redraws.
	if strings.Contains(s, "\033[") {
		t.Errorf("redraws in a non-terminal output:\n%s", s)
	}
	status := regexp.MustCompile(`(?m)^ +([0-9]+\.[0-9]s|done)  sent [0-9]+ `)
	if n := len(status.FindAllString(s, -1)); n < 3 || n > 4 {
		t.Errorf("%d status lines for a 3 s run: want one a second and a final one:\n%s", n, s)
	}
}

func TestMissingPrivileges(t *testing.T) {
	full := "Name:\txgate\nCapEff:\t000001ffffffffff\n"
	if why := missingPrivileges(full, 0); why != "" {
		t.Errorf("root with every capability: %q", why)
	}
	none := "CapEff:\t0000000000000000\n"
	if why := missingPrivileges(none, 1000); !strings.HasPrefix(why, "not root") ||
		!strings.Contains(why, "CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW") {
		t.Errorf("unprivileged: %q", why)
	}
	noRaw := "CapEff:\t" + strconv.FormatUint(1<<21|1<<12, 16) + "\n" // SYS_ADMIN, NET_ADMIN
	if why := missingPrivileges(noRaw, 0); !strings.HasPrefix(why, "root without") || !strings.HasSuffix(why, "need CAP_NET_RAW") {
		t.Errorf("root without CAP_NET_RAW: %q", why)
	}
	if why := missingPrivileges("Name:\tx\n", 0); !strings.Contains(why, "cannot read") {
		t.Errorf("no CapEff line: %q", why)
	}
}

// TestDemoConfig: the demo runs examples/xgate.yaml's rules and limits,
// with its own sinks, HTTP on a free loopback port with a token, and no pins.
func TestDemoConfig(t *testing.T) {
	example, err := config.Load("../../" + examples.ConfigName) // its lists beside it
	if err != nil {
		t.Fatalf("the example configuration: %v", err)
	}
	o := Options{}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, iface := range []string{"veth-b", ""} {
		cfg, files, err := demoConfig(&o, iface, 34567, dir)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(cfg.Rules, example.Rules, func(a, b config.Rule) bool { return a.Name == b.Name && a.Action == b.Action }) ||
			len(cfg.Rules) == 0 || cfg.Limits != example.Limits || !reflect.DeepEqual(cfg.XDP, example.XDP) {
			t.Errorf("%q: rules, limits or XDP policy differ from the example", iface)
		}
		if cfg.HTTP.Listen != "127.0.0.1:0" || len(cfg.HTTP.Token) != 32 || cfg.Pin.Path != "" || cfg.Interface != iface {
			t.Errorf("%q: http %q token %d chars, pin %q interface %q", iface, cfg.HTTP.Listen, len(cfg.HTTP.Token), cfg.Pin.Path, cfg.Interface)
		}
		if len(cfg.Sinks) != len(files) || files[0].What != "alerts" {
			t.Fatalf("%q: sinks %+v, files %+v", iface, cfg.Sinks, files)
		}
		for i, s := range cfg.Sinks {
			if s.Type != "file" || s.Path != files[i].Path || s.What != files[i].What || filepath.Dir(s.Path) != dir || s.Buffer != 4<<20 {
				t.Errorf("%q: sink %d is %+v", iface, i, s)
			}
		}
		if iface == "" {
			if cfg.Listen.Address != "127.0.0.1" || !slices.Equal(cfg.Listen.Ports, []uint16{34567}) || cfg.Probes.Enabled || cfg.Mode != config.ModeAuto {
				t.Errorf("plain: listen %+v probes %v mode %s", cfg.Listen, cfg.Probes.Enabled, cfg.Mode)
			}
		} else if !slices.Equal(cfg.Listen.Ports, example.Listen.Ports) {
			t.Errorf("test hosts: ports %v, the example's %v", cfg.Listen.Ports, example.Listen.Ports)
		}
	}
	o.Config, o.Files = []byte("listen: {ports: [9000]}\nrules: [{name: x, when: nope ==, action: drop}]\n"), nil
	if _, _, err := demoConfig(&o, "", 1, dir); err == nil {
		t.Error("a broken configuration was accepted")
	}
}

// TestAlertTail feeds the tail records in pieces, as a sink writing
// slabs would: it counts complete lines only and keeps the newest.
func TestAlertTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.ndjson")
	tail := newAlertTail(path, 2, "user_id", "amount", map[string]string{"velocity": "sum(amount)/1m0s"})
	defer tail.close()
	if err := tail.poll(); err != nil || tail.lines != 0 {
		t.Fatalf("no file yet: err %v, lines %d", err, tail.lines)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs := []string{
		`{"verdict":"alert","rule":"big-payment","value":0,"event":{"user_id":"u-1","amount":12345.5}}`,
		`{"verdict":"alert","rule":"velocity","value":51230.4,"event":{"user_id":"u-2","amount":10}}`,
		`{"verdict":"alert","rule":"big-payment","value":0,"event":{"user_id":"u-3","amount":1234567}}`,
	}
	all := strings.Join(recs, "\n") + "\n"
	cut := len(recs[0]) + 1 + 20 // in the middle of the second record
	f.WriteString(all[:cut])
	if err := tail.poll(); err != nil || tail.lines != 1 || len(tail.last) != 1 {
		t.Fatalf("after a record and a half: err %v, lines %d, last %+v", err, tail.lines, tail.last)
	}
	if a := tail.last[0]; a.Rule != "big-payment" || a.Key != "u-1" || a.What != "amount 12,345.50" {
		t.Errorf("first alert: %+v", a)
	}
	f.WriteString(all[cut:])
	if err := tail.poll(); err != nil || tail.lines != 3 || len(tail.last) != 2 {
		t.Fatalf("after all: err %v, lines %d, last %+v", err, tail.lines, tail.last)
	}
	if a := tail.last[0]; a.Rule != "velocity" || a.Key != "u-2" || a.What != "sum(amount)/1m0s = 51,230.40" {
		t.Errorf("window alert: %+v", a)
	}
	if a := tail.last[1]; a.Key != "u-3" || a.What != "amount 1,234,567.00" {
		t.Errorf("newest alert: %+v", a)
	}
	f.WriteString("not json\n")
	if err := tail.poll(); err != nil || tail.last[1].Rule != "?" {
		t.Errorf("a broken record: err %v, %+v", err, tail.last[1])
	}
}

// TestViewModes: a terminal gets a block of constant height redrawn in
// place; anything else one line per update.
func TestViewModes(t *testing.T) {
	cfg, _, err := demoConfig(&Options{Config: examples.Config, ConfigName: "x", Files: examples.Lists}, "veth-b", 0, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	samples := []sample{
		{at: time.Second, sent: Traffic{Events: 1000}},
		{at: 2 * time.Second, sent: Traffic{Events: 2000, Flood: 500}},
	}
	samples[1].st.Feedback.Applied = 1
	samples[1].st.Engine.Events = 1900
	for _, live := range []bool{false, true} {
		var out bytes.Buffer
		o := &Options{Out: &out, Live: live, Width: 80, Duration: 10 * time.Second}
		alerts := filepath.Join(t.TempDir(), "alerts.ndjson")
		v := newView(o, "test", true, cfg, alerts)
		for i, s := range samples {
			if i == 1 { // alerts arrive between the frames
				rec := `{"verdict":"alert","rule":"big-payment","value":0,"event":{"user_id":"u-7","amount":20000}}` + "\n"
				if err := os.WriteFile(alerts, []byte(rec+rec), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := v.update(s); err != nil {
				t.Fatal(err)
			}
		}
		v.post(1500*time.Millisecond, "flood starts")
		if err := v.finish(samples[1]); err != nil {
			t.Fatal(err)
		}
		s := out.String()
		if !live {
			lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
			// three updates, the blocklist note, the posted note
			if len(lines) != 5 || strings.Contains(s, "\033[") || !strings.Contains(lines[1], "put in the XDP blocklist") ||
				!strings.HasPrefix(lines[3], "   1.5s  flood starts") || !strings.HasPrefix(lines[4], "   done") {
				t.Errorf("line mode:\n%s", s)
			}
			if !strings.Contains(lines[4], "decided 1900 (950/s)") {
				t.Errorf("final line: want rates over the whole run: %s", lines[4])
			}
			continue
		}
		redraw := regexp.MustCompile("\033\\[([0-9]+)A\033\\[J")
		frames := redraw.Split(s, -1)
		ups := redraw.FindAllStringSubmatch(s, -1)
		if len(frames) != 3 || len(ups) != 2 {
			t.Fatalf("live mode: want 3 frames, 2 redraws:\n%s", s)
		}
		height := strings.Count(frames[0], "\n")
		for i, f := range frames {
			if n := strings.Count(f, "\n"); n != height {
				t.Errorf("frame %d has %d lines, the first %d", i, n, height)
			}
			for _, l := range strings.Split(f, "\n") {
				if n := utf8.RuneCountInString(l); n > 79 {
					t.Errorf("line of %d columns in an 80-column view: %q", n, l)
				}
			}
		}
		for _, u := range ups {
			if u[1] != strconv.Itoa(height) {
				t.Errorf("redraw moves up %s lines, the frame has %d", u[1], height)
			}
		}
		if !strings.Contains(frames[2], "done after 2.0s") || !strings.Contains(frames[2], "flood starts") ||
			!strings.Contains(frames[2], "big-payment    u-7       amount 20,000.00") {
			t.Errorf("final frame:\n%s", frames[2])
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{num(0), "0"}, {num(999), "999"}, {num(1000), "1,000"}, {num(1234567), "1,234,567"},
		{money(0), "0.00"}, {money(-1234.5), "-1,234.50"}, {money(999999.999), "1,000,000.00"},
		{perSec(950), "950/s"}, {perSec(12345), "12.3k/s"}, {perSec(1.5e6), "1.50M/s"},
		{clip("abcdef", 4), "abc…"}, {clip("a·b", 3), "a·b"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestEditYAML(t *testing.T) {
	src := []byte("# comment\nmode: afxdp\nhttp: {listen: 127.0.0.1:9100, pprof: true}\nprobes: off\n")
	out, err := editYAML(src, []yamlEdit{
		{"mode", "auto"},          // replaced
		{"http.listen", ""},       // replaced inside a mapping, pprof kept
		{"probes.enabled", false}, // a scalar becomes a mapping
		{"pin.keep", true},        // created with its parent
		{"listen", map[string]any{"ports": []uint16{9000}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := map[string]any{
		"mode":   "auto",
		"http":   map[string]any{"listen": "", "pprof": true},
		"probes": map[string]any{"enabled": false},
		"pin":    map[string]any{"keep": true},
		"listen": map[string]any{"ports": []any{9000}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v\nwant %#v\n%s", got, want, out)
	}
	if out, err := editYAML(nil, []yamlEdit{{"interface", "x"}}); err != nil || strings.TrimSpace(string(out)) != "interface: x" {
		t.Errorf("empty document: %q, %v", out, err)
	}
	if _, err := editYAML([]byte("- a\n- b\n"), []yamlEdit{{"interface", "x"}}); err == nil {
		t.Error("a sequence as the document was accepted")
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// watchDemo waits (at most 10 s) for the demo's "watch it" lines and
// requests /status as they say; it returns the status code or what failed.
func watchDemo(out *syncBuffer) string {
	addrRe := regexp.MustCompile(`xgate stats --addr (127\.0\.0\.1:[0-9]+)`)
	tokRe := regexp.MustCompile(`export XGATE_HTTP_TOKEN=([0-9a-f]+)`)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		s := out.String()
		a, k := addrRe.FindStringSubmatch(s), tokRe.FindStringSubmatch(s)
		if a == nil || k == nil {
			continue
		}
		req, err := http.NewRequest("GET", "http://"+a[1]+"/status", nil)
		if err != nil {
			return err.Error()
		}
		req.Header.Set("Authorization", "Bearer "+k[1])
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
		if err != nil {
			return err.Error()
		}
		resp.Body.Close()
		return strconv.Itoa(resp.StatusCode)
	}
	return "no address and token printed within 10 s"
}
