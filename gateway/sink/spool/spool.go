// Package spool is the disk spool of a Kafka or NATS sink (spool: {path,
// max_bytes, fsync}): an append-only queue of keyed records in files under
// the sink's own directory. This package has its configuration and its
// format; the sink's spooler (gateway/sink/spooler.go) puts it between the
// sink's writer goroutine and the broker.
//
// Layout of spool.path (created 0700; files 0600, opened without
// following symbolic links):
//
//	LOCK                    flock'ed (exclusive, non-blocking) while a
//	                        daemon uses the spool: a second one is refused
//	acked                   the spool offset up to which every record is
//	                        delivered (8 bytes little endian), the number n
//	                        of records after it the broker has too (4
//	                        bytes; a replay skips them), their offsets (n ×
//	                        8 bytes), and CRC32C of all that (4 bytes)
//	<16 hex digits>.seg     a segment: the frames from that spool offset on
//
// A spool offset counts bytes of frames since the spool was made; a
// segment's name is the offset of its first frame, and segments follow one
// another without gaps. A frame is
//
//	[0:4]  length n of the payload (little endian)
//	[4:8]  CRC32C (Castagnoli) of the payload
//	[8:]   payload: spooled-at time (8 bytes, ns since the Unix epoch),
//	       the length of the message id (1 byte), the message id (NATS:
//	       the Nats-Msg-Id the record is published with, every time;
//	       Kafka: none), and the keyed record as a slab holds it
//	       (output.HeaderLen and what follows)
//
// Frames never span segments. Opening the spool reads every segment and
// cuts it at the first frame that is short or fails its CRC (a crash in
// the middle of a write): the file is truncated there and later segments
// are removed; the bytes cut are counted (Stats.TornBytes). Segments whose
// frames are all before the acknowledged offset are removed.
//
// Order. Records are replayed in spool order, and a record the broker
// fails is never appended again: the spooler rewinds the replay to the
// acked offset (gateway/sink/spooler.go), so a key's records reach the broker in the
// order they came. Records after the acked offset that the broker did
// take are remembered (the delivered set, saved with the acked offset) and
// skipped by the replay, so that a rewind sends none of them twice.
//
// Durability. Appends are buffered and written with one write per round
// of the writer goroutine; with fsync: batch (the default) the segment is
// fsynced then, and the state (acked offset, delivered set) is written
// and fsynced after the round's frames, so a crash loses no record the
// broker has not taken: at worst it replays some that were delivered
// already, which the broker's de-duplication (NATS: the message id;
// Kafka: at least once, with the id header) absorbs. fsync: never leaves the
// writes to the page cache (a host crash may lose the last seconds).
//
// Concurrency: a spool is used by its sink's writer goroutine only.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config (spool: {path, max_bytes, fsync}; kafka and nats sinks) is a
// sink's disk spool: what the sink's memory buffer cannot hold while the
// broker is down or slow goes there, and is replayed in order once it
// takes records again, also after a restart.
type Config struct {
	// Path is the spool's directory, absolute, this sink's alone (created
	// 0700 if missing).
	Path string
	// MaxBytes bounds the spool's files (1 MiB .. 1 TiB; default 1 GiB).
	// A full spool takes no more records: with on_full drop they are
	// dropped and counted (Stats.SpoolDropped, in Dropped); with block,
	// the writer keeps them in the sink's buffer until the spool has
	// room, so the workers wait up to block_timeout and then drop.
	MaxBytes int64
	// Fsync: "batch" (default: fsync after each round of appends) or
	// "never".
	Fsync string
}

// On reports whether the config set any key of the spool.
func (s Config) On() bool { return s != Config{} }

