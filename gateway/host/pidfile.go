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
//
// flock(2) needs only an open descriptor, and the file is readable by
// all: any local user could take its lock first. A holder is therefore
// trusted only when it runs as root or as this process's user (found in
// /proc/locks); a lock held by anyone else is a squatter's, and the file
// is replaced by a new one (a new inode the squatter holds nothing of).
func LockPidFile(path string) (*PidFile, error) {
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o644)
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("pid file %s is a symbolic link: give a path the daemon owns", path)
		}
		if err != nil {
			return nil, fmt.Errorf("pid file %s: %w", path, err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return writePid(f, path)
		}
		holder := flockHolderOf(f)
		b, _ := os.ReadFile(path)
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock pid file %s: %w", path, err)
		}
		if uid, ok := processUID(holder); ok && uid != 0 && uid != os.Geteuid() && attempt == 0 {
			// A squatter: a new file at the path, once.
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("pid file %s is locked by %s of uid %d, and cannot be replaced: %w", path, processName(holder), uid, err)
			}
			continue
		}
		return nil, fmt.Errorf("another xgate (pid %s) holds the pid file %s: one daemon per pid file (stop it, or give this one --pid-file): %w",
			pidText(b), path, ErrLocked)
	}
}

// writePid writes this process's id into the locked pid file f.
func writePid(f *os.File, path string) (*PidFile, error) {
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

// flockHolderOf is the pid holding a flock on f's file (0 if unknown).
func flockHolderOf(f *os.File) int {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	return flockHolder(string(locks), unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
}

// flockHolder finds, in the text of /proc/locks, the pid of the process
// holding a FLOCK on the file dev major:minor, inode ino (0: none).
// Lines look like "1: FLOCK  ADVISORY  WRITE 20560 fe:00:9987867 0 EOF";
// "1: -> FLOCK …" lines are waiters, not holders.
func flockHolder(locks string, major, minor uint32, ino uint64) int {
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
	for line := range strings.Lines(locks) {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != want {
			continue
		}
		if pid, ok := parseDecimal(f[4], maxTID); ok && pid > 0 {
			return pid
		}
	}
	return 0
}

// processUID is the effective uid of process pid, from /proc.
func processUID(pid int) (int, bool) {
	if pid <= 0 {
		return 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	v, ok := statusField(string(b), "Uid")
	if !ok {
		return 0, false
	}
	f := strings.Fields(v) // real, effective, saved, filesystem
	if len(f) < 2 {
		return 0, false
	}
	uid, ok := parseDecimal(f[1], 1<<32-1)
	return uid, ok
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

// PidFileHolder returns the pid of the process holding the lock of the
// pid file at path (0 when none does, or it cannot be told).
func PidFileHolder(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	return flockHolderOf(f)
}
