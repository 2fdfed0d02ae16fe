package sink

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/sink/spool"
)

// TestSpoolSpecCheck: the spool keys' problems.
func TestSpoolSpecCheck(t *testing.T) {
	base := natsSpec("nats://127.0.0.1:4222")
	for _, c := range []struct {
		spool spool.Config
		typ   string
		want  string
	}{
		{spool.Config{Path: "spool"}, "", `sinks[0].spool.path: "spool": want an absolute path`},
		{spool.Config{MaxBytes: 1 << 20}, "", "sinks[0].spool.path: missing"},
		{spool.Config{Path: "/s/../t"}, "", `want it clean, as "/t"`},
		{spool.Config{Path: "/s", MaxBytes: 1000}, "", "sinks[0].spool.max_bytes: 1000: want a size in 1MiB..1TiB"},
		{spool.Config{Path: "/s", Fsync: "always"}, "", `sinks[0].spool.fsync: "always": want batch`},
		{spool.Config{Path: "/s"}, "file", "sinks[0].spool: only kafka and nats sinks have spool"},
	} {
		sp := base
		sp.Spool = c.spool
		if c.typ == "file" {
			sp = Spec{Type: "file", What: "all", Path: "/tmp/x", Spool: c.spool}
		}
		errs := Check([]Spec{sp}, nil)
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.spool, errs, c.want)
		}
	}
	a, b := base, base
	a.Spool.Path, b.Spool.Path = "/s", "/s"
	if errs := Check([]Spec{a, b}, nil); len(errs) != 1 || !strings.Contains(errs[0].Error(), `sinks[1].spool.path: "/s" is also the spool of sinks[0]`) {
		t.Errorf("shared spool: %v", errs)
	}
	if d := a.WithDefaults(); d.Spool.MaxBytes != spool.DefaultBytes || d.Spool.Fsync != "batch" {
		t.Errorf("defaults %+v", d.Spool)
	}
}

// recordingOutput is a sinkOutput that keeps the slabs written to it.
type recordingOutput struct{ slabs []*slab }

func (o *recordingOutput) write(sl *slab)      { o.slabs = append(o.slabs, sl) }
func (o *recordingOutput) afterRound(int64)    {}
func (o *recordingOutput) idle(int64)          {}
func (o *recordingOutput) tick() time.Duration { return 0 }
func (o *recordingOutput) finish() error       { return nil }
func (o *recordingOutput) abort()              {}

// TestSpoolReplayLargerThanSlab: a record spooled under a larger buffer
// than this start's is replayed in a replay slab grown to it; before, the
// replay stopped at it for good and every new record queued behind it.
func TestSpoolReplayLargerThanSlab(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	q, err := spool.Open(dir, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{'x'}, 10000)
	if !q.Append(nil, big, 1) || !q.Append(nil, []byte("small"), 2) {
		t.Fatal("append refused")
	}
	if err := q.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	out := &recordingOutput{}
	sk := &sink{slabSize: 8 << 10, slabs: 4, out: out}
	p, err := newSpooler(sk, Spec{Spool: spool.Config{Path: dir, MaxBytes: 1 << 20}, DeliveryTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.q.Close()
	p.replay()
	var got [][]byte
	for _, sl := range out.slabs {
		from := 0
		for _, end := range sl.ends {
			got = append(got, sl.buf[from:end])
			from = int(end)
		}
	}
	if p.q.Unread() != 0 || len(got) != 2 || !bytes.Equal(got[0], big) || string(got[1]) != "small" {
		t.Fatalf("unread %d, replayed %d records", p.q.Unread(), len(got))
	}
}

// TestSpoolStopByDeadline: at Close, the wait for records in flight ends
// before Close's deadline (less a margin for giving up and the spool's last
// write), not after the full grace: the records are given up and spooled
// before the process ends, instead of cut off with it.
func TestSpoolStopByDeadline(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	out := &recordingOutput{}
	sk := &sink{slabSize: 8 << 10, slabs: 4, out: out}
	p, err := newSpooler(sk, Spec{Spool: spool.Config{Path: dir, MaxBytes: 1 << 20}, DeliveryTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.q.Close()
	gaveUp := false
	p.giveUp = func() { gaveUp = true }
	p.send(&slab{buf: []byte("x"), ends: []uint32{1}}) // in flight, never back
	sk.stopBy.Store(time.Now().Add(1500 * time.Millisecond).UnixNano())
	t0 := time.Now()
	p.stop(make(chan *slab), func(*slab) {})
	if took := time.Since(t0); took > 3*time.Second || !gaveUp {
		t.Errorf("stop took %v (grace %v), gave up %v: want it done before Close's deadline", took, p.grace, gaveUp)
	}
}
