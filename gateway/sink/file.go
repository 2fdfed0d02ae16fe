package sink

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// fileOutput writes slabs to a file (appending) or to stdout.
//
// Concurrency: every method but abort runs on the sink's writer goroutine,
// which alone writes and replaces f. abort (from Close, after its deadline)
// closes f to make a stuck write return; mu orders it against the writer
// replacing f in rotate, and aborted keeps the writer from reopening.
//
// Rotation and fsync apply to regular files only: a path that is a FIFO, a
// pipe or a character device is written to as is (never rotated, never
// fsynced).
type fileOutput struct {
	sk       *sink
	path     string
	std      bool // os.Stdout: never closed, rotated or fsynced
	regular  bool
	f        *os.File
	size     int64 // bytes in the current file
	rotateAt int64 // 0 = never
	keep     int
	fsync    string // never | interval | always
	every    int64  // interval, ns
	lastSync int64  // ns
	dirty    bool   // written since the last fsync

	mu      sync.Mutex // guards f against abort; taken only to replace or close f
	aborted bool
}

var _ sinkOutput = (*fileOutput)(nil)

const (
	sinkFileMode          = 0o640 // events may be sensitive: owner and group only
	fileDefaultFsyncEvery = time.Second
	fileDefaultKeep       = 5
	fileMinRotate         = 4 << 10
)

// fileKeys are the keys only file sinks have.
var fileKeys = []typeKey{
	{"path", "only file sinks have a path", func(sp *Spec) bool { return sp.Path != "" }},
	{"fsync", "only file sinks fsync", func(sp *Spec) bool { return sp.Fsync != "" }},
	{"rotate_bytes", "only file sinks rotate", func(sp *Spec) bool { return sp.RotateBytes != 0 }},
	{"rotate_keep", "only file sinks rotate", func(sp *Spec) bool { return sp.RotateKeep != 0 }},
}

func checkFile(sp *Spec, _ func(string) bool) (key, msg string) {
	if sp.Path == "" {
		return "path", "missing: a file sink writes to a path"
	}
	if sp.Fsync != "" {
		if _, _, err := parseFsync(sp.Fsync); err != nil {
			return "fsync", err.Error()
		}
	}
	switch r := sp.RotateBytes; {
	case r < 0:
		return "rotate_bytes", fmt.Sprintf("%d: want 0 (never) or a size", r)
	case r > 0 && r < fileMinRotate:
		return "rotate_bytes", fmt.Sprintf("%d: rotating below 4KiB is surely a mistake", r)
	}
	if sp.RotateKeep < 0 {
		return "rotate_keep", fmt.Sprintf("%d: want the number of old files to keep (default %d)", sp.RotateKeep, fileDefaultKeep)
	}
	return "", ""
}

func fileDefaults(sp *Spec) {
	if policy, every, _ := parseFsync(sp.Fsync); policy == "interval" {
		sp.Fsync = "interval " + every.String()
	}
	if sp.RotateKeep == 0 {
		sp.RotateKeep = fileDefaultKeep
	}
}

// parseFsync reads "" (the default), never, always, interval or "interval
// <duration>" and returns the policy (never, interval or always) and, for
// interval, how often (fileDefaultFsyncEvery unless given).
func parseFsync(s string) (policy string, every time.Duration, err error) {
	f := strings.Fields(s)
	switch {
	case len(f) == 0:
		return "interval", fileDefaultFsyncEvery, nil
	case len(f) == 1 && (f[0] == "never" || f[0] == "always"):
		return f[0], 0, nil
	case len(f) == 1 && f[0] == "interval":
		return "interval", fileDefaultFsyncEvery, nil
	case len(f) == 2 && f[0] == "interval":
		d, err := time.ParseDuration(f[1])
		if err != nil || d <= 0 {
			return "", 0, fmt.Errorf("%q: %q is not a positive duration", s, f[1])
		}
		return "interval", d, nil
	}
	return "", 0, fmt.Errorf("%q: want never, interval, interval <duration> (e.g. interval 1s) or always", s)
}