const (
	MinBytes         = 1 << 20
	MaxBytes         = 1 << 40
	DefaultBytes     = 1 << 30
	spoolFrameHeader = 8        // length, CRC32C
	spoolRecHeader   = 9        // spooled-at time, id length
	spoolMaxSegment  = 64 << 20 // bytes of one segment file, at most
	spoolMaxFrame    = 1 << 20  // a payload longer than this is corrupt (records are at most a slab)
	spoolDirMode     = 0o700
	spoolFileMode    = 0o600
	spoolSegSuffix   = ".seg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Check returns the config's first problem: the key (under the sink's,
// e.g. spool.path) and what is wrong; "" if none.
func (s Config) Check() (key, msg string) {
	if !s.On() {
		return "", ""
	}
	switch {
	case s.Path == "":
		return "spool.path", "missing: want an absolute directory of this sink's own"
	case !filepath.IsAbs(s.Path):
		return "spool.path", fmt.Sprintf("%q: want an absolute path", s.Path)
	case filepath.Clean(s.Path) != s.Path:
		return "spool.path", fmt.Sprintf("%q: want it clean, as %q", s.Path, filepath.Clean(s.Path))
	}
	if m := s.MaxBytes; m != 0 && (m < MinBytes || m > MaxBytes) {
		return "spool.max_bytes", fmt.Sprintf("%d: want a size in 1MiB..1TiB (default 1GiB)", m)
	}
	switch s.Fsync {
	case "", "batch", "never":
	default:
		return "spool.fsync", fmt.Sprintf("%q: want batch (fsync every round of writes) or never", s.Fsync)
	}
	return "", ""
}

// WithDefaults returns s with its unset keys at their defaults when it
// is on.
func (s Config) WithDefaults() Config {
	if s.Path == "" {
		return s
	}
	if s.MaxBytes == 0 {
		s.MaxBytes = DefaultBytes
	}
	if s.Fsync == "" {
		s.Fsync = "batch"
	}
	return s
}

// Bound bounds the spool bytes of n records of recBytes bytes in all.
func Bound(recBytes, n int) int64 {
	return int64(recBytes) + int64(n)*(spoolFrameHeader+spoolRecHeader+255)
}

// Unread is the records not yet read (replayed).
func (q *Queue) Unread() int { return q.unread }

// Acked, ReadOffset and Tail are the spool offsets up to which every
// record is delivered, of the next record to read, and after the last.
func (q *Queue) Acked() int64      { return q.acked }
func (q *Queue) ReadOffset() int64 { return q.read }
func (q *Queue) Tail() int64       { return q.tail }

// Pending reports whether frames or the state wait to be written.
func (q *Queue) Pending() bool {
	return q.acked != q.ackedSaved || q.dirty || q.wrecs > 0
}

// DiskBytes is the bytes of the spool's segments (those not yet written
// included); Fsyncs and TornBytes count fsync calls and the bytes cut as
// torn or corrupt, since Open.
func (q *Queue) DiskBytes() int64  { return q.disk }
func (q *Queue) Fsyncs() uint64    { return q.fsyncs }
func (q *Queue) TornBytes() uint64 { return q.torn }

// TakeLost returns, and resets, the failed calls since the last take,
// the records they lost (failed writes, a corrupt spool), and the last
// error.
func (q *Queue) TakeLost() (errs, records uint64, last error) {
	errs, records, last = q.errs, q.lostRecs, q.lastErr
	q.errs, q.lostRecs, q.lastErr = 0, 0, nil
	return errs, records, last
}

// spoolSeg is one segment file.
type spoolSeg struct {
	start int64 // spool offset of its first byte (its name)
	size  int64 // bytes written to it (wbuf not included)
}

func (s spoolSeg) end() int64 { return s.start + s.size }

// spoolMark is the spool time of the frames from off on (until the next
// mark): what the oldest-record age is read from.
type spoolMark struct {
	off, ns int64
}

// spoolRec is one frame's payload, as views into the spool's read buffer
// (valid until the next peek or advance).
type Record struct {
	NS   int64  // spooled at, ns since the Unix epoch
	ID   []byte // message id
	Data []byte // the keyed record
	Off  int64  // spool offset of the frame
	End  int64  // spool offset after the frame
}

// spoolMaxDelivered bounds the delivered set (8 MiB of state): past it, a
// rewind sends again what the broker has (at least once). The set holds
// offsets of [acked, read), which one round of slabs in flight covers,
// so it reaches this only after many rewinds of partial failures without
// the acked offset moving.
const spoolMaxDelivered = 1 << 20

// spool is the on-disk queue (see the top of the file).
type Queue struct {
	dir    string
	lock   *os.File
	state  *os.File // "acked"
	segs   []spoolSeg
	w      *os.File // the last segment, appended to
	wbuf   []byte   // frames appended and not yet written
	wrecs  int      // frames in wbuf
	max    int64
	segMax int64
	fsync  bool

	acked      int64 // everything before is delivered
	ackedSaved int64 // acked as the state file has it
	// delivered are the offsets of frames at or after acked the broker
	// has (sorted): a replay skips them. dirty: not yet in the state file.
	delivered    []int64
	maxDelivered int
	dirty        bool
	stateBuf     []byte
	read         int64 // the next frame to replay
	tail         int64 // after the last frame (wbuf included)
	unread       int   // frames from read to tail
	disk         int64 // bytes of every segment file plus wbuf
	marks        []spoolMark

	r     *os.File // the segment being read
	rseg  int64    // its start
	rbuf  []byte
	rbase int64 // spool offset of rbuf[0]
	rlen  int   // valid bytes in rbuf

	// Counted here, taken by the spooler: fsync calls, bytes cut, records
	// lost to failed writes or a corrupt spool, failed calls and the last
	// error.
	fsyncs, torn, lostRecs, errs uint64
	lastErr                      error
}

// openSpool opens (creating) the spool in dir, cuts a torn tail and finds
// the records not yet acknowledged.
func Open(dir string, maxBytes int64, fsync bool) (*Queue, error) {
	if err := os.MkdirAll(dir, spoolDirMode); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if st, err := os.Lstat(dir); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("spool: %s is not a directory (a symbolic link is refused too)", dir)
	}
	q := &Queue{dir: dir, max: maxBytes, fsync: fsync, rbuf: make([]byte, 256<<10), maxDelivered: spoolMaxDelivered}
	q.segMax = min(spoolMaxSegment, max(maxBytes/8, 256<<10))
	var err error
	if q.lock, err = openNoFollow(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE); err != nil {
		return nil, err
	}
	if err := unix.Flock(int(q.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		q.lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool %s is in use by another sink or daemon: give each sink a spool directory of its own", dir)
		}
		return nil, fmt.Errorf("spool %s: lock: %w", dir, err)
	}
	if err := q.load(); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

func openNoFollow(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, spoolFileMode)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("spool: %s is a symbolic link: refused", path)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return f, nil
}

