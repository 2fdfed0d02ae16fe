// Package lists keeps the gateway's enrichment lists at run time: one
// englists.List per configured list, kept across reloads, its contents
// swapped atomically when its file changes (an inotify watch) or the
// configuration is reloaded, and the counters /metrics and /status show.
package lists

import (
	"bytes"
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

	ino  *os.File         // the inotify descriptor, through the runtime's poller; nil: no watch
	dirs map[string]int32 // watched directory → watch descriptor (under reloadMu)
	done chan struct{}    // closed when run returns
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
		ls.mu.Lock()
		ls.byName = next
		ls.mu.Unlock()
		ls.rewatch()
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
// run reads it until Stop closes it.
func (ls *Set) Start() error {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("watch list files: inotify: %w", err)
	}
	// Non-blocking: os.NewFile puts it in the runtime's poller, so Read
	// parks the goroutine and Close wakes it.
	ls.ino = os.NewFile(uintptr(fd), "inotify")
	ls.done = make(chan struct{})
	ls.rewatch()
	go ls.run()
	return nil
}

// Stop ends the watch.
func (ls *Set) Stop() {
	if ls.ino == nil {
		return
	}
	ls.ino.Close()
	<-ls.done
}

// Watching says whether Start opened the watch.
func (ls *Set) Watching() bool { return ls.ino != nil }

const listWatchMask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO

// rewatch watches the directories of the current lists' files and no
// others. The caller holds reloadMu (or is Start, before run).
func (ls *Set) rewatch() {
	if ls.ino == nil {
		return
	}
	ls.mu.Lock()
	want := map[string]bool{}
	for _, st := range ls.byName {
		want[filepath.Dir(listPath(st.spec))] = true
	}
	ls.mu.Unlock()
	fd := int(ls.ino.Fd())
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

func listPath(l config.List) string {
	if l.Path != "" {
		return l.Path
	}
	return l.File
}

// run reads inotify events and reloads the lists whose file they name.
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
		changed := map[string]bool{} // paths, once per read
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				changed[""] = true // events lost: reload them all
				continue
			}
			if dir := ls.dirOf(ev.Wd); dir != "" && len(name) > 0 {
				changed[filepath.Join(dir, string(name))] = true
			}
		}
		ls.reloadChanged(changed)
	}
}

func (ls *Set) dirOf(wd int32) string {
	ls.reloadMu.Lock()
	defer ls.reloadMu.Unlock()
	for dir, w := range ls.dirs {
		if w == wd {
			return dir
		}
	}
	return ""
}

// reloadChanged reloads every list whose file is in changed ("" in
// changed: all of them).
func (ls *Set) reloadChanged(changed map[string]bool) {
	if len(changed) == 0 {
		return
	}
	ls.reloadMu.Lock()
	defer ls.reloadMu.Unlock()
	ls.mu.Lock()
	var todo []*state
	for _, st := range ls.byName {
		if changed[""] || changed[filepath.Clean(listPath(st.spec))] {
			todo = append(todo, st)
		}
	}
	ls.mu.Unlock()
	sort.Slice(todo, func(i, j int) bool { return todo[i].spec.Name < todo[j].spec.Name })
	for _, st := range todo {
		ls.reload(st)
	}
}

// reload reads st's file again and swaps its contents in; a file that
// does not load, or that the XDP program's trie refuses, keeps the old
// contents. The caller holds reloadMu.
func (ls *Set) reload(st *state) {
	t0 := time.Now()
	d, err := config.LoadList(st.spec)
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
	st.loadNs.Store(int64(time.Since(t0)))
	ls.log.Info("list reloaded", "list", st.spec.Name, "entries", d.Len(), "took", time.Since(t0).Round(time.Microsecond))
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
		out = append(out, Stats{Name: st.spec.Name, Type: st.list.Kind().String(), File: listPath(st.spec),
			Entries: st.list.Load().Len(), Reloads: st.reloadsOK.Load(), ReloadsFailed: st.reloadsFailed.Load(),
			LoadedAt: time.Unix(0, st.loadedAt.Load()), LoadTime: time.Duration(st.loadNs.Load())})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