func openFileOutput(sk *sink, sp Spec) (*fileOutput, error) {
	policy, every, err := parseFsync(sp.Fsync)
	if err != nil {
		return nil, err // Check reports it first
	}
	o := &fileOutput{
		sk:       sk,
		path:     sp.Path,
		keep:     sp.RotateKeep,
		fsync:    policy,
		every:    int64(every),
		lastSync: nanotime(),
	}
	if err := o.open(); err != nil {
		return nil, err
	}
	if o.regular {
		o.rotateAt = sp.RotateBytes
	}
	return o, nil
}

func newStdoutOutput(sk *sink) *fileOutput {
	return &fileOutput{sk: sk, path: "stdout", std: true, f: os.Stdout, fsync: "never"}
}

// open opens (creating) the file for appending and learns its size. It
// does not follow a symbolic link at the path (a link there could point
// the daemon's writes at any file it may write), and cuts a torn last
// record (a crash or a full disk in the middle of a write) back to the
// last whole line, so the file stays one record per line.
func (o *fileOutput) open() error {
	f, err := os.OpenFile(o.path, os.O_RDWR|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, sinkFileMode)
	if errors.Is(err, syscall.ELOOP) {
		// A link to a pipe or a device (/dev/stdout, /proc/self/fd/N) is
		// followed; one to a regular file is refused.
		if st, serr := os.Stat(o.path); serr == nil && st.Mode().IsRegular() {
			return fmt.Errorf("%s is a symbolic link to a file: a file sink writes only to a file at its own path (give the link's target)", o.path)
		}
		f, err = os.OpenFile(o.path, os.O_WRONLY|os.O_APPEND, sinkFileMode)
	}
	if err != nil {
		return fmt.Errorf("%w (the directory must exist and be writable by the user xgate runs as; or change the sink's path)", err)
	}
	if cut, err := cutTornRecord(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", o.path, err)
	} else if cut > 0 {
		o.sk.cnt.tornCut.Add(uint64(cut))
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat %s: %w", o.path, err)
	}
	if st.IsDir() {
		f.Close()
		return fmt.Errorf("%s is a directory: give a file sink the path of a file", o.path)
	}
	o.regular = st.Mode().IsRegular()
	o.size = st.Size()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.aborted {
		f.Close()
		return os.ErrClosed
	}
	o.f = f
	return nil
}

// cutTornRecord truncates a regular file that does not end in a newline
// back to just after its last one (or to empty without one) and returns
// the bytes cut.
func cutTornRecord(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
		return 0, err
	}
	size := st.Size()
	var buf [4096]byte
	end := size
	for end > 0 {
		n := min(end, int64(len(buf)))
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return 0, fmt.Errorf("read the last record: %w", err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = end - n + int64(i) + 1
			break
		}
		end -= n
		if end == 0 {
			break
		}
	}
	if end == size {
		return 0, nil
	}
	if err := f.Truncate(end); err != nil {
		return 0, fmt.Errorf("cut the torn last record: %w", err)
	}
	return size - end, nil
}

func (o *fileOutput) write(sl *slab) {
	if o.rotateAt <= 0 {
		o.put(sl, 0, len(sl.buf), 0, len(sl.ends))
		return
	}
	// Write the records in chunks that fit under rotateAt, rotating
	// between them. After a rotation the next record is written even if it
	// does not fit (alone, it is larger than rotateAt; or rotation failed
	// and was counted: then writing on is better than losing records).
	from, rec, rotated := 0, 0, false
	for rec < len(sl.ends) {
		end, k := from, rec
		for k < len(sl.ends) && o.size+int64(int(sl.ends[k])-from) <= o.rotateAt {
			end, k = int(sl.ends[k]), k+1
		}
		if k == rec {
			if o.size > 0 && !rotated {
				o.rotate()
				rotated = true
				continue
			}
			end, k = int(sl.ends[k]), k+1
		}
		o.put(sl, from, end, rec, k)
		from, rec, rotated = end, k, false
	}
}

// put writes sl.buf[from:end], which holds records rec..k-1.
func (o *fileOutput) put(sl *slab, from, end, rec, k int) {
	if o.f == nil && (o.std || o.open() != nil) {
		o.sk.cnt.errors.Add(1)
		o.sk.cnt.failed.Add(uint64(k - rec))
		return
	}
	n, err := o.f.Write(sl.buf[from:end])
	if err != nil && n > 0 {
		n = o.cutTorn(sl, from, n, rec, k)
	}
	o.size += int64(n)
	if n > 0 {
		o.dirty = true
	}
	o.sk.countWritten(sl, from, n, rec, k, err)
}

