package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/gen"
	"github.com/xgate/xgate/tools/loadgen"
)

// The soak (issue 16): the real daemon on a test host for a few minutes
// under a steady, bounded stream from the load generator, through 100
// reloads (and a few rejected ones), a NATS outage and a full disk under
// its file sink. Opt-in: XGATE_SOAK=1 (make soak).
const (
	soakPort      = 9000
	soakNATSPort  = 4222 // inside the test host's namespace: nothing else listens there
	soakRate      = 500  // events/s from the load generator
	soakReloads   = 100
	soakToken     = "soak-token-0123456789abcdef"
	soakTmpfsSize = 4 << 20
	// The file sink's rotate_bytes: it keeps 5 old files, so the live one
	// and those fit the tmpfs with room to spare; only the test fills it.
	soakRotate = 512 << 10
	soakKeep   = 5
)

// soakRules are the two valid rule sets the reloads alternate between.
// per-user-rate is the same in both (default max_keys: its table is the
// largest state; a reload must keep it, not build another); big-payment's
// threshold moves, and B adds two rules, one of them with a small table of
// its own that each reload to B builds anew.
var soakRules = [2]string{
	`rules:
  - {name: big-payment, when: event_type == "payment" && amount > 10000, action: alert}
  - {name: per-user-rate, rate_limit: {key: user_id, rate: 20/s, burst: 40}, action: drop}
  - name: velocity
    window: {key: user_id, size: 60s, slide: 5s, agg: sum(amount), max_keys: 65536}
    filter: event_type == "payment"
    when: value > 50000
    action: alert
`,
	`rules:
  - {name: big-payment, when: event_type == "payment" && amount > 5000, action: alert}
  - {name: per-user-rate, rate_limit: {key: user_id, rate: 20/s, burst: 40}, action: drop}
  - name: velocity
    window: {key: user_id, size: 60s, slide: 5s, agg: sum(amount), max_keys: 65536}
    filter: event_type == "payment"
    when: value > 50000
    action: alert
  - {name: refunds, when: event_type == "refund" && amount > 1000, action: drop}
  - {name: login-rate, rate_limit: {key: user_id, rate: 5/s, max_keys: 4096}, when: event_type == "login", action: drop}
`,
}

// soakInvalid are reloads the daemon must reject, keeping its rules: a
// YAML error, an unknown action, and a window whose table would not fit
// the state memory budget (the config that killed a running daemon).
var soakInvalid = []string{
	"rules: [\n",
	"rules:\n  - {name: bad, when: amount > 1, action: explode}\n",
	"rules:\n  - name: huge\n    window: {key: user_id, size: 1024s, slide: 1s, agg: distinct(ip), max_keys: 1073741824}\n    when: value > 5\n    action: alert\n",
}

func soakConfig(link, pin, filePath, natsURL, rules string) string {
	return fmt.Sprintf(`interface: %s
mode: afxdp
queues: 1
listen: {ports: [%d]}
afxdp: {frame_size: 2048, rx_ring: 1024, fill_ring: 1024, frames: 2048}
http: {listen: "127.0.0.1:%d", token: %q, pprof: true}
pin: {path: %q}
gateway_id: soak
sinks:
  - {name: events-file, type: file, path: %q, what: passed, rotate_bytes: %d}
  - name: events-nats
    type: nats
    what: passed
    urls: [%q]
    subject: xgate.events.{key}
    stream: EVENTS
    create_stream: true
    ack_timeout: 1s
    delivery_timeout: 5s
    buffer: 1MiB
%s`, link, soakPort, httpPort, soakToken, pin, filePath, soakRotate, natsURL, rules)
}

