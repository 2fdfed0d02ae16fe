package sink

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/nats"
	"github.com/xgate/xgate/gateway/sink/sinktest"
)

func natsSpec(url string) Spec {
	return Spec{
		Type: "nats", What: "passed", KeyPath: "user_id", GatewayID: "gw-test",
		NATS: nats.Config{URLs: []string{url}, Subject: "xgate.events.{key}", Stream: "EVENTS", CreateStream: true},
	}
}

// checkMessages checks the message contract: each event once, the
// subject from the key, headers as documented, message ids unique, and
// each worker's events of a key in the order they were added.
func checkMessages(t *testing.T, msgs []jetstream.Msg, from, to time.Time) {
	t.Helper()
	seen := map[string]bool{}
	ids := map[string]bool{}
	last := map[string]int{}
	reordered := 0
	for _, m := range msgs {
		w, seq := eventID(t, m.Data())
		id := fmt.Sprintf("w%d-%d", w, seq)
		if seen[id] {
			t.Fatalf("event %s stored twice", id)
		}
		seen[id] = true
		if !bytes.Equal(m.Data(), keyedEvent(w, seq)) {
			t.Fatalf("data %q, want the original bytes", m.Data())
		}
		key := fmt.Sprintf("u-%d", seq%testKeys)
		if m.Subject() != "xgate.events."+key {
			t.Fatalf("event %s: subject %s", id, m.Subject())
		}
		h := m.Headers()
		wantVerdict, wantRule := "pass", ""
		if seq%10 == 0 {
			wantVerdict, wantRule = "alert", "big-payment"
		}
		if h.Get("verdict") != wantVerdict || h.Get("rule") != wantRule || h.Get("gateway") != "gw-test" {
			t.Fatalf("event %s: headers %v", id, h)
		}
		rx, err := strconv.ParseInt(h.Get("rx_ns"), 10, 64)
		if err != nil || rx < from.UnixNano() || rx > to.UnixNano() {
			t.Fatalf("event %s: rx_ns %q", id, h.Get("rx_ns"))
		}
		mid := h.Get(jetstream.MsgIDHeader)
		if !strings.HasPrefix(mid, "gw-test-") || ids[mid] {
			t.Fatalf("event %s: message id %q (seen before: %v)", id, mid, ids[mid])
		}
		ids[mid] = true
		kw := key + "/" + strconv.Itoa(w)
		if l, ok := last[kw]; ok && seq <= l {
			reordered++ // retries may reorder; TestNATSSinkCounts checks order
		}
		last[kw] = seq
	}
	if reordered > 0 {
		t.Logf("%d messages after a later one of the same key and worker (retried)", reordered)
	}
}

func TestNATSSinkCounts(t *testing.T) {
	srv := sinktest.StartNATS(t)
	sp := natsSpec(srv.URL())
	added, from, to := keyedAllDelivered(t, sp, "nats:xgate.events.{key}")
	msgs := sinktest.StreamMessages(t, srv.URL(), "EVENTS")
	if len(msgs) != int(added) {
		t.Fatalf("stream holds %d messages, %d acknowledged", len(msgs), added)
	}
	checkMessages(t, msgs, from, to)
	last := map[string]int{}
	for _, m := range msgs { // no retries here: per key and worker in order
		w, seq := eventID(t, m.Data())
		k := m.Subject() + "/" + strconv.Itoa(w)
		if l, ok := last[k]; ok && seq <= l {
			t.Fatalf("%s: seq %d after %d", k, seq, l)
		}
		last[k] = seq
	}
}

// TestNATSSinkSubjects: keys with characters a subject token cannot hold,
// verdict and rule placeholders.
func TestNATSSinkSubjects(t *testing.T) {
	srv := sinktest.StartNATS(t)
	sp := natsSpec(srv.URL())
	sp.What = "all"
	sp.NATS.Subject = "xgate.{verdict}.{rule}.{key}"
	s := newTestSinks(t, []Spec{sp}, 1)
	w := s.Writer(0)
	for _, d := range []engine.Decision{
		{Raw: []byte(`{"user_id":"a.b c*d>e\tf"}`), Action: engine.ActionAlert, Rule: "big payment"},
		{Raw: []byte(`{"user_id":""}`), Action: engine.ActionPass},
		{Raw: []byte(`{"user_id":"` + strings.Repeat("k", 300) + `"}`), Action: engine.ActionPass},
		{Raw: []byte(`{"user_id"`), Err: engine.ErrInvalidJSON, Action: engine.ActionDrop},
	} {
		w.AddAt(&d, 0)
	}
	w.FlushAll()
	closeSinks(t, s)
	checkIdentity(t, 4, s.Stats()[0])
	var subjects []string
	for _, m := range sinktest.StreamMessages(t, srv.URL(), "EVENTS") {
		subjects = append(subjects, m.Subject())
	}
	want := []string{"xgate.alert.big_payment.a_b_c_d_e_f", "xgate.pass._._", "xgate.pass._." + strings.Repeat("k", 256), "xgate.reject.invalid_json._"}
	if fmt.Sprint(subjects) != fmt.Sprint(want) {
		t.Fatalf("subjects %q\nwant %q", subjects, want)
	}
}