// load reads the state and the segments.
func (q *Queue) load() error {
	var err error
	if q.state, err = openNoFollow(filepath.Join(q.dir, "acked"), os.O_RDWR|os.O_CREATE); err != nil {
		return err
	}
	acked := q.readState()
	ents, err := os.ReadDir(q.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), spoolSegSuffix)
		if !ok || len(name) != 16 || !e.Type().IsRegular() {
			continue
		}
		start, err := strconv.ParseUint(name, 16, 63)
		if err != nil {
			continue
		}
		q.segs = append(q.segs, spoolSeg{start: int64(start)})
	}
	slices.SortFunc(q.segs, func(a, b spoolSeg) int { return int(a.start - b.start) })
	if len(q.segs) == 0 {
		q.segs = []spoolSeg{{start: max(acked, 0)}}
		f, err := openNoFollow(q.segPath(q.segs[0].start), os.O_RDWR|os.O_CREATE|os.O_EXCL)
		if err != nil {
			return err
		}
		f.Close()
	}
	if acked < q.segs[0].start {
		acked = q.segs[0].start
	}
	// Scan every segment; cut at the first bad frame.
	for i := 0; i < len(q.segs); i++ {
		s := &q.segs[i]
		if i > 0 && s.start != q.segs[i-1].end() {
			// A gap: what follows cannot be placed; cut it.
			q.cutFrom(i)
			break
		}
		good, bad, err := q.scanSeg(s, acked)
		if err != nil {
			return err
		}
		s.size = good
		if bad > 0 {
			if err := os.Truncate(q.segPath(s.start), good); err != nil {
				return fmt.Errorf("spool: cut a torn segment: %w", err)
			}
			q.torn += uint64(bad)
			q.cutFrom(i + 1)
			break
		}
	}
	last := q.segs[len(q.segs)-1]
	q.tail = last.end()
	// Replay starts at the first frame at or after the saved offset (a
	// state that names no frame boundary, torn or forged, cannot make the
	// replay read from the middle of one).
	if q.unread == 0 {
		q.read = q.tail
	}
	q.acked = q.read
	q.ackedSaved = -1 // saved at the first flush
	q.delivered = slices.DeleteFunc(q.delivered, func(off int64) bool { return off < q.acked || off >= q.tail })
	for _, s := range q.segs {
		q.disk += s.size
	}
	if q.w, err = openNoFollow(q.segPath(last.start), os.O_WRONLY|os.O_APPEND); err != nil {
		return err
	}
	q.trim()
	return nil
}