// TestSoak: see the constants above. It asserts that the daemon's RSS at
// the end is within 10 % of the one after warm-up (both after a forced GC
// and a pause), every reload is applied or rejected as it should be, each
// fault is counted and logged (losing, then recovered), no record in the
// file sink is torn, and at the end unaccounted is 0 and every record
// offered to a sink is written, dropped or failed: exactly what the final
// log line says.
func TestSoak(t *testing.T) {
	if os.Getenv("XGATE_SOAK") != "1" {
		t.Skip("the soak runs a few minutes: XGATE_SOAK=1 (make soak)")
	}
	needRoot(t, "ip")
	natsBin := findNATSServer(t)
	bin := releaseBinary(t)
	start := time.Now()

	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	dir := sharedDir(t)
	pin := filepath.Join(mountBPFFS(t, dir), "xgate")
	disk := mountTmpfs(t, filepath.Join(dir, "disk"), soakTmpfsSize)
	filePath := filepath.Join(disk, "passed.ndjson")
	cfgPath := filepath.Join(dir, "xgate.yaml")

	nats := &nsProcess{t: t, ns: pair.B.NS, argv: []string{natsBin, "-js", "-sd", filepath.Join(dir, "nats"),
		"-a", "127.0.0.1", "-p", strconv.Itoa(soakNATSPort)}}
	nats.start()
	t.Cleanup(nats.stop)
	waitTCP(t, pair.B, soakNATSPort, 10*time.Second)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", soakNATSPort)

	configs := [2]string{}
	for i, r := range soakRules {
		configs[i] = soakConfig(pair.B.Link, pin, filePath, natsURL, r)
	}
	writeConfig(t, cfgPath, configs[0])
	d := startDaemon(t, nil, "ip", "netns", "exec", pair.B.NS, bin, "run", "-c", cfgPath, "--pid-file", "")
	d.WaitReceiving(30 * time.Second)
	api := &soakAPI{t: t, h: pair.B}

	// The load: the generator's realistic events (1 % malformed, some big
	// payments), paced, bounded by its duration and stopped by the test.
	g, err := loadgen.New(loadgen.Options{From: pair.A, To: pair.B, DstPort: soakPort, Rate: soakRate,
		Duration: 15 * time.Minute, Frames: 4096,
		Events: gen.Config{Users: 1000, BadShare: 0.01, BigShare: 0.05, Seed: 16}})
	if err != nil {
		t.Fatalf("load generator: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	ctx, stopLoad := context.WithCancel(context.Background())
	type loadResult struct {
		res loadgen.Result
		err error
	}
	loadDone := make(chan loadResult, 1)
	go func() {
		res, err := g.Send(ctx, 0)
		loadDone <- loadResult{res, err}
	}()
	stopped := false
	var load loadResult
	finishLoad := func() {
		if !stopped {
			stopLoad()
			load = <-loadDone
			stopped = true
		}
	}
	t.Cleanup(finishLoad)

	// 1. Warm up, then the RSS baseline.
	api.waitMetric(`xgate_sink_records_total{sink="events-nats"}`, 2000, 30*time.Second)
	time.Sleep(10 * time.Second)
	rss0, heap0 := api.settledRSS(d.Pid)
	t.Logf("after warm-up: RSS %d KiB, Go heap in use %d KiB", rss0>>10, heap0>>10)

	// 2. Reloads: alternate the two rule sets, a few invalid files between.
	hashes := [2]string{api.rulesHash(), ""}
	reloaded, rejected := 0, 0
	for i := 1; i <= soakReloads; i++ {
		if i%20 == 10 {
			bad := soakInvalid[rejected%len(soakInvalid)]
			writeRaw(t, cfgPath, soakConfig(pair.B.Link, pin, filePath, natsURL, bad))
			want := countLogged(d, "reload rejected; the running rules stay") + 1
			hup(t, d)
			waitLoggedN(t, d, "reload rejected; the running rules stay", want, 10*time.Second)
			rejected++
			if h := api.rulesHash(); h != hashes[(i-1)%2] {
				t.Fatalf("rejected reload %d changed the rules: hash %s, want %s", rejected, h, hashes[(i-1)%2])
			}
		}
		writeConfig(t, cfgPath, configs[i%2])
		want := countLogged(d, "msg=\"reloaded rules and XDP policy\"") + 1
		hup(t, d)
		waitLoggedN(t, d, "msg=\"reloaded rules and XDP policy\"", want, 10*time.Second)
		reloaded++
		h := api.rulesHash()
		if hashes[i%2] == "" {
			hashes[i%2] = h
		}
		if h != hashes[i%2] || hashes[0] == hashes[1] {
			t.Fatalf("reload %d: rules hash %s, want %s (hashes of the two rule sets: %v)", i, h, hashes[i%2], hashes)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d.Logged("need a restart") {
		t.Errorf("a reload that changed only rules said something needs a restart")
	}
	t.Logf("reloads: %d applied, %d rejected", reloaded, rejected)

	// 3. NATS outage: the server is gone for 20 s, then back on its port.
	natsLost0 := api.sinkLost("events-nats")
	losing0, recovered0 := countSinkLines(d, "sink losing records", "events-nats"), countSinkLines(d, "sink recovered", "events-nats")
	down0, up0 := countSinkLines(d, "sink down", "events-nats"), countSinkLines(d, "sink connected again", "events-nats")
	nats.stop()
	time.Sleep(20 * time.Second)
	nats.start()
	waitTCP(t, pair.B, soakNATSPort, 10*time.Second)
	waitFor(t, "the NATS sink to log its recovery", 60*time.Second, func() bool {
		return countSinkLines(d, "sink recovered", "events-nats") > recovered0
	})
	// One outage: down and back once; losing at least once (at most every 10 s).
	if n := countSinkLines(d, "sink down", "events-nats") - down0; n != 1 {
		t.Errorf("NATS outage: %d \"sink down\" lines for the NATS sink, want 1", n)
	}
	if n := countSinkLines(d, "sink connected again", "events-nats") - up0; n != 1 {
		t.Errorf("NATS outage: %d \"sink connected again\" lines for the NATS sink, want 1", n)
	}
	if n := countSinkLines(d, "sink losing records", "events-nats") - losing0; n < 1 {
		t.Errorf("NATS outage: no \"sink losing records\" line for the NATS sink")
	}
	natsLost := api.sinkLost("events-nats") - natsLost0
	if natsLost == 0 {
		t.Errorf("NATS outage of 20 s with delivery_timeout 5s: no record counted lost")
	}
	t.Logf("NATS outage: %v records counted lost (dropped or failed)", natsLost)

	// 4. Full disk: fill the tmpfs under the file sink (topping it up as
	// rotation frees space) for 15 s, then free it.
	fileLost0, fileErr0 := api.sinkLost("events-file"), api.metric(`xgate_sink_errors_total{sink="events-file"}`)
	losing0, recovered0 = countSinkLines(d, "sink losing records", "events-file"), countSinkLines(d, "sink recovered", "events-file")
	filler := filepath.Join(disk, "filler")
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		fillDisk(t, filler)
	}
	fileErrs := api.metric(`xgate_sink_errors_total{sink="events-file"}`) - fileErr0
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the file sink to log its recovery", 30*time.Second, func() bool {
		return countSinkLines(d, "sink recovered", "events-file") > recovered0
	})
	if n := countSinkLines(d, "sink losing records", "events-file"); n <= losing0 {
		t.Errorf("full disk: no \"sink losing records\" line for the file sink")
	}
	fileLost := api.sinkLost("events-file") - fileLost0
	if fileErrs == 0 || fileLost == 0 {
		t.Errorf("full disk for 15 s: %v write errors, %v records lost, want both counted", fileErrs, fileLost)
	}
	t.Logf("full disk: %v write errors, %v records counted lost", fileErrs, fileLost)

	// RSS at the end, under the same load as the baseline.
	time.Sleep(10 * time.Second)
	rss1, heap1 := api.settledRSS(d.Pid)
	growth := float64(rss1)/float64(rss0) - 1
	t.Logf("at the end: RSS %d KiB (%+.1f %%), Go heap in use %d KiB", rss1>>10, 100*growth, heap1>>10)
	if growth > 0.10 || growth < -0.10 {
		t.Errorf("RSS %d KiB after warm-up, %d KiB at the end: %+.1f %%, want within 10 %%", rss0>>10, rss1>>10, 100*growth)
	}

	// 5. Stop the load, let the sinks drain, read the accounting, stop.
	finishLoad()
	if load.err != nil {
		t.Errorf("load generator: %v", load.err)
	}
	t.Logf("load: %v", load.res)
	var fig soakFigures
	waitFor(t, "the counters to settle", 30*time.Second, func() bool {
		before := api.figures()
		time.Sleep(time.Second)
		fig = api.figures()
		return fig == before && fig.nats.inFly == 0
	})
	st := api.status()
	acc := st.Accounting
	t.Logf("accounting: seen %d, accounted %d, unaccounted %d, events %d, decode errors %d, verdicts %v",
		acc.Seen, acc.Accounted, acc.Unaccounted, acc.Events, acc.DecodeErrors, st.Verdicts)
	if acc.Unaccounted != 0 {
		t.Errorf("unaccounted %d, want 0", acc.Unaccounted)
	}
	if acc.Seen < load.res.Sent-load.res.Undelivered() {
		t.Errorf("the XDP program saw %d frames, the generator delivered %d", acc.Seen, load.res.Sent-load.res.Undelivered())
	}
	offered := st.Verdicts["pass"] + st.Verdicts["alert"]
	for _, s := range []sinkFigures{fig.file, fig.nats} {
		t.Logf("sink %s: offered %d = written %d + dropped (no buffer) %d + too big %d + failed %d; write errors %d",
			s.name, offered, s.records, s.noBuffer, s.tooBig, s.failed, s.errors)
		if got := s.records + s.noBuffer + s.tooBig + s.failed; got != offered {
			t.Errorf("sink %s: written + dropped + failed = %d, offered %d (%+d unaccounted)", s.name, got, offered, int64(offered)-int64(got))
		}
	}

	if _, err := d.Signal(syscall.SIGTERM, 60*time.Second); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	// The final log lines say the same.
	final := logFields(t, d, "msg=\"final accounting\"")
	if final["pass"] != strconv.FormatUint(st.Verdicts["pass"], 10) || final["alert"] != strconv.FormatUint(st.Verdicts["alert"], 10) {
		t.Errorf("final accounting line %v, /status verdicts %v", final, st.Verdicts)
	}
	for _, s := range []sinkFigures{fig.file, fig.nats} {
		if s.noBuffer+s.tooBig+s.failed == 0 {
			continue
		}
		l := logFields(t, d, "msg=\"sink did not deliver every record\" sink="+s.name+" ")
		want := map[string]uint64{"dropped": s.noBuffer, "too_big": s.tooBig, "failed": s.failed, "errors": s.errors, "in_flight_at_stop": 0}
		for k, v := range want {
			if l[k] != strconv.FormatUint(v, 10) {
				t.Errorf("sink %s: the stop logged %s=%s, the counters say %d", s.name, k, l[k], v)
			}
		}
	}

	// No torn record: every line of the file sink's files is one JSON object.
	lines := 0
	for i := 0; i <= soakKeep; i++ {
		p := filePath
		if i > 0 {
			p += "." + strconv.Itoa(i)
		}
		n, err := checkNDJSON(p)
		if err != nil && !(errors.Is(err, os.ErrNotExist) && i > 0) {
			t.Errorf("file sink: %v", err)
		}
		lines += n
	}
	t.Logf("file sink: %d whole JSON lines in the live and the rotated files", lines)
	t.Logf("soak: %v, RSS %d → %d KiB, %d reloads (+%d rejected), NATS %d/%d/%d/%d, file %d/%d/%d/%d (offered %d; written/dropped/too big/failed)",
		time.Since(start).Round(time.Second), rss0>>10, rss1>>10, reloaded, rejected,
		fig.nats.records, fig.nats.noBuffer, fig.nats.tooBig, fig.nats.failed,
		fig.file.records, fig.file.noBuffer, fig.file.tooBig, fig.file.failed, offered)
}

// findNATSServer finds nats-server (Debian's package puts it in /usr/sbin)
// or skips.
func findNATSServer(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server"
	}
	t.Skip("needs nats-server (make deps-test installs it)")
	return ""
}

