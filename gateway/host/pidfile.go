package host

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// PidFile is a pid file this process holds with an exclusive lock: one
// daemon per pid file, by a lock the kernel drops when the process dies,
// not by a check a second instance could race. It is opened without
// following a symbolic link (a link there could make the daemon truncate
// any file it may write).
type PidFile struct {
	f    *os.File
	path string
}

// ErrLocked is matched by LockPidFile's error when another process holds
// the pid file.
var ErrLocked = errors.New("pid file held by another process")

// LockPidFile opens (creating, 0644) and locks path, then writes this
// process's id into it.
func LockPidFile(path string) (*PidFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o644)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("pid file %s is a symbolic link: give a path the daemon owns", path)
	}
	if err != nil {
		return nil, fmt.Errorf("pid file %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another xgate (pid %s) holds the pid file %s: one daemon per pid file (stop it, or give this one --pid-file): %w",
				pidText(b), path, ErrLocked)
		}
		return nil, fmt.Errorf("lock pid file %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pid file %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pid file %s: %w", path, err)
	}
	return &PidFile{f: f, path: path}, nil
}

// pidText is the process ID a pid file holds, as text for a message;
// "unknown" when it holds anything else (the file is the other daemon's,
// or anyone's who could write it: never printed raw).
func pidText(b []byte) string {
	s := strings.TrimSpace(string(b))
	if _, ok := parseDecimal(s, maxTID); !ok {
		return "unknown"
	}
	return s
}

// Release removes the pid file (while still holding it, so no second
// daemon's fresh file is removed) and drops the lock.
func (p *PidFile) Release() error {
	if p == nil {
		return nil
	}
	err := os.Remove(p.path)
	return errors.Join(err, p.f.Close())
}
