package host

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestLockPort(t *testing.T) {
	const port = 59_999
	l, err := LockPort(port)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockPort(port)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second lock of port %d: %v, want ErrInUse", port, err)
	}
	// The error names the holder: this process.
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())+")") {
		t.Errorf("error does not name the holder (pid %d): %v", os.Getpid(), err)
	}
	other, err := LockPort(port + 1)
	if err != nil {
		t.Fatalf("another port is free: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := LockPort(port)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	for _, x := range []*Lock{again, other, nil} {
		if err := x.Release(); err != nil {
			t.Error(err)
		}
	}
	// Many askers: the holder cannot be named once the backlog is full,
	// but the lock still holds.
	l, err = LockPort(port)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	for i := range 40 {
		if _, err := LockPort(port); !errors.Is(err, ErrInUse) {
			t.Fatalf("ask %d: %v, want ErrInUse", i, err)
		}
	}
}

func TestLockDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pins")
	l, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("pin directory not created 0700: %v %v", fi, err)
	}
	if _, err := LockDir(dir); !errors.Is(err, ErrInUse) {
		t.Fatalf("second lock: %v, want ErrInUse", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l, err = LockDir(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	l.Release()

	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := LockDir(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("lock through a symbolic link: %v, want refused", err)
	}
}