// TestNATSSinkServerRestart kills the server mid-stream and starts it
// again with the same store: every acknowledged event is there once,
// what the full buffer dropped is counted, and publishing resumes.
func TestNATSSinkServerRestart(t *testing.T) {
	srv := sinktest.StartNATS(t)
	r := keyedOutage(t, natsSpec(srv.URL()), srv.Kill, func(s *Sinks, during Stats) {
		srv.Start(t)
		waitFor(t, "records after the restart", 5*time.Second, func() bool { return s.Stats()[0].Records > during.Records+during.InFlight })
		time.Sleep(500 * time.Millisecond)
	})
	st := r.end
	msgs := sinktest.StreamMessages(t, srv.URL(), "EVENTS")
	if len(msgs) != int(st.Records) {
		t.Fatalf("stream holds %d messages, the sink counted %d acknowledged", len(msgs), st.Records)
	}
	checkMessages(t, msgs, r.from, r.to)
}

// TestNATSSinkDeliveryTimeout: while the server is down longer than
// delivery_timeout, records are counted failed; the identity holds.
func TestNATSSinkDeliveryTimeout(t *testing.T) {
	srv := sinktest.StartNATS(t)
	sp := natsSpec(srv.URL())
	sp.DeliveryTimeout = time.Second
	s := newTestSinks(t, []Spec{sp}, 1)
	stop := make(chan struct{})
	wait := feeder(s, 1, 1<<30, time.Millisecond, stop)
	waitFor(t, "records", 5*time.Second, func() bool { return s.Stats()[0].Records > 0 })
	srv.Kill()
	waitFor(t, "failed records", 5*time.Second, func() bool { return s.Stats()[0].Failed > 0 })
	srv.Start(t)
	failed := s.Stats()[0]
	waitFor(t, "records after the restart", 5*time.Second, func() bool { return s.Stats()[0].Records > failed.Records+failed.InFlight })
	close(stop)
	added := sum(wait())
	closeSinks(t, s)
	st := s.Stats()[0]
	checkIdentity(t, added, st)
	if st.Errors < st.Failed || st.LastError == "" {
		t.Fatalf("stats %+v", st)
	}
	// A message stored just before the kill, whose ack was lost, may have
	// failed its retries: the stream holds the acknowledged ones and at
	// most those.
	if n := uint64(len(sinktest.StreamMessages(t, srv.URL(), "EVENTS"))); n < st.Records || n > st.Records+st.Failed {
		t.Fatalf("stream holds %d messages; %d acknowledged, %d failed", n, st.Records, st.Failed)
	}
}

// TestNATSSinkStreamCheck: a missing stream is an error at start unless
// create_stream; a stream that does not take the template's subjects too.
func TestNATSSinkStreamCheck(t *testing.T) {
	srv := sinktest.StartNATS(t)
	sp := natsSpec(srv.URL())
	sp.NATS.CreateStream = false
	_, err := New([]Spec{sp}, 1)
	want := "sinks[0] (nats:xgate.events.{key}): stream EVENTS does not exist on " + srv.URL() + ": create it or set create_stream: true"
	if err == nil || err.Error() != want {
		t.Fatalf("error %v\nwant %s", err, want)
	}
	sp.NATS.CreateStream, sp.NATS.StreamSubjects = true, []string{"xgate.>"}
	s := newTestSinks(t, []Spec{sp}, 1)
	closeSinks(t, s)
	// The stream exists now, with subjects xgate.>; a template outside them:
	sp.NATS.CreateStream, sp.NATS.StreamSubjects, sp.NATS.Subject = false, nil, "other.{key}"
	_, err = New([]Spec{sp}, 1)
	if err == nil || !strings.Contains(err.Error(), "stream EVENTS (subjects [xgate.>]) does not take every subject of other.{key}: add other.* to its subjects") {
		t.Fatalf("error %v", err)
	}
	sp.NATS.URLs = []string{fmt.Sprintf("nats://127.0.0.1:%d", sinktest.FreePort(t))}
	if _, err = New([]Spec{sp}, 1); err == nil || !strings.Contains(err.Error(), "nats servers "+sp.NATS.URLs[0]+": ") {
		t.Fatalf("unreachable: %v", err)
	}
}

// BenchmarkNATSSink measures records/s from one worker through the sink
// to a nats-server (a process of the test's, JetStream on, file store) on
// loopback, every record acknowledged (OnFull block).
func BenchmarkNATSSink(b *testing.B) {
	sp := natsSpec(sinktest.StartNATS(b).URL())
	sp.OnFull, sp.BlockTimeout, sp.Buffer = "block", time.Minute, 4<<20
	benchKeyedSink(b, sp)
}
