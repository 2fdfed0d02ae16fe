// Package sinktest has what the tests of the sinks and of the gateway
// share: free loopback ports and a nats-server process to publish to.
package sinktest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// NATSServer is a nats-server process of the test's, with JetStream on
// and its store in dir, listening on a loopback port.
type NATSServer struct {
	bin, dir string
	port     int
	mu       sync.Mutex
	cmd      *exec.Cmd
	out      bytes.Buffer
}

// natsServerBin finds nats-server (Debian's package puts it in
// /usr/sbin), installing it with tools/install-deps.sh when it is missing
// and the test runs as root; it skips the test when neither works.
func natsServerBin(t testing.TB) string {
	t.Helper()
	find := func() string {
		if p, err := exec.LookPath("nats-server"); err == nil {
			return p
		}
		if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
			return "/usr/sbin/nats-server"
		}
		return ""
	}
	if p := find(); p != "" {
		return p
	}
	why := "not running as root"
	if os.Geteuid() == 0 {
		out, err := exec.Command(installDeps(), "nats-server").CombinedOutput()
		if p := find(); p != "" {
			return p
		}
		why = fmt.Sprintf("install-deps.sh: %v: %s", err, out)
	}
	t.Skipf("nats-server is not installed and could not be installed (%s); make deps-test installs it", why)
	return ""
}

func StartNATS(t testing.TB) *NATSServer {
	t.Helper()
	s := &NATSServer{bin: natsServerBin(t), dir: t.TempDir(), port: FreePort(t)}
	s.Start(t)
	t.Cleanup(s.Kill)
	return s
}

func (s *NATSServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Start runs the server and waits until it accepts connections.
func (s *NATSServer) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	s.out.Reset()
	s.cmd = exec.Command(s.bin, "-js", "-sd", s.dir, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port))
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	err := s.cmd.Start()
	s.mu.Unlock()
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.Kill()
			t.Fatalf("nats-server on port %d did not come up: %v\n%s", s.port, err, s.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL (a crash, not a clean shutdown).
func (s *NATSServer) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// installDeps is tools/install-deps.sh of the module the test runs in (a
// test runs in its package's directory, at any depth below the module).
func installDeps() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "tools", "install-deps.sh")
		}
		if filepath.Dir(d) == d {
			return "tools/install-deps.sh"
		}
	}
}

// StreamMessages reads every message the JetStream stream holds now.
func StreamMessages(t testing.TB, url, stream string) []jetstream.Msg {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Msgs)
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < want && ctx.Err() == nil {
		batch, err := cons.Fetch(min(want-len(out), 5000), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
	}
	if len(out) != want {
		t.Fatalf("read %d of the stream's %d messages", len(out), want)
	}
	return out
}
