package sink

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func spoolRecord(i int) []byte {
	return fmt.Appendf(nil, "record-%06d-%s", i, strings.Repeat("x", i%97))
}

// readAll replays every unread record of q, checking each against
// spoolRecord from first on, and returns how many it read.
func readAll(t *testing.T, q *spool, first int) int {
	t.Helper()
	n := 0
	for {
		r, ok, err := q.peek()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return n
		}
		if want := spoolRecord(first + n); !bytes.Equal(r.rec, want) || string(r.id) != fmt.Sprintf("id-%d", first+n) {
			t.Fatalf("record %d: %q id %q, want %q", first+n, r.rec, r.id, want)
		}
		q.advance(r)
		n++
	}
}

func appendN(t *testing.T, q *spool, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if !q.append(fmt.Appendf(nil, "id-%d", i), spoolRecord(i), int64(i)+1) {
			t.Fatalf("append %d refused", i)
		}
	}
	if err := q.flush(); err != nil {
		t.Fatal(err)
	}
}

// TestSpoolReopen: records come back in order; what was acknowledged is
// not replayed after a reopen, what was read but not acknowledged is;
// segments roll and wholly acknowledged ones are removed.
func TestSpoolReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	q, err := openSpool(dir, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, q, 0, 10000) // ~0.9 MB: several 256 KiB segments
	if q.unread != 10000 || len(q.segs) < 2 {
		t.Fatalf("unread %d, segments %d", q.unread, len(q.segs))
	}
	segs := len(q.segs)
	if n := readAll(t, q, 0); n != 10000 {
		t.Fatalf("read %d", n)
	}
	// Acknowledge up to the start of the last segment but one.
	q.ack(q.segs[segs-2].start)
	if err := q.flush(); err != nil {
		t.Fatal(err)
	}
	if len(q.segs) != 2 {
		t.Fatalf("%d segments after the ack, want 2", len(q.segs))
	}
	ackedAt := q.acked
	if err := q.close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != spoolDirMode {
		t.Fatalf("spool dir: %v %v", st.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, _ := e.Info(); fi.Mode().Perm() != spoolFileMode {
			t.Errorf("%s: mode %v", e.Name(), fi.Mode())
		}
	}

	q, err = openSpool(dir, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	if q.acked != ackedAt || q.read != ackedAt {
		t.Fatalf("acked %d read %d, want %d", q.acked, q.read, ackedAt)
	}
	// The records of the two segments left come back, from the first of
	// them on; find its first record's number.
	r, ok, err := q.peek()
	if err != nil || !ok {
		t.Fatalf("peek: %v %v", ok, err)
	}
	var first int
	fmt.Sscanf(string(r.id), "id-%d", &first)
	unread := q.unread
	if first+unread != 10000 {
		t.Fatalf("first %d + unread %d != 10000", first, unread)
	}
	if n := readAll(t, q, first); n != unread {
		t.Fatalf("read %d of %d", n, unread)
	}
	q.ack(q.read)
	appendN(t, q, 10000, 10) // rolls: the last segment is delivered
	if n := readAll(t, q, 10000); n != 10 {
		t.Fatalf("read %d after the roll", n)
	}
	if len(q.segs) != 1 { // the delivered ones went with the roll
		t.Fatalf("%d segments", len(q.segs))
	}
	q.ack(q.read)
	if q.unread != 0 || q.oldest() != 0 || q.disk != 0 || len(q.segs) != 1 {
		t.Fatalf("unread %d oldest %d disk %d segments %d", q.unread, q.oldest(), q.disk, len(q.segs))
	}
}

// TestSpoolTornTail: a frame half written (a crash in the middle of a
// write) is cut on open and counted; the records before it are kept, and
// appending goes on after them.
func TestSpoolTornTail(t *testing.T) {
	for _, c := range []struct {
		name string
		tear func(data []byte) []byte
	}{
		{"short", func(b []byte) []byte { return b[:len(b)-7] }},
		{"crc", func(b []byte) []byte { b[len(b)-3] ^= 0xff; return b }},
		{"length", func(b []byte) []byte { return append(b, 0xff, 0xff, 0xff, 0x7f, 1, 2) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			q, err := openSpool(dir, 1<<20, false)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, q, 0, 100)
			seg := q.segPath(q.segs[len(q.segs)-1].start)
			q.close()
			data, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			size := len(data)
			if err := os.WriteFile(seg, c.tear(data), 0o600); err != nil {
				t.Fatal(err)
			}
			q, err = openSpool(dir, 1<<20, false)
			if err != nil {
				t.Fatal(err)
			}
			defer q.close()
			want := 99
			if c.name == "length" {
				want = 100
			}
			if q.unread != want || q.torn == 0 {
				t.Fatalf("unread %d torn %d, want %d records and bytes cut", q.unread, q.torn, want)
			}
			if fi, _ := os.Stat(seg); c.name != "length" && fi.Size() >= int64(size) || c.name == "length" && fi.Size() != int64(size) {
				t.Fatalf("segment %d bytes after the cut (was %d)", fi.Size(), size)
			}
			appendN(t, q, want, 5)
			if n := readAll(t, q, 0); n != want+5 {
				t.Fatalf("read %d", n)
			}
		})
	}
}

