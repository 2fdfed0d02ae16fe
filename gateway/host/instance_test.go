package host

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/xgate/xgate/testenv"
	"golang.org/x/sys/unix"
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
	// Many askers: the holder answers them all (its backlog never fills),
	// so each is refused naming it.
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

// TestLockPortSquatter: a name held by another user (abstract names have
// no permissions) does not keep the daemon from starting: the lock is
// skipped and says why. A squatter that never answers is skipped too.
func TestLockPortSquatter(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind as another user")
	}
	const port = 59_997
	// Another user binds the name first.
	fd := -1
	err := testenv.AsUser(65534, func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: portLockName(port)}); err != nil {
			return err
		}
		return unix.Listen(fd, 16)
	})
	if fd >= 0 {
		defer unix.Close(fd)
	}
	if err != nil {
		t.Fatal(err)
	}
	l, err := LockPort(port)
	if err != nil {
		t.Fatalf("a squatter of uid 65534 kept the lock: %v", err)
	}
	if !strings.Contains(l.Skipped, "uid 65534") {
		t.Errorf("Skipped = %q, want the squatter's uid", l.Skipped)
	}
	l.Release()
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
	// The directory it made, left empty, went with the lock: a start that
	// failed leaves no pin directory behind.
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the empty directory LockDir made is still there: %v", err)
	}
	l, err = LockDir(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pin"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l.Release()
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("a directory with pins in it was removed: %v", err)
	}

	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := LockDir(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("lock through a symbolic link: %v, want refused", err)
	}
}
