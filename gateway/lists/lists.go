// Package lists keeps the gateway's enrichment lists at run time: one
// englists.List per configured list, kept across reloads, its contents
// swapped atomically when its file changes (an inotify watch) or the
// configuration is reloaded, and the counters /metrics and /status show.
package lists

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	englists "github.com/xgate/xgate/engine/lists"
	"github.com/xgate/xgate/gateway/config"
)

// The gateway owns one englists.List per configured list and keeps it
// across reloads (while its name and type stay), so the compiled rules
// hold it and a new file's contents reach them by one atomic store
// (englists.List.Store), never a half-loaded table. Contents change:
//
//   - on a config reload (SIGHUP): config.Load read every list; the new
//     data is stored once the new rules compiled;
//   - when a list file changes: an inotify watch on the files' directories
//     (IN_CLOSE_WRITE, IN_MOVED_TO: a file written in place, or written
//     elsewhere and renamed over) re-reads that list alone. No ticker: an
//     idle gateway stays asleep in read(2) on the inotify descriptor.
//
// A file that does not load (missing, malformed, too large) keeps the old
// contents; it is logged and counted (xgate_list_reloads_total{result=
// "failed"}). A cidr list pushed into the XDP program (xdp.never_block_lists,
// xdp.drop_lists) is pushed first: if the trie refuses it, neither the
// trie nor the rules change.

// state is one list with its counters.
type state struct {
	spec config.List
	list *englists.List

	reloadsOK, reloadsFailed atomic.Uint64
	loadedAt                 atomic.Int64 // unix ns of the last successful load
	loadNs                   atomic.Int64 // how long it took

	// seen is the file as it was when last read (loaded or refused):
	// an event in a watched directory reloads the list only when the
	// file behind its path (symbolic links followed) is another one now.
	// Only the watch goroutine and Prepare's commit (under reloadMu)
	// touch it.
	seen config.FileID
}

// Set is the gateway's lists and the watch on their files.
type Set struct {
	log *slog.Logger
	// reloadMu is the gateway's: a file reload and a config reload do not
	// run at the same time.
	reloadMu *sync.Mutex
	// PushCIDR pushes the XDP program's CIDR lists with name's contents
	// replaced by d; nil without XDP. Set before Start; called under
	// reloadMu.
	PushCIDR func(name string, d *englists.ListData) error

	mu     sync.Mutex // guards byName (writers also hold reloadMu)
	byName map[string]*state

	ino *os.File // the inotify descriptor, through the runtime's poller; nil: no watch
	// inoMu orders Stop's close of ino against the watch changes the
	// watch goroutine makes (rewatch); inoFd is ino's number, read
	// without a method of ino; inoClosed is set by Stop.
	inoMu     sync.Mutex
	inoFd     int
	inoClosed bool
	dirs      map[string]int32 // watched directory → watch descriptor (under reloadMu)
	done      chan struct{}    // closed when run returns
}

// New returns an empty set. reloadMu is the gateway's: a file reload and
// a config reload do not run at the same time.
func New(log *slog.Logger, reloadMu *sync.Mutex) *Set {
	return &Set{log: log, reloadMu: reloadMu, byName: map[string]*state{}, dirs: map[string]int32{}}
}

// Prepare returns the engine lists for cfg, reusing the current List of
// every name whose type did not change, and commit, which stores cfg's
// contents into the reused ones and makes cfg's lists current; call it
// once the rules compiled against them are in force. The caller holds
// reloadMu.
func (ls *Set) Prepare(cfg *config.Config) (map[string]*englists.List, func()) {
	ls.mu.Lock()
	old := ls.byName
	ls.mu.Unlock()
	next := make(map[string]*state, len(cfg.Lists))
	out := make(map[string]*englists.List, len(cfg.Lists))
	var store []func()
	now := time.Now().UnixNano()
	for _, l := range cfg.Lists {
		st := &state{spec: l}
		if o := old[l.Name]; o != nil && o.list.Kind() == l.Kind() {
			st.list = o.list
			st.reloadsOK.Store(o.reloadsOK.Load())
			st.reloadsFailed.Store(o.reloadsFailed.Load())
			st.loadedAt.Store(o.loadedAt.Load())
			st.loadNs.Store(o.loadNs.Load())
			if d := l.Data; d != nil {
				store = append(store, func() {
					if st.list.Store(d) == nil {
						st.reloadsOK.Add(1)
						st.loadedAt.Store(now)
						st.loadNs.Store(int64(l.LoadTime))
					}
				})
			}
		} else {
			el, err := englists.NewList(l.Name, l.Kind(), l.Data)
			if err != nil { // data of another kind: the config checked it
				el, _ = englists.NewList(l.Name, l.Kind(), nil)
			}
			st.list = el
			st.reloadsOK.Store(1)
			st.loadedAt.Store(now)
			st.loadNs.Store(int64(l.LoadTime))
		}
		next[l.Name] = st
		out[l.Name] = st.list
	}
	return out, func() {
		for _, f := range store {
			f()
		}
		for _, st := range next {
			// The file the config's contents were read from: a change
			// made since (even before this commit) is another file, and
			// the watch's next pass loads it.
			st.seen = st.spec.Loaded
			if st.seen == (config.FileID{}) {
				st.seen, _ = config.StatFileID(st.spec.FilePath())
			}
		}
		// A file changed since the config read it sent its event already
		// (the watch may have loaded it into the lists this commit
		// replaces): a pass after this reload finds and loads it.
		stale := false
		for _, st := range next {
			if id, _ := config.StatFileID(st.spec.FilePath()); id != st.seen {
				stale = true
			}
		}
		ls.mu.Lock()
		ls.byName = next
		ls.mu.Unlock()
		ls.rewatch()
		if stale && ls.Watching() {
			go ls.reloadChanged(nil) // waits for reloadMu, which the caller holds
		}
	}
}