// TestSpoolFull: max_bytes bounds the files; a full spool refuses, and
// takes records again once the replayed ones are acknowledged.
func TestSpoolFull(t *testing.T) {
	q, err := openSpool(t.TempDir(), spoolMinBytes, true)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	n := 0
	for ; q.append([]byte("id"), spoolRecord(n), 1); n++ {
		if n > 1<<20 {
			t.Fatal("never full")
		}
	}
	if q.disk > spoolMinBytes || q.disk < spoolMinBytes-2048 {
		t.Fatalf("full at %d bytes of %d", q.disk, spoolMinBytes)
	}
	if err := q.flush(); err != nil {
		t.Fatal(err)
	}
	for {
		r, ok, err := q.peek()
		if err != nil || !ok {
			break
		}
		q.advance(r)
	}
	q.ack(q.read)
	if !q.append([]byte("id"), spoolRecord(0), 1) {
		t.Fatalf("still full after everything was acknowledged (disk %d, %d segments)", q.disk, len(q.segs))
	}
}

// TestSpoolLockAndLinks: a second user of a spool directory is refused,
// and so are symbolic links for the directory and its files.
func TestSpoolLockAndLinks(t *testing.T) {
	dir := t.TempDir()
	q, err := openSpool(dir, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openSpool(dir, 1<<20, true); err == nil || !strings.Contains(err.Error(), "in use by another sink or daemon") {
		t.Fatalf("second open: %v", err)
	}
	q.close()
	q, err = openSpool(dir, 1<<20, true) // the lock went with close
	if err != nil {
		t.Fatal(err)
	}
	q.close()

	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := openSpool(link, 1<<20, true); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("linked dir: %v", err)
	}
	dir2 := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, nil, 0o600)
	if err := os.Symlink(victim, filepath.Join(dir2, "acked")); err != nil {
		t.Fatal(err)
	}
	if _, err := openSpool(dir2, 1<<20, true); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("linked state file: %v", err)
	}
}

// TestSpoolSpecCheck: the spool keys' problems.
func TestSpoolSpecCheck(t *testing.T) {
	base := natsSpec("nats://127.0.0.1:4222")
	for _, c := range []struct {
		spool SpoolSpec
		typ   string
		want  string
	}{
		{SpoolSpec{Path: "spool"}, "", `sinks[0].spool.path: "spool": want an absolute path`},
		{SpoolSpec{MaxBytes: 1 << 20}, "", "sinks[0].spool.path: missing"},
		{SpoolSpec{Path: "/s/../t"}, "", `want it clean, as "/t"`},
		{SpoolSpec{Path: "/s", MaxBytes: 1000}, "", "sinks[0].spool.max_bytes: 1000: want a size in 1MiB..1TiB"},
		{SpoolSpec{Path: "/s", Fsync: "always"}, "", `sinks[0].spool.fsync: "always": want batch`},
		{SpoolSpec{Path: "/s"}, "file", "sinks[0].spool: only kafka and nats sinks have spool"},
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
	if d := a.WithDefaults(); d.Spool.MaxBytes != spoolDefaultBytes || d.Spool.Fsync != "batch" {
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
	q, err := openSpool(dir, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{'x'}, 10000)
	if !q.append(nil, big, 1) || !q.append(nil, []byte("small"), 2) {
		t.Fatal("append refused")
	}
	if err := q.flush(); err != nil {
		t.Fatal(err)
	}
	if err := q.close(); err != nil {
		t.Fatal(err)
	}
	out := &recordingOutput{}
	sk := &sink{slabSize: 8 << 10, slabs: 4, out: out}
	p, err := newSpooler(sk, Spec{Spool: SpoolSpec{Path: dir, MaxBytes: 1 << 20}, DeliveryTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.q.close()
	p.replay()
	var got [][]byte
	for _, sl := range out.slabs {
		from := 0
		for _, end := range sl.ends {
			got = append(got, sl.buf[from:end])
			from = int(end)
		}
	}
	if p.q.unread != 0 || len(got) != 2 || !bytes.Equal(got[0], big) || string(got[1]) != "small" {
		t.Fatalf("unread %d, replayed %d records", p.q.unread, len(got))
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
	p, err := newSpooler(sk, Spec{Spool: SpoolSpec{Path: dir, MaxBytes: 1 << 20}, DeliveryTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.q.close()
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