// readState reads the state file: the acked offset (-1 if the file is
// new or torn: then everything in the segments is replayed) and the
// delivered set.
func (q *Queue) readState() int64 {
	b, err := io.ReadAll(io.LimitReader(q.state, 16+8*spoolMaxDelivered))
	if err != nil || len(b) < 12 {
		return -1
	}
	if len(b) >= 16 {
		n := int(binary.LittleEndian.Uint32(b[8:]))
		if end := 12 + 8*n; n <= spoolMaxDelivered && end+4 <= len(b) && crc32.Checksum(b[:end], castagnoli) == binary.LittleEndian.Uint32(b[end:]) {
			for i := range n {
				q.delivered = append(q.delivered, int64(binary.LittleEndian.Uint64(b[12+8*i:])))
			}
			slices.Sort(q.delivered)
			q.delivered = slices.Compact(q.delivered)
			return int64(binary.LittleEndian.Uint64(b))
		}
	}
	// The format without the delivered set: offset and CRC.
	if crc32.Checksum(b[:8], castagnoli) == binary.LittleEndian.Uint32(b[8:]) {
		return int64(binary.LittleEndian.Uint64(b))
	}
	return -1
}

// cutFrom removes the segments from index i on, counting their bytes torn.
func (q *Queue) cutFrom(i int) {
	for _, s := range q.segs[i:] {
		if st, err := os.Stat(q.segPath(s.start)); err == nil {
			q.torn += uint64(st.Size())
		}
		os.Remove(q.segPath(s.start))
	}
	q.segs = q.segs[:i]
}

// scanSeg reads the frames of s, counting those at or after acked as
// unread; it returns the bytes of whole good frames and the bytes after
// them.
func (q *Queue) scanSeg(s *spoolSeg, acked int64) (good, bad int64, err error) {
	f, err := openNoFollow(q.segPath(s.start), os.O_RDONLY)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("spool: %w", err)
	}
	size := st.Size()
	buf := make([]byte, 1<<20)
	var hdr [spoolFrameHeader]byte
	for good < size {
		if _, err := f.ReadAt(hdr[:], good); err != nil {
			break
		}
		n := int64(binary.LittleEndian.Uint32(hdr[0:]))
		if n < spoolRecHeader || n > spoolMaxFrame || good+spoolFrameHeader+n > size {
			break
		}
		p := buf[:n]
		if _, err := f.ReadAt(p, good+spoolFrameHeader); err != nil {
			break
		}
		if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) || int64(p[8])+spoolRecHeader > n {
			break
		}
		if off := s.start + good; off >= acked {
			if q.unread == 0 {
				q.read = off // the first record to replay
			}
			q.unread++
			q.mark(off, int64(binary.LittleEndian.Uint64(p)))
		}
		good += spoolFrameHeader + n
	}
	return good, size - good, nil
}

func (q *Queue) segPath(start int64) string {
	return filepath.Join(q.dir, fmt.Sprintf("%016x%s", start, spoolSegSuffix))
}

// mark notes that frames from off on were spooled at ns (one mark per
// 100ms of spooling at most).
func (q *Queue) mark(off, ns int64) {
	if n := len(q.marks); n > 0 && ns-q.marks[n-1].ns < int64(100*time.Millisecond) {
		return
	}
	q.marks = append(q.marks, spoolMark{off, ns})
}

// frameSize is the size of the frame of a record with id.
func frameSize(id, rec []byte) int64 {
	return spoolFrameHeader + spoolRecHeader + int64(len(id)) + int64(len(rec))
}

// fits reports whether frames of n bytes in all fit under max_bytes.
func (q *Queue) fits(n int64) bool { return q.disk+n <= q.max }

// prepare makes room for frames of n bytes if it can: it starts a new
// segment when the last one is full, or wholly delivered (so that it can
// go); false when the spool is full.
func (q *Queue) Prepare(n int64) bool {
	last := &q.segs[len(q.segs)-1]
	if size := last.size + int64(len(q.wbuf)); size > 0 && (size+n > q.segMax || q.acked >= q.tail) {
		if err := q.roll(); err != nil {
			return false
		}
	}
	return q.fits(n)
}