// Current returns the contents of list name now in force, nil if none.
func (ls *Set) Current(name string) *englists.ListData {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if st := ls.byName[name]; st != nil {
		return st.list.Load()
	}
	return nil
}

// Start opens the inotify descriptor and watches the lists' directories;
// run reads it until Stop closes it. It starts the watch once: a second
// call, or one after Stop, does nothing (a reload and Run may both ask).
func (ls *Set) Start() error {
	ls.inoMu.Lock()
	if ls.ino != nil || ls.inoClosed {
		ls.inoMu.Unlock()
		return nil
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		ls.inoMu.Unlock()
		return fmt.Errorf("watch list files: inotify: %w", err)
	}
	// Non-blocking: os.NewFile puts it in the runtime's poller, so Read
	// parks the goroutine and Close wakes it.
	ls.ino, ls.inoFd = os.NewFile(uintptr(fd), "inotify"), fd
	ls.done = make(chan struct{})
	ls.inoMu.Unlock()
	ls.rewatch()
	go ls.run()
	return nil
}

// Stop ends the watch, and refuses a later Start.
func (ls *Set) Stop() {
	ls.inoMu.Lock()
	ls.inoClosed = true
	ino, done := ls.ino, ls.done
	if ino != nil {
		ino.Close()
	}
	ls.inoMu.Unlock()
	if ino != nil {
		<-done
	}
}

// Watching says whether Start opened the watch (and Stop did not end it).
func (ls *Set) Watching() bool {
	ls.inoMu.Lock()
	defer ls.inoMu.Unlock()
	return ls.ino != nil && !ls.inoClosed
}

// listWatchMask: a file written in place, or renamed, created (a new
// symbolic link) or removed in the directory.
const listWatchMask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_CREATE | unix.IN_DELETE

// rewatch watches the directories of the current lists' files and no
// others. The caller holds reloadMu (or is Start, before run).
func (ls *Set) rewatch() {
	ls.inoMu.Lock()
	started := ls.ino != nil
	ls.inoMu.Unlock()
	if !started {
		return
	}
	ls.mu.Lock()
	want := map[string]bool{}
	for _, st := range ls.byName {
		p := st.spec.FilePath()
		want[filepath.Dir(p)] = true
		// A symbolic link's target may change in place in a directory
		// of its own (the ConfigMap layout: list → ..data/list).
		if real, err := filepath.EvalSymlinks(p); err == nil {
			want[filepath.Dir(real)] = true
		}
	}
	ls.mu.Unlock()
	ls.inoMu.Lock()
	defer ls.inoMu.Unlock()
	if ls.inoClosed {
		return
	}
	fd := ls.inoFd
	for dir, wd := range ls.dirs {
		if !want[dir] {
			_, _ = unix.InotifyRmWatch(fd, uint32(wd))
			delete(ls.dirs, dir)
		}
	}
	for dir := range want {
		if _, ok := ls.dirs[dir]; ok {
			continue
		}
		wd, err := unix.InotifyAddWatch(fd, dir, listWatchMask)
		if err != nil {
			ls.log.Warn("list files in this directory are reloaded on SIGHUP only", "dir", dir, "err", err)
			continue
		}
		ls.dirs[dir] = int32(wd)
	}
}