// mountTmpfs mounts a tmpfs of size bytes at dir, unmounted when the test ends.
func mountTmpfs(t *testing.T, dir string, size int) string {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fillDisk appends to path until the file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return
		}
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{'x'}, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return
		}
	}
}

// checkNDJSON reads a sink file and returns its lines, or an error naming
// the first line that is not one whole JSON object, or a last line
// without its newline.
func checkNDJSON(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		i := bytes.LastIndexByte(b, '\n')
		return 0, fmt.Errorf("%s ends in a torn record: %.200q", path, b[i+1:])
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		n++
		l := sc.Bytes()
		if len(l) == 0 || l[0] != '{' || !json.Valid(l) {
			return n, fmt.Errorf("%s:%d is not one JSON object: %.200q", path, n, l)
		}
	}
	return n, sc.Err()
}

// nsProcess is a program the test runs in a namespace (ip netns exec
// execs it, so the PID is the program's); stop kills it by that PID.
type nsProcess struct {
	t    *testing.T
	ns   string
	argv []string
	cmd  *exec.Cmd
	out  bytes.Buffer
}

func (p *nsProcess) start() {
	p.t.Helper()
	p.out.Reset()
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", p.ns}, p.argv...)...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %v: %v", p.argv, err)
	}
}

func (p *nsProcess) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
}