// cutTorn is put's answer to a write that failed after n bytes (a full
// disk stops a write at a page boundary, in the middle of a record): it
// truncates the file back to the end of the last whole record written, so
// that the records written once space is back do not continue the torn
// one's line, and returns the bytes that stay. If the file cannot be
// truncated, it is closed instead (a counted error): the next write
// reopens it, and open cuts the torn record. A pipe or a device is left
// as it is.
func (o *fileOutput) cutTorn(sl *slab, from, n, rec, k int) int {
	whole := from
	for _, e := range sl.ends[rec:k] {
		if int(e) > from+n {
			break
		}
		whole = int(e)
	}
	if whole == from+n {
		return n
	}
	if !o.regular {
		return n // a pipe or a device: what went out cannot be taken back
	}
	if o.f.Truncate(o.size+int64(whole-from)) == nil {
		return whole - from
	}
	o.sk.cnt.errors.Add(1)
	o.mu.Lock()
	if o.f != nil {
		o.f.Close()
		o.f = nil
	}
	o.mu.Unlock()
	return n
}

// rotate moves path to path.1 (path.1 to path.2 … up to path.keep, whose
// old content goes) and opens a new path. Failures are counted in Errors;
// if the new file cannot be opened, put retries on the next write.
func (o *fileOutput) rotate() {
	if o.fsync != "never" && o.dirty {
		o.sync(nanotime()) // the rotated file is as durable as the live one
	}
	o.mu.Lock()
	f := o.f
	o.f = nil
	aborted := o.aborted
	o.mu.Unlock()
	if aborted {
		return
	}
	if f != nil {
		if err := f.Close(); err != nil {
			o.sk.cnt.errors.Add(1)
		}
	}
	o.sk.cnt.rotations.Add(1)
	name := func(i int) string { return o.path + "." + strconv.Itoa(i) }
	if err := os.Remove(name(o.keep)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		o.sk.cnt.errors.Add(1)
	}
	for i := o.keep - 1; i >= 1; i-- {
		if err := os.Rename(name(i), name(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			o.sk.cnt.errors.Add(1)
		}
	}
	if err := os.Rename(o.path, name(1)); err != nil {
		o.sk.cnt.errors.Add(1)
	}
	o.dirty = false
	if err := o.open(); err != nil {
		o.sk.cnt.errors.Add(1)
	}
}

func (o *fileOutput) sync(now int64) {
	o.lastSync = now
	if !o.regular || o.f == nil {
		return
	}
	if err := o.f.Sync(); err != nil {
		o.sk.cnt.errors.Add(1)
		return
	}
	o.dirty = false
	o.sk.cnt.fsyncs.Add(1)
}

func (o *fileOutput) afterRound(now int64) {
	switch o.fsync {
	case "always":
		if o.dirty {
			o.sync(now)
		}
	case "interval":
		o.idle(now)
	}
}

func (o *fileOutput) idle(now int64) {
	if o.fsync == "interval" && o.dirty && now-o.lastSync >= o.every {
		o.sync(now)
	}
}

// isDirty: written since the last fsync (the writer re-arms its timer).
func (o *fileOutput) isDirty() bool { return o.dirty }

func (o *fileOutput) tick() time.Duration {
	if o.fsync != "interval" || !o.regular {
		return 0
	}
	return max(time.Duration(o.every)/2, time.Millisecond)
}

func (o *fileOutput) finish() error {
	if o.std {
		return nil
	}
	if o.fsync != "never" && o.dirty {
		o.sync(nanotime())
	}
	o.mu.Lock()
	f := o.f
	o.f = nil
	o.mu.Unlock()
	if f == nil {
		return nil
	}
	if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

func (o *fileOutput) abort() {
	if o.std {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.aborted = true
	if o.f != nil {
		o.f.Close() // a write blocked on a pipe or FIFO returns os.ErrClosed
	}
}