// run reads inotify events; after each read it reloads every list whose
// file is another one than when last read (config.StatFileID). Events are
// only the cue: which file they name does not matter, so a list behind
// symbolic links, or renamed over, is found however the change reached it.
func (ls *Set) run() {
	defer close(ls.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := ls.ino.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				ls.log.Warn("list file watch ended; lists reload on SIGHUP only", "err", err)
			}
			return
		}
		var gone []int32
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_IGNORED != 0 {
				gone = append(gone, ev.Wd) // a watch ended: removed by us, or its directory
			}
		}
		ls.reloadChanged(gone)
	}
}

// reloadChanged reloads the lists whose file changed. The files are read
// without reloadMu held (a slow or stuck file never holds up a config
// reload or the stop); their contents are swapped in under it, if the
// list is still the same one. gone: watches that ended (IN_IGNORED).
func (ls *Set) reloadChanged(gone []int32) {
	// A change made between reading a file and watching its (new) link
	// target's directory sends no event: a second pass finds it.
	for pass := 0; pass < 3 && ls.reloadPass(gone); pass++ {
		gone = nil
	}
}

// reloadPass is one round of reloadChanged; it reports whether it
// reloaded anything. gone are watches the kernel ended.
func (ls *Set) reloadPass(gone []int32) bool {
	ls.mu.Lock()
	var todo []*state
	for _, st := range ls.byName {
		if id, _ := config.StatFileID(st.spec.FilePath()); id != st.seen {
			todo = append(todo, st)
		}
	}
	ls.mu.Unlock()
	sort.Slice(todo, func(i, j int) bool { return todo[i].spec.Name < todo[j].spec.Name })
	type loaded struct {
		st  *state
		id  config.FileID
		d   *englists.ListData
		err error
		t   time.Duration
	}
	var done []loaded
	for _, st := range todo {
		t0 := time.Now()
		d, id, err := config.LoadListFile(st.spec)
		done = append(done, loaded{st, id, d, err, time.Since(t0)})
	}
	ls.reloadMu.Lock()
	defer ls.reloadMu.Unlock()
	// A watch that ended (its directory removed) is forgotten, so rewatch
	// makes it again if the directory is wanted and back. One rewatch
	// removed itself is forgotten already: its number matches nothing.
	for _, wd := range gone {
		for dir, w := range ls.dirs {
			if w == wd {
				delete(ls.dirs, dir)
			}
		}
	}
	// Symbolic links may point into other directories now: watched before
	// the new contents are in force.
	ls.rewatch()
	for _, l := range done {
		ls.mu.Lock()
		current := ls.byName[l.st.spec.Name] == l.st
		ls.mu.Unlock()
		if current { // not replaced by a config reload meanwhile
			l.st.seen = l.id
			ls.apply(l.st, l.d, l.err, l.t)
		}
	}
	return len(done) > 0
}

// apply swaps d in as st's contents; a file that did not load (err), or
// that the XDP program's trie refuses, keeps the old contents. The
// caller holds reloadMu.
func (ls *Set) apply(st *state, d *englists.ListData, err error, took time.Duration) {
	if err == nil && ls.PushCIDR != nil && d.Kind() == englists.ListCIDR {
		err = ls.PushCIDR(st.spec.Name, d)
	}
	if err == nil {
		err = st.list.Store(d)
	}
	if err != nil {
		st.reloadsFailed.Add(1)
		ls.log.Warn("list reload failed; the old contents stay", "list", st.spec.Name, "err", err)
		return
	}
	st.reloadsOK.Add(1)
	st.loadedAt.Store(time.Now().UnixNano())
	st.loadNs.Store(int64(took))
	ls.log.Info("list reloaded", "list", st.spec.Name, "entries", d.Len(), "took", took.Round(time.Microsecond))
}

// Stats is one list as /metrics and /status show it.
type Stats struct {
	Name          string        `json:"name"`
	Type          string        `json:"type"`
	File          string        `json:"file"`
	Entries       int           `json:"entries"`
	Reloads       uint64        `json:"reloads"`
	ReloadsFailed uint64        `json:"reloads_failed"`
	LoadedAt      time.Time     `json:"loaded_at"`
	LoadTime      time.Duration `json:"load_ns"`
}

// Stats returns the lists in name order.
func (ls *Set) Stats() []Stats {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	out := make([]Stats, 0, len(ls.byName))
	for _, st := range ls.byName {
		out = append(out, Stats{Name: st.spec.Name, Type: st.list.Kind().String(), File: st.spec.FilePath(),
			Entries: st.list.Load().Len(), Reloads: st.reloadsOK.Load(), ReloadsFailed: st.reloadsFailed.Load(),
			LoadedAt: time.Unix(0, st.loadedAt.Load()), LoadTime: time.Duration(st.loadNs.Load())})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