// append adds a record (the keyed record rec, message id id) spooled at
// ns; false, and nothing added, when the spool is full or a new segment
// cannot be made.
func (q *Queue) Append(id, rec []byte, ns int64) bool {
	n := frameSize(id, rec)
	if !q.Prepare(n) {
		return false
	}
	at := len(q.wbuf)
	q.wbuf = binary.LittleEndian.AppendUint32(q.wbuf, uint32(n-spoolFrameHeader))
	q.wbuf = append(q.wbuf, 0, 0, 0, 0)
	q.wbuf = binary.LittleEndian.AppendUint64(q.wbuf, uint64(ns))
	q.wbuf = append(q.wbuf, byte(len(id)))
	q.wbuf = append(q.wbuf, id...)
	q.wbuf = append(q.wbuf, rec...)
	binary.LittleEndian.PutUint32(q.wbuf[at+4:], crc32.Checksum(q.wbuf[at+spoolFrameHeader:], castagnoli))
	q.mark(q.tail, ns)
	q.tail += n
	q.disk += n
	q.unread++
	q.wrecs++
	return true
}

// roll writes out the last segment and starts a new one at the tail.
func (q *Queue) roll() error {
	if err := q.Flush(); err != nil {
		return err
	}
	f, err := openNoFollow(q.segPath(q.tail), os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return q.lose(0, err)
	}
	q.w.Close()
	q.w = f
	q.segs = append(q.segs, spoolSeg{start: q.tail})
	if q.fsync {
		q.syncDir()
	}
	q.trim()
	return nil
}

