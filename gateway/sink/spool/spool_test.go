package spool

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func spoolRecord(i int) []byte {
	return fmt.Appendf(nil, "record-%06d-%s", i, strings.Repeat("x", i%97))
}

// readAll replays every unread record of q, checking each against
// spoolRecord from first on, and returns how many it read.
func readAll(t *testing.T, q *Queue, first int) int {
	t.Helper()
	n := 0
	for {
		r, ok, err := q.Peek()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return n
		}
		if want := spoolRecord(first + n); !bytes.Equal(r.Data, want) || string(r.ID) != fmt.Sprintf("id-%d", first+n) {
			t.Fatalf("record %d: %q id %q, want %q", first+n, r.Data, r.ID, want)
		}
		q.Advance(r)
		n++
	}
}

func appendN(t *testing.T, q *Queue, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if !q.Append(fmt.Appendf(nil, "id-%d", i), spoolRecord(i), int64(i)+1) {
			t.Fatalf("append %d refused", i)
		}
	}
	if err := q.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestSpoolReopen: records come back in order; what was acknowledged is
// not replayed after a reopen, what was read but not acknowledged is;
// segments roll and wholly acknowledged ones are removed.
func TestSpoolReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	q, err := Open(dir, 1<<20, true)
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
	q.Ack(q.segs[segs-2].start)
	if err := q.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(q.segs) != 2 {
		t.Fatalf("%d segments after the ack, want 2", len(q.segs))
	}
	ackedAt := q.acked
	if err := q.Close(); err != nil {
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

	q, err = Open(dir, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.acked != ackedAt || q.read != ackedAt {
		t.Fatalf("acked %d read %d, want %d", q.acked, q.read, ackedAt)
	}
	// The records of the two segments left come back, from the first of
	// them on; find its first record's number.
	r, ok, err := q.Peek()
	if err != nil || !ok {
		t.Fatalf("peek: %v %v", ok, err)
	}
	var first int
	fmt.Sscanf(string(r.ID), "id-%d", &first)
	unread := q.unread
	if first+unread != 10000 {
		t.Fatalf("first %d + unread %d != 10000", first, unread)
	}
	if n := readAll(t, q, first); n != unread {
		t.Fatalf("read %d of %d", n, unread)
	}
	q.Ack(q.read)
	appendN(t, q, 10000, 10) // rolls: the last segment is delivered
	if n := readAll(t, q, 10000); n != 10 {
		t.Fatalf("read %d after the roll", n)
	}
	if len(q.segs) != 1 { // the delivered ones went with the roll
		t.Fatalf("%d segments", len(q.segs))
	}
	q.Ack(q.read)
	if q.unread != 0 || q.Oldest() != 0 || q.disk != 0 || len(q.segs) != 1 {
		t.Fatalf("unread %d oldest %d disk %d segments %d", q.unread, q.Oldest(), q.disk, len(q.segs))
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
			q, err := Open(dir, 1<<20, false)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, q, 0, 100)
			seg := q.segPath(q.segs[len(q.segs)-1].start)
			q.Close()
			data, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			size := len(data)
			if err := os.WriteFile(seg, c.tear(data), 0o600); err != nil {
				t.Fatal(err)
			}
			q, err = Open(dir, 1<<20, false)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
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
	q, err := Open(t.TempDir(), MinBytes, true)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	n := 0
	for ; q.Append([]byte("id"), spoolRecord(n), 1); n++ {
		if n > 1<<20 {
			t.Fatal("never full")
		}
	}
	if q.disk > MinBytes || q.disk < MinBytes-2048 {
		t.Fatalf("full at %d bytes of %d", q.disk, MinBytes)
	}
	if err := q.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		r, ok, err := q.Peek()
		if err != nil || !ok {
			break
		}
		q.Advance(r)
	}
	q.Ack(q.read)
	if !q.Append([]byte("id"), spoolRecord(0), 1) {
		t.Fatalf("still full after everything was acknowledged (disk %d, %d segments)", q.disk, len(q.segs))
	}
}

