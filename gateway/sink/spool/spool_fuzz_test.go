package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// FuzzSpoolState: whatever the state file holds (torn, forged, the older
// format without the delivered set), opening the spool never panics, the
// acked offset stays within the segments, and the replay reads the records
// from it on in order, skipping only offsets of the delivered set.
func FuzzSpoolState(f *testing.F) {
	state := func(acked int64, delivered ...int64) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(acked))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(delivered)))
		for _, d := range delivered {
			b = binary.LittleEndian.AppendUint64(b, uint64(d))
		}
		return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	}
	old := binary.LittleEndian.AppendUint64(nil, 100)
	f.Add(binary.LittleEndian.AppendUint32(old, crc32.Checksum(old, castagnoli)))
	f.Add(state(0))
	f.Add(state(0, 0, 200, 1<<40))
	f.Add(state(1<<62, 5))
	f.Add(state(-1, -1))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, st []byte) {
		dir := filepath.Join(t.TempDir(), "spool")
		q, err := Open(dir, 1<<20, false)
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, q, 0, 50)
		tail := q.tail
		q.Close()
		if err := os.WriteFile(filepath.Join(dir, "acked"), st, 0o600); err != nil {
			t.Fatal(err)
		}
		q, err = Open(dir, 1<<20, false)
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		if q.acked < 0 || q.acked > tail || q.read != q.acked || q.tail != tail {
			t.Fatalf("acked %d read %d tail %d (was %d)", q.acked, q.read, q.tail, tail)
		}
		for _, d := range q.delivered {
			if d < q.acked || d >= q.tail {
				t.Fatalf("delivered offset %d outside [%d, %d)", d, q.acked, q.tail)
			}
		}
		// The records from acked on come in order; the first one read
		// fixes where the numbering starts.
		next, n := -1, 0
		for {
			r, ok, err := q.Peek()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			q.Advance(r)
			n++
			if q.IsDelivered(r.Off) {
				continue
			}
			var i int
			if _, err := fmt.Sscanf(string(r.ID), "id-%d", &i); err != nil {
				t.Fatalf("id %q: %v", r.ID, err)
			}
			if next >= 0 && i <= next {
				t.Fatalf("record %d after %d", i, next)
			}
			next = i
		}
		if q.unread != 0 || n == 0 && q.acked != tail {
			t.Fatalf("read %d records, unread %d, acked %d of %d", n, q.unread, q.acked, tail)
		}
	})
}