func (q *Queue) syncDir() {
	if d, err := os.Open(q.dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// flush writes the buffered frames (one write), fsyncs them (fsync:
// batch), then saves the acked offset if it moved. On a failed write it
// cuts the segment back and returns the error: the frames stay buffered
// (and counted in the spool's bytes, so that max_bytes bounds them), and
// the next flush writes them again. They cannot be dropped: some may be
// read already (AppendSent: in flight, at offsets the spooler holds).
func (q *Queue) Flush() error {
	if len(q.wbuf) > 0 {
		last := &q.segs[len(q.segs)-1]
		n, err := q.w.Write(q.wbuf)
		if err == nil && q.fsync {
			q.fsyncs++
			err = q.w.Sync()
		}
		if err != nil {
			os.Truncate(q.segPath(last.start), last.size)
			return q.lose(0, fmt.Errorf("spool write: %w", err))
		}
		last.size += int64(n)
		q.wbuf, q.wrecs = q.wbuf[:0], 0
	}
	return q.saveAcked()
}

// lose notes that n records were lost with err (the spooler counts them
// Failed) and returns err.
func (q *Queue) lose(n int, err error) error {
	q.lostRecs += uint64(n)
	q.errs++
	q.lastErr = err
	return err
}

// saveAcked writes the acked offset to the state file if it moved. It is
// called after the frames are written, so the state never says delivered
// of a record whose re-appended copy is not yet on disk.
func (q *Queue) saveAcked() error {
	if q.acked == q.ackedSaved && !q.dirty {
		return nil
	}
	st := binary.LittleEndian.AppendUint64(q.stateBuf[:0], uint64(q.acked))
	st = binary.LittleEndian.AppendUint32(st, uint32(len(q.delivered)))
	for _, off := range q.delivered {
		st = binary.LittleEndian.AppendUint64(st, uint64(off))
	}
	st = binary.LittleEndian.AppendUint32(st, crc32.Checksum(st, castagnoli))
	q.stateBuf = st
	// Bytes past the end of a longer state written before are left: the
	// count and the CRC say where this one ends.
	if _, err := q.state.WriteAt(st, 0); err != nil {
		return q.lose(0, fmt.Errorf("spool state: %w", err))
	}
	if q.fsync {
		q.fsyncs++
		if err := q.state.Sync(); err != nil {
			return q.lose(0, fmt.Errorf("spool state: %w", err))
		}
	}
	q.ackedSaved, q.dirty = q.acked, false
	return nil
}

// ack records that every frame before off is delivered and removes the
// segments that holds wholly (not the last one).
func (q *Queue) Ack(off int64) {
	if off > q.acked {
		q.acked = off
	}
	if i, _ := slices.BinarySearch(q.delivered, q.acked); i > 0 {
		q.delivered = slices.Delete(q.delivered, 0, i)
		q.dirty = true
	}
	if last := q.segs[len(q.segs)-1]; q.acked >= q.tail && last.size > 0 && len(q.wbuf) == 0 {
		q.roll() // all delivered: a new segment, so that the last one goes too
		return
	}
	q.trim()
}

func (q *Queue) trim() {
	for len(q.segs) > 1 && q.segs[0].end() <= q.acked {
		s := q.segs[0]
		if q.r != nil && q.rseg == s.start {
			q.r.Close()
			q.r = nil
		}
		os.Remove(q.segPath(s.start))
		q.disk -= s.size
		q.segs = q.segs[1:]
	}
}

// peek returns the next frame to replay (ok false at the tail). When it
// is still in wbuf, wbuf is written first. A frame that fails its check (the disk
// changed under the spool) cuts the spool there: the error says how many
// records that lost (lostRecs).
func (q *Queue) Peek() (r Record, ok bool, err error) {
	if q.unread == 0 {
		return r, false, nil
	}
	if q.wrecs > 0 && q.read >= q.segs[len(q.segs)-1].end() { // the next frame is not written yet
		if err := q.Flush(); err != nil {
			return r, false, err
		}
	}
	for {
		i := q.segIndex(q.read)
		if i < 0 {
			return r, false, q.corrupt("the next record's segment is missing")
		}
		s := q.segs[i]
		if q.read == s.end() { // the last segment
			return r, false, q.corrupt("records counted past the last segment")
		}
		off := int(q.read - q.rbase)
		if q.read < q.rbase || off+spoolFrameHeader > q.rlen || off+spoolFrameHeader+int(binary.LittleEndian.Uint32(q.rbuf[off:])) > q.rlen {
			if err := q.fill(s); err != nil {
				return r, false, err
			}
			off = 0
			if q.rlen < spoolFrameHeader {
				return r, false, q.corrupt("short frame header")
			}
		}
		n := int(binary.LittleEndian.Uint32(q.rbuf[off:]))
		if n < spoolRecHeader || n > spoolMaxFrame || off+spoolFrameHeader+n > q.rlen {
			return r, false, q.corrupt("bad frame length")
		}
		p := q.rbuf[off+spoolFrameHeader : off+spoolFrameHeader+n]
		if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(q.rbuf[off+4:]) || int(p[8])+spoolRecHeader > n {
			return r, false, q.corrupt("CRC mismatch")
		}
		idl := int(p[8])
		r = Record{
			NS:   int64(binary.LittleEndian.Uint64(p)),
			ID:   p[spoolRecHeader : spoolRecHeader+idl],
			Data: p[spoolRecHeader+idl:],
			Off:  q.read,
			End:  q.read + int64(spoolFrameHeader+n),
		}
		return r, true, nil
	}
}

// advance moves past the frame peek returned.
func (q *Queue) Advance(r Record) {
	q.read = r.End
	q.unread--
	for len(q.marks) > 1 && q.marks[1].off <= q.read {
		q.marks = q.marks[1:]
	}
	if q.unread == 0 {
		q.marks = q.marks[:0]
	}
}

// isDelivered reports whether the broker has the frame at off (the
// delivered set).
func (q *Queue) IsDelivered(off int64) bool {
	_, ok := slices.BinarySearch(q.delivered, off)
	return ok
}

// addDelivered notes that the broker has the frame at off, which is at or
// after acked (a replay after a rewind skips it); false when the set is
// full (the frame is sent again).
func (q *Queue) AddDelivered(off int64) bool {
	i, ok := slices.BinarySearch(q.delivered, off)
	if ok {
		return true
	}
	if len(q.delivered) >= q.maxDelivered {
		return false
	}
	q.delivered = slices.Insert(q.delivered, i, off)
	q.dirty = true
	return true
}

// LimitDelivered bounds the delivered set to n entries (at most the
// default, spoolMaxDelivered): for tests of what happens when it is full.
func (q *Queue) LimitDelivered(n int) { q.maxDelivered = min(n, spoolMaxDelivered) }

// deliveredFrom counts the delivered set's frames at or after off.
func (q *Queue) DeliveredFrom(off int64) int {
	i, _ := slices.BinarySearch(q.delivered, off)
	return len(q.delivered) - i
}

// appendSent appends a record already handed to the broker: it is at
// the tail and read at once (the caller holds it in flight, as a replay
// slab's). Only when nothing is unread (the read offset is the tail).
func (q *Queue) AppendSent(id, rec []byte, ns int64) (off int64, ok bool) {
	off = q.tail
	if q.unread != 0 || q.read != q.tail || !q.Append(id, rec, ns) {
		return 0, false
	}
	q.Advance(Record{Off: off, End: q.tail})
	return off, true
}

// rewind moves the read offset back to acked: the frames from there to
// the old read offset (n of them, the first spooled at ns) are unread
// again.
func (q *Queue) Rewind(n int, ns int64) {
	if n == 0 || q.read == q.acked {
		return
	}
	q.read = q.acked
	q.unread += n
	q.rlen = 0
	q.marks = slices.Insert(q.marks, 0, spoolMark{q.acked, ns})
}

// fill reads from q.read on in segment s into rbuf.
func (q *Queue) fill(s spoolSeg) error {
	if q.r == nil || q.rseg != s.start {
		if q.r != nil {
			q.r.Close()
		}
		f, err := openNoFollow(q.segPath(s.start), os.O_RDONLY)
		if err != nil {
			q.r = nil
			return err
		}
		q.r, q.rseg = f, s.start
	}
	want := min(int64(len(q.rbuf)), s.end()-q.read)
	n, err := q.r.ReadAt(q.rbuf[:want], q.read-s.start)
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == want) {
		return fmt.Errorf("spool read: %w", err)
	}
	q.rbase, q.rlen = q.read, n
	return nil
}

// corrupt cuts the spool at the read offset: the frames from there on are
// lost, and counted torn (bytes) and lost (records) by the caller; those
// the broker has (the delivered set) are not lost, and leave the set, so
// that frames appended later at their offsets are not taken for them.
func (q *Queue) corrupt(why string) error {
	lost := q.unread - q.DeliveredFrom(q.read)
	i := q.segIndex(q.read)
	if i < 0 {
		i = len(q.segs) - 1
	}
	s := &q.segs[i]
	cut := max(q.read, s.start) - s.start
	q.torn += uint64(s.size - cut)
	os.Truncate(q.segPath(s.start), cut)
	q.disk -= s.size - cut
	s.size = cut
	q.cutFrom(i + 1)
	// The write segment is now s.
	if q.w != nil {
		q.w.Close()
	}
	q.w, _ = openNoFollow(q.segPath(s.start), os.O_WRONLY|os.O_APPEND)
	q.tail, q.read, q.unread, q.marks = s.end(), s.end(), 0, q.marks[:0]
	q.rlen = 0
	q.acked = min(q.acked, q.tail)
	if i, _ := slices.BinarySearch(q.delivered, q.tail); i < len(q.delivered) {
		q.delivered, q.dirty = q.delivered[:i], true
	}
	return q.lose(lost, fmt.Errorf("spool %s: %s at offset %d: the rest is cut", q.dir, why, cut))
}

// segIndex is the index of the segment holding the frame at off (the
// last one also when off is its end); -1 if none.
func (q *Queue) segIndex(off int64) int {
	for i, s := range q.segs {
		if off >= s.start && (off < s.end() || i == len(q.segs)-1 && off == s.end()) {
			return i
		}
	}
	return -1
}

// oldest is the spool time of the oldest unread record, 0 if none.
func (q *Queue) Oldest() int64 {
	if q.unread == 0 || len(q.marks) == 0 {
		return 0
	}
	return q.marks[0].ns
}

// close writes what is buffered and releases the files and the lock; the
// unread records a failed write leaves in the buffer are lost (lostRecs).
func (q *Queue) Close() error {
	var err error
	if q.w != nil {
		if err = q.Flush(); err != nil && q.wrecs > 0 {
			lost := min(q.wrecs, q.unread) // the unread frames are the last ones
			q.lostRecs += uint64(lost)
			q.unread -= lost
		}
		q.w.Close()
	}
	if q.r != nil {
		q.r.Close()
	}
	if q.state != nil {
		q.state.Close()
	}
	q.lock.Close() // releases the flock
	return err
}
