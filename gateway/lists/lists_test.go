package lists

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	englists "github.com/xgate/xgate/engine/lists"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/testenv"
	"golang.org/x/sys/unix"
)

// list is a config.List of path loaded as config.Parse loads it.
func list(t *testing.T, name, typ, path string) config.List {
	t.Helper()
	l := config.List{Name: name, Type: typ, File: filepath.Base(path), Path: path}
	d, id, err := config.LoadListFile(l)
	if err != nil {
		t.Fatal(err)
	}
	l.Data, l.Loaded = d, id
	return l
}

func stat(ls *Set, name string) Stats {
	for _, s := range ls.Stats() {
		if s.Name == name {
			return s
		}
	}
	return Stats{}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Prepare keeps a list's englists.List across configs while its name and
// type stay (the compiled rules hold it), and commit stores the new
// contents into it; a list whose type changed is a new one.
func TestListPrepareCommit(t *testing.T) {
	dir := t.TempDir()
	vip, nets := filepath.Join(dir, "vip.txt"), filepath.Join(dir, "nets.txt")
	testenv.WriteAtomic(t, vip, "u-1\n")
	testenv.WriteAtomic(t, nets, "192.0.2.0/24\n")
	var mu sync.Mutex
	ls := New(quiet(), &mu)
	mu.Lock()
	defer mu.Unlock()

	m1, commit := ls.Prepare(&config.Config{Lists: []config.List{list(t, "vip", "set", vip), list(t, "nets", "cidr", nets)}})
	if len(m1) != 2 || m1["vip"].Load().Len() != 1 || !m1["nets"].Load().ContainsAddr(netip.MustParseAddr("192.0.2.7")) {
		t.Fatalf("first config: %v", m1)
	}
	if ls.Current("vip") != nil || len(ls.Stats()) != 0 {
		t.Fatal("lists current before commit")
	}
	commit()
	if d := ls.Current("vip"); d == nil || d.Len() != 1 {
		t.Fatalf("vip after commit: %v", d)
	}
	if s := stat(ls, "vip"); s.Reloads != 1 || s.Type != "set" || s.File != vip || s.Entries != 1 {
		t.Errorf("vip: %+v", s)
	}

	testenv.WriteAtomic(t, vip, "u-1\nu-2\n")
	testenv.WriteAtomic(t, nets, "u-3\n")
	m2, commit := ls.Prepare(&config.Config{Lists: []config.List{list(t, "vip", "set", vip), list(t, "nets", "set", nets)}})
	if m2["vip"] != m1["vip"] || m2["nets"] == m1["nets"] {
		t.Fatal("vip (same type) must be kept, nets (cidr → set) replaced")
	}
	if n := m1["vip"].Load().Len(); n != 1 {
		t.Errorf("vip holds %d entries before commit, want the old 1", n)
	}
	commit()
	if n := m1["vip"].Load().Len(); n != 2 {
		t.Errorf("vip holds %d entries after commit, want 2", n)
	}
	if s := stat(ls, "vip"); s.Reloads != 2 || s.Entries != 2 {
		t.Errorf("vip: %+v", s)
	}
	if s := stat(ls, "nets"); s.Reloads != 1 || s.Type != "set" {
		t.Errorf("nets: %+v", s)
	}
	if ls.Current("gone") != nil {
		t.Error("a list that is not configured has contents")
	}
}

// The watch re-reads a list when its file is replaced or written in place;
// a file that does not load, or that PushCIDR refuses, keeps the old
// contents and is counted.
func TestListWatch(t *testing.T) {
	dir := t.TempDir()
	vip, nets := filepath.Join(dir, "vip.txt"), filepath.Join(dir, "nets.txt")
	testenv.WriteAtomic(t, vip, "u-1\n")
	testenv.WriteAtomic(t, nets, "192.0.2.0/24\n")
	var mu sync.Mutex
	ls := New(quiet(), &mu)
	var pushMu sync.Mutex
	var pushed []string // the names pushed, in order
	refuse := false
	ls.PushCIDR = func(name string, d *englists.ListData) error {
		pushMu.Lock()
		defer pushMu.Unlock()
		if refuse {
			return errors.New("the trie refuses it")
		}
		pushed = append(pushed, name)
		return nil
	}
	mu.Lock()
	_, commit := ls.Prepare(&config.Config{Lists: []config.List{list(t, "vip", "set", vip), list(t, "nets", "cidr", nets)}})
	commit()
	if ls.Watching() {
		t.Fatal("watching before Start")
	}
	err := ls.Start()
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Stop()
	if !ls.Watching() {
		t.Fatal("not watching after Start")
	}

	testenv.WriteAtomic(t, vip, "u-1\nu-2\n")
	eventually(t, "vip reloaded", func() bool { return stat(ls, "vip").Reloads == 2 })
	if d := ls.Current("vip"); d.Len() != 2 || !d.ContainsKey("u-2") {
		t.Errorf("vip after the rename: %d entries", d.Len())
	}

	if err := os.WriteFile(vip, []byte("u-3\n\xff\n"), 0o644); err != nil { // in place: IN_CLOSE_WRITE
		t.Fatal(err)
	}
	eventually(t, "bad vip file counted", func() bool { return stat(ls, "vip").ReloadsFailed == 1 })
	if d := ls.Current("vip"); d.Len() != 2 || d.ContainsKey("u-3") {
		t.Errorf("vip after a bad file: %d entries", d.Len())
	}

	pushMu.Lock()
	refuse = true
	pushMu.Unlock()
	testenv.WriteAtomic(t, nets, "198.51.100.0/24\n")
	eventually(t, "refused nets counted", func() bool { return stat(ls, "nets").ReloadsFailed == 1 })
	if ls.Current("nets").ContainsAddr(netip.MustParseAddr("198.51.100.1")) {
		t.Error("contents the XDP trie refused reached the rules")
	}
	pushMu.Lock()
	refuse = false
	pushMu.Unlock()
	testenv.WriteAtomic(t, nets, "198.51.100.0/24\n")
	eventually(t, "nets reloaded", func() bool { return stat(ls, "nets").Reloads == 2 })
	if !ls.Current("nets").ContainsAddr(netip.MustParseAddr("198.51.100.1")) {
		t.Error("nets not stored after the push")
	}
	pushMu.Lock()
	if len(pushed) != 1 || pushed[0] != "nets" {
		t.Errorf("pushed %q, want the nets list once", pushed)
	}
	pushMu.Unlock()
	if s := stat(ls, "vip"); s.Reloads != 2 {
		t.Errorf("vip reloaded by another list's change: %+v", s)
	}
}

// TestListWatchLinks: a list behind symbolic links, updated the way
// Kubernetes updates a ConfigMap volume (vip.txt → ..data/vip.txt, and
// ..data switched to a new directory by a rename), is reloaded; so is an
// edit of the link's target in place. A FIFO renamed over the path is
// refused without blocking anything: the old contents stay, and Stop
// returns.
func TestListWatchLinks(t *testing.T) {
	dir := t.TempDir()
	version := func(name, text string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "vip.txt"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	swap := func(name string) {
		t.Helper()
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", "u-1\n")
	swap("..v1")
	vip := filepath.Join(dir, "vip.txt")
	if err := os.Symlink("..data/vip.txt", vip); err != nil {
		t.Fatal(err)
	}
	ls, _ := startWatch(t, list(t, "vip", "set", vip))

	version("..v2", "u-1\nu-2\nu-3\n")
	swap("..v2")
	eventually(t, "the ConfigMap swap reloaded", func() bool { return stat(ls, "vip").Reloads == 2 })
	if d := ls.Current("vip"); d.Len() != 3 {
		t.Errorf("after the swap: %d entries, want 3", d.Len())
	}
	// The target edited in place, in its own directory.
	if err := os.WriteFile(filepath.Join(dir, "..v2", "vip.txt"), []byte("u-4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the target's edit reloaded", func() bool { return stat(ls, "vip").Reloads == 3 })
	if d := ls.Current("vip"); d.Len() != 1 || !d.ContainsKey("u-4") {
		t.Errorf("after the edit: %d entries", d.Len())
	}

	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, vip); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the FIFO refused", func() bool { return stat(ls, "vip").ReloadsFailed == 1 })
	if d := ls.Current("vip"); d.Len() != 1 || !d.ContainsKey("u-4") {
		t.Errorf("after the FIFO: %d entries, want the old one", d.Len())
	}
	done := make(chan struct{})
	go func() { ls.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop blocked after a FIFO was put at the list's path")
	}
}

// TestListStartOnce: Start twice (a reload and Run both asking) starts one
// watch; after Stop, Start does nothing.
func TestListStartOnce(t *testing.T) {
	var mu sync.Mutex
	ls := New(quiet(), &mu)
	if err := ls.Start(); err != nil {
		t.Fatal(err)
	}
	first := ls.ino
	if err := ls.Start(); err != nil || ls.ino != first {
		t.Fatalf("second Start: %v, watch replaced %v", err, ls.ino != first)
	}
	ls.Stop()
	if ls.Watching() {
		t.Error("watching after Stop")
	}
	if err := ls.Start(); err != nil || ls.Watching() {
		t.Errorf("Start after Stop: %v, watching %v", err, ls.Watching())
	}
	ls.Stop() // twice: harmless
}

// TestListReloadRacesEdit: a config reload that read a list file before
// an edit commits after the watch loaded the edit: the old contents it
// carries would stay in force for good (no further event comes); the
// commit sees that the file changed since it was read and loads it again.
func TestListReloadRacesEdit(t *testing.T) {
	dir := t.TempDir()
	vip := filepath.Join(dir, "vip.txt")
	testenv.WriteAtomic(t, vip, "u-1\n")
	ls, mu := startWatch(t, list(t, "vip", "set", vip))

	stale := list(t, "vip", "set", vip) // a SIGHUP's config read: u-1
	testenv.WriteAtomic(t, vip, "u-1\nu-2\n")
	eventually(t, "the edit loaded", func() bool { return ls.Current("vip").Len() == 2 })
	mu.Lock()
	_, commit := ls.Prepare(&config.Config{Lists: []config.List{stale}})
	commit()
	mu.Unlock()
	eventually(t, "the edit loaded again after the reload", func() bool { return ls.Current("vip").Len() == 2 })
}

// startWatch is a Set holding ls, committed and watching as the gateway
// makes it (its reload lock held), stopped when the test ends; the lock
// is returned for the test's own reloads.
func startWatch(t *testing.T, ls ...config.List) (*Set, *sync.Mutex) {
	t.Helper()
	mu := &sync.Mutex{}
	set := New(quiet(), mu)
	mu.Lock()
	_, commit := set.Prepare(&config.Config{Lists: ls})
	commit()
	err := set.Start()
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Stop)
	return set, mu
}