// TestSpoolLockAndLinks: a second user of a spool directory is refused,
// and so are symbolic links for the directory and its files.
func TestSpoolLockAndLinks(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 1<<20, true); err == nil || !strings.Contains(err.Error(), "in use by another sink or daemon") {
		t.Fatalf("second open: %v", err)
	}
	q.Close()
	q, err = Open(dir, 1<<20, true) // the lock went with close
	if err != nil {
		t.Fatal(err)
	}
	q.Close()

	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(link, 1<<20, true); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("linked dir: %v", err)
	}
	dir2 := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, nil, 0o600)
	if err := os.Symlink(victim, filepath.Join(dir2, "acked")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir2, 1<<20, true); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("linked state file: %v", err)
	}
}

// TestSpoolWriteFails: a round's write fails (a full or failing disk)
// while the buffer holds records already read, as the spooler's adopted
// ones are (AppendSent: in flight), and a stored one. Nothing is lost
// or miscounted: the next flush writes them; when the adopted ones fail
// and the replay is rewound, every record comes back in order, and after
// a reopen too. Before, the failed write cut all three and counted them
// lost, though two were in flight: the unread count went negative and
// the read offset past the tail, and the next replay cut the spool.
func TestSpoolWriteFails(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close() }()
	appendN(t, q, 0, 2)
	if n := readAll(t, q, 0); n != 2 {
		t.Fatalf("read %d", n)
	}
	q.Ack(q.read)
	acked := q.acked
	for i := 2; i < 4; i++ {
		if _, ok := q.AppendSent(fmt.Appendf(nil, "id-%d", i), spoolRecord(i), 1); !ok {
			t.Fatalf("appendSent %d refused", i)
		}
	}
	if !q.Append([]byte("id-4"), spoolRecord(4), 1) {
		t.Fatal("append refused")
	}
	w := q.w
	if q.w, err = os.Open(q.segPath(q.segs[len(q.segs)-1].start)); err != nil { // read only: the write fails
		t.Fatal(err)
	}
	if err := q.Flush(); err == nil {
		t.Fatal("flush to a read-only file succeeded")
	}
	q.w.Close()
	q.w = w
	if _, lost, err := q.TakeLost(); lost != 0 || err == nil {
		t.Fatalf("failed write: %d records lost (%v), want 0 and the error", lost, err)
	}
	if q.unread != 1 || q.read > q.tail {
		t.Fatalf("after the failed write: unread %d, read %d, tail %d", q.unread, q.read, q.tail)
	}
	if err := q.Flush(); err != nil {
		t.Fatal(err)
	}
	q.Rewind(2, 1) // the adopted records failed
	if n := readAll(t, q, 2); n != 3 {
		t.Fatalf("after the rewind read %d records, want 3", n)
	}
	if _, lost, err := q.TakeLost(); lost != 0 || err != nil {
		t.Fatalf("%d records lost: %v", lost, err)
	}
	q.Close()
	if q, err = Open(dir, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	if q.acked != acked || readAll(t, q, 2) != 3 {
		t.Fatalf("after a reopen: acked %d (want %d), unread %d", q.acked, acked, q.unread)
	}
	// The last write, at close, fails: the record it had is lost, and
	// counted so (not unread too).
	if !q.Append([]byte("id-5"), spoolRecord(5), 1) {
		t.Fatal("append refused")
	}
	q.w.Close()
	if q.w, err = os.Open(q.segPath(q.segs[len(q.segs)-1].start)); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err == nil {
		t.Fatal("close with a failed write succeeded")
	}
	if _, lost, _ := q.TakeLost(); lost != 1 || q.Unread() != 0 {
		t.Fatalf("failed write at close: %d records lost, %d unread; want 1, 0", lost, q.Unread())
	}
}