// waitTCP waits until 127.0.0.1:port accepts connections in h's namespace.
func waitTCP(t *testing.T, h *testenv.Host, port int, timeout time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("127.0.0.1:%d in %s", port, h.NS), timeout, func() bool {
		fd, err := h.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return false
		}
		defer unix.Close(fd)
		return unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}) == nil
	})
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeRaw(t *testing.T, path, yml string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
}

func hup(t *testing.T, d *testenv.Daemon) {
	t.Helper()
	if err := syscall.Kill(d.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

func countLogged(d *testenv.Daemon, s string) int {
	n := 0
	for _, l := range d.Log() {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

func waitLoggedN(t *testing.T, d *testenv.Daemon, s string, n int, timeout time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("log line %d with %q", n, s), timeout, func() bool { return countLogged(d, s) >= n })
}

// countSinkLines counts the log lines with msg and the sink's name.
func countSinkLines(d *testenv.Daemon, msg, sink string) int {
	n := 0
	for _, l := range d.Log() {
		if strings.Contains(l, "msg=\""+msg) && strings.Contains(l, " sink="+sink+" ") {
			n++
		}
	}
	return n
}

var logField = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// logFields returns the key=value fields of the last log line containing s.
func logFields(t *testing.T, d *testenv.Daemon, s string) map[string]string {
	t.Helper()
	log := d.Log()
	for i := len(log) - 1; i >= 0; i-- {
		if strings.Contains(log[i], s) {
			out := map[string]string{}
			for _, m := range logField.FindAllStringSubmatch(log[i], -1) {
				out[m[1]] = m[2]
			}
			return out
		}
	}
	t.Errorf("no log line with %q", s)
	return map[string]string{}
}

// soakAPI reads the daemon's HTTP endpoints (with the token) inside the
// test host's namespace.
type soakAPI struct {
	t *testing.T
	h *testenv.Host
}

func (a *soakAPI) get(path string) string {
	a.t.Helper()
	fd, err := a.h.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		a.t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "http")
	defer f.Close()
	tv := unix.NsecToTimeval(int64(30 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: httpPort, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		a.t.Fatalf("connect 127.0.0.1:%d: %v", httpPort, err)
	}
	if _, err := fmt.Fprintf(f, "GET %s HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n", path, soakToken); err != nil {
		a.t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, f); err != nil {
		a.t.Fatalf("GET %s: %v", path, err)
	}
	head, body, _ := strings.Cut(buf.String(), "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.0 200") && !strings.HasPrefix(head, "HTTP/1.1 200") {
		a.t.Fatalf("GET %s: %.200s", path, buf.String())
	}
	return body
}

// soakStatus is what the soak reads of /status.
type soakStatus struct {
	Rules      struct{ Hash string } `json:"rules"`
	Verdicts   map[string]uint64     `json:"verdicts"`
	Accounting struct {
		Seen         uint64 `json:"seen"`
		Accounted    uint64 `json:"accounted"`
		Unaccounted  int64  `json:"unaccounted"`
		Events       uint64 `json:"events"`
		DecodeErrors uint64 `json:"decode_errors"`
	} `json:"accounting"`
}

func (a *soakAPI) status() soakStatus {
	a.t.Helper()
	var st soakStatus
	if err := json.Unmarshal([]byte(a.get("/status")), &st); err != nil {
		a.t.Fatalf("/status: %v", err)
	}
	return st
}

func (a *soakAPI) rulesHash() string { return a.status().Rules.Hash }

// metric reads one series of /metrics (labels as the exposition orders
// them: by name); 0 when absent.
func (a *soakAPI) metric(series string) float64 {
	a.t.Helper()
	v, _ := metricValue(a.get("/metrics"), series)
	return v
}

func (a *soakAPI) waitMetric(series string, want float64, timeout time.Duration) {
	a.t.Helper()
	waitFor(a.t, fmt.Sprintf("%s ≥ %v", series, want), timeout, func() bool { return a.metric(series) >= want })
}

// sinkFigures are one sink's counters.
type sinkFigures struct {
	name                                             string
	records, noBuffer, tooBig, failed, errors, inFly uint64
}

type soakFigures struct {
	file, nats  sinkFigures
	pass, alert uint64
}

func (a *soakAPI) sink(m, name string) sinkFigures {
	v := func(series string) uint64 { f, _ := metricValue(m, series); return uint64(f) }
	return sinkFigures{name: name,
		records:  v(`xgate_sink_records_total{sink="` + name + `"}`),
		noBuffer: v(`xgate_sink_dropped_records_total{reason="no_buffer",sink="` + name + `"}`),
		tooBig:   v(`xgate_sink_dropped_records_total{reason="too_big",sink="` + name + `"}`),
		failed:   v(`xgate_sink_dropped_records_total{reason="failed",sink="` + name + `"}`),
		errors:   v(`xgate_sink_errors_total{sink="` + name + `"}`),
		inFly:    v(`xgate_sink_in_flight_records{sink="` + name + `"}`),
	}
}

func (a *soakAPI) figures() soakFigures {
	a.t.Helper()
	m := a.get("/metrics")
	v := func(series string) uint64 { f, _ := metricValue(m, series); return uint64(f) }
	return soakFigures{file: a.sink(m, "events-file"), nats: a.sink(m, "events-nats"),
		pass: v(`xgate_events_total{verdict="pass"}`), alert: v(`xgate_events_total{verdict="alert"}`)}
}

// sinkLost is what a sink's counters say it lost so far.
func (a *soakAPI) sinkLost(name string) uint64 {
	a.t.Helper()
	s := a.sink(a.get("/metrics"), name)
	return s.noBuffer + s.tooBig + s.failed
}

// settledRSS forces a GC in the daemon (pprof's heap profile with gc=1),
// lets the runtime return what it freed, and reads VmRSS and the heap in
// use (bytes).
func (a *soakAPI) settledRSS(pid int) (rss, heap uint64) {
	a.t.Helper()
	a.get("/debug/pprof/heap?gc=1")
	time.Sleep(5 * time.Second)
	a.get("/debug/pprof/heap?gc=1")
	time.Sleep(5 * time.Second)
	st := procStatus(a.t, fmt.Sprintf("/proc/%d/status", pid))
	kb, err := strconv.ParseUint(strings.TrimSuffix(st["VmRSS"], " kB"), 10, 64)
	if err != nil {
		a.t.Fatalf("VmRSS %q: %v", st["VmRSS"], err)
	}
	return kb << 10, uint64(a.metric("go_memstats_heap_inuse_bytes"))
}
