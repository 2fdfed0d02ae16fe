package host

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPidFile: one holder at a time (a second lock fails and names the
// holder, leaving the file as it is), no symbolic link followed, and
// Release removes the file so the next daemon can lock it.
func TestPidFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "xgate.pid")
	a, err := LockPidFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("pid file holds %q", b)
	}
	if _, err := LockPidFile(path); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Errorf("second lock: %v, want ErrLocked naming the holder", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the failed second lock removed the file: %v", err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("pid file left after Release: %v", err)
	}
	b, err := LockPidFile(path)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	b.Release()

	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep\n"), 0o600)
	link := filepath.Join(dir, "link.pid")
	os.Symlink(victim, link)
	if _, err := LockPidFile(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("pid file on a symlink: %v", err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "keep\n" {
		t.Errorf("victim truncated: %q", got)
	}
}

// TestPidFileSquatter: a user who may only read the pid file can still
// flock it; such a lock (held by neither root nor the daemon's user) does
// not keep the daemon from starting: the file is replaced.
func TestPidFileSquatter(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to lock as another user")
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // the other user must reach the file
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "xgate.pid")
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A user who may only read it takes its lock, in a process of its own
	// (util-linux's flock(1) opens the file read-only and holds the lock
	// while its command runs).
	for _, tool := range []string{"setpriv", "flock"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	squatter := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "flock", "-n", "-x", path, "sleep", "60")
	if err := squatter.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = squatter.Process.Kill(); _ = squatter.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		holder := flockHolderOf(f)
		f.Close()
		if holder != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the squatter did not take the lock within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	pf, err := LockPidFile(path)
	if err != nil {
		t.Fatalf("a reader's lock kept the daemon out: %v", err)
	}
	defer pf.Release()
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("pid file holds %q", b)
	}
	// The daemon's own lock still keeps a second daemon out.
	if _, err := LockPidFile(path); !errors.Is(err, ErrLocked) {
		t.Errorf("second daemon: %v, want ErrLocked", err)
	}
}

func TestFlockHolder(t *testing.T) {
	locks := "1: FLOCK  ADVISORY  WRITE 20560 fe:00:9987867 0 EOF\n" +
		"1: -> FLOCK  ADVISORY  WRITE 777 fe:00:42 0 EOF\n" +
		"2: POSIX  ADVISORY  WRITE 99 fe:00:42 0 EOF\n" +
		"3: FLOCK  ADVISORY  WRITE 31337 fe:00:42 0 EOF\n"
	for _, c := range []struct {
		ino  uint64
		want int
	}{{42, 31337}, {9987867, 20560}, {7, 0}} {
		if got := flockHolder(locks, 0xfe, 0, c.ino); got != c.want {
			t.Errorf("inode %d: holder %d, want %d", c.ino, got, c.want)
		}
	}
}
