package host

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
