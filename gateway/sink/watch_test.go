package sink

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/nats"
	"github.com/xgate/xgate/gateway/sink/sinktest"
	"github.com/xgate/xgate/gateway/sink/spool"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSinkWatchLoud: a sink on a full disk (/dev/full) is logged as
// losing records, with its error, and once more at the stop with what it
// did not deliver; a healthy sink is not logged.
func TestSinkWatchLoud(t *testing.T) {
	if _, err := New([]Spec{{Type: "file", Path: "/dev/full", What: "all"}}, 1); err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	s, err := New([]Spec{{Type: "file", Path: "/dev/full", What: "all", Fsync: "never"},
		{Type: "file", Path: t.TempDir() + "/ok.ndjson", What: "all", Fsync: "never"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var buf syncBuf
	w := NewWatch(slog.New(slog.NewTextHandler(&buf, nil)), s)
	wr := s.Writer(0)
	for i := 0; i < 10; i++ {
		wr.Add(&engine.Decision{Raw: []byte(`{"user_id":"u","amount":1}`), Action: engine.ActionPass})
	}
	wr.FlushAll()
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(buf.String(), "sink losing records") && time.Now().Before(deadline) {
		w.Check(time.Now())
		time.Sleep(10 * time.Millisecond)
	}
	out := buf.String()
	if !strings.Contains(out, "sink losing records") || !strings.Contains(out, "file:/dev/full") || strings.Contains(out, "ok.ndjson") {
		t.Errorf("log:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Close(ctx) // the full disk's sink reports its failure here too
	w.Final()
	if out := buf.String(); !strings.Contains(out, "sink did not deliver every record") || strings.Count(out, "did not deliver") != 1 {
		t.Errorf("final log:\n%s", out)
	}
}

// TestSinkWatchDown: a NATS sink whose server goes away is logged as down
// at once, before any record is lost (delivery_timeout is far off), and as
// connected again once the server is back; the sink's Stats say Down in
// between.
// watchedNATS is a NATS sink on a server of the test's (with a disk spool
// at spooldir, unless ""), its sink watch logging into buf, and waitLine,
// which runs the watch until the log has a line (within 20s).
func watchedNATS(t *testing.T, spooldir string) (*sinktest.NATSServer, *Sinks, *Watch, *syncBuf, func(string)) {
	t.Helper()
	srv := sinktest.StartNATS(t)
	sp := Spec{Type: "nats", What: "passed", KeyPath: "user_id", GatewayID: "gw", DeliveryTimeout: time.Minute,
		NATS: nats.Config{URLs: []string{srv.URL()}, Subject: "xgate.events.{key}", Stream: "EVENTS", CreateStream: true}}
	if spooldir != "" {
		sp.Spool = spool.Config{Path: spooldir}
	}
	s, err := New([]Spec{sp}, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	buf := &syncBuf{}
	w := NewWatch(slog.New(slog.NewTextHandler(buf, nil)), s)
	waitLine := func(line string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(buf.String(), line) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q line within 20s; log:\n%s", line, buf.String())
			}
			w.Check(time.Now())
			time.Sleep(20 * time.Millisecond)
		}
	}
	return srv, s, w, buf, waitLine
}

func TestSinkWatchDown(t *testing.T) {
	srv, s, w, buf, waitLine := watchedNATS(t, "")
	w.Check(time.Now())
	if st := s.Stats()[0]; st.Down || buf.String() != "" {
		t.Fatalf("connected sink: Down %v, log %q", st.Down, buf.String())
	}
	srv.Kill()
	waitLine("sink down")
	if st := s.Stats()[0]; !st.Down || st.Failed+st.Dropped != 0 {
		t.Errorf("server gone: Down %v, failed %d, dropped %d (want down, nothing lost yet)", st.Down, st.Failed, st.Dropped)
	}
	srv.Start(t)
	waitLine("sink connected again")
	if st := s.Stats()[0]; st.Down {
		t.Errorf("server back: Down %v", st.Down)
	}
	if n := strings.Count(buf.String(), "sink down"); n != 1 {
		t.Errorf("%d down lines, want 1:\n%s", n, buf.String())
	}
}

// TestSinkWatchSpool: a sink with a disk spool is logged when it starts
// spooling (server gone) and when its spool is replayed (server back),
// and the spool's metrics are on /metrics' collector.
func TestSinkWatchSpool(t *testing.T) {
	srv, s, _, _, waitLine := watchedNATS(t, t.TempDir())
	srv.Kill()
	for s.Stats()[0].Down == false {
		time.Sleep(10 * time.Millisecond)
	}
	sw := s.Writer(0)
	for i := range 100 {
		d := engine.Decision{Raw: []byte(`{"user_id":"u-` + string(rune('a'+i%26)) + `"}`), Action: engine.ActionPass}
		sw.Add(&d)
	}
	sw.FlushAll()
	waitLine("sink spooling to disk")
	if st := s.Stats()[0]; st.Spooled != 100 || st.Dropped+st.Failed != 0 {
		t.Fatalf("spooled %d, dropped %d, failed %d", st.Spooled, st.Dropped, st.Failed)
	}
	srv.Start(t)
	waitLine("sink spool replayed")
	if st := s.Stats()[0]; st.Spooled != 0 || st.SpoolReplayed != 100 {
		t.Fatalf("after the replay: %+v", st)
	}
}
