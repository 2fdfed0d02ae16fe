package host

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// One daemon per resource, by locks the kernel drops when the process
// dies (a check of a pid or a file could be raced or left stale):
//
//   - a UDP port in a network namespace: an abstract unix socket named
//     after the port. Abstract names live in the network namespace, as the
//     port does, and vanish with the last descriptor. Without it a second
//     daemon would silently take half the port's traffic through
//     SO_REUSEPORT.
//   - a pin directory: flock(2) on the directory itself (bpffs supports
//     it). Two daemons sharing pinned maps would count into and block
//     through each other's maps.

// ErrInUse is matched by the errors of LockPort and LockDir when another
// process holds the lock.
var ErrInUse = errors.New("held by another process")

// Lock is one held lock; Release drops it (closing the process drops it
// too). Skipped, when not "", says why a lock was not taken although the
// caller may go on (LockPort: a name held by a process we must not trust).
type Lock struct {
	fd      int
	ln      net.Listener
	what    string
	made    string // a directory LockDir created: removed on Release if empty
	Skipped string
}

// Release drops the lock. Safe on nil.
func (l *Lock) Release() error {
	if l == nil {
		return nil
	}
	var err error
	if l.ln != nil {
		err = l.ln.Close()
		l.ln = nil
	}
	// The directory first, while the lock is held: a daemon that takes the
	// lock next finds the directory it made itself, never has it removed.
	if l.made != "" {
		_ = os.Remove(l.made) // only when empty: a start that failed leaves none behind
		l.made = ""
	}
	if l.fd >= 0 {
		err = errors.Join(err, unix.Close(l.fd))
		l.fd = -1
	}
	if err != nil {
		return fmt.Errorf("release %s: %w", l.what, err)
	}
	return nil
}

// portLockName is the abstract socket name of a UDP port's lock.
func portLockName(port uint16) string {
	return "@xgate/udp/" + strconv.Itoa(int(port))
}

// LockPort takes the lock of UDP port in the caller's network namespace.
// When another xgate holds it, the error names that process (the kernel's
// SO_PEERCRED of the lock's listener).
//
// An abstract name has no file permissions: any local user could bind it
// first. A holder is therefore trusted only when it runs as root or as
// this process's user; a name held by anyone else (or by a holder that
// does not answer) is a squatter, and the lock is skipped (Lock.Skipped
// says so) rather than let it keep the daemon from starting.
func LockPort(port uint16) (*Lock, error) {
	name := portLockName(port)
	what := "udp port " + strconv.Itoa(int(port))
	ln, err := net.Listen("unix", name)
	if err == nil {
		// Answer every asker, so that the backlog never fills and a
		// second daemon can always learn who holds the port. Accept
		// blocks in the poller: nothing runs at rest.
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return &Lock{fd: -1, ln: ln, what: what}, nil
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		return nil, fmt.Errorf("lock udp port %d: %w", port, err)
	}
	cred := lockHolder(name)
	switch {
	case cred == nil:
		return &Lock{fd: -1, what: what, Skipped: fmt.Sprintf("the lock name of udp port %d is held by a process that does not answer; "+
			"going on without the one-daemon-per-port lock", port)}, nil
	case cred.Uid != 0 && int(cred.Uid) != os.Geteuid():
		return &Lock{fd: -1, what: what, Skipped: fmt.Sprintf("the lock name of udp port %d is held by %s of uid %d, neither root nor this daemon's user; "+
			"going on without the one-daemon-per-port lock", port, processName(int(cred.Pid)), cred.Uid)}, nil
	}
	return nil, fmt.Errorf("%s already receives udp port %d in this network namespace; a second daemon would take "+
		"half its traffic through SO_REUSEPORT (stop it, or give this one other listen.ports): %w", processName(int(cred.Pid)), port, ErrInUse)
}

// lockHolder asks the holder of the abstract socket name who it is (nil
// when it cannot be told).
func lockHolder(name string) *unix.Ucred {
	c, err := net.DialTimeout("unix", name, time.Second)
	if err != nil {
		return nil
	}
	defer c.Close()
	sc, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return nil
	}
	var cred *unix.Ucred
	_ = sc.Control(func(fd uintptr) {
		cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return cred
}

// processName is "xgate (pid N)" from /proc, or "process N".
func processName(pid int) string {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil || len(comm) < 2 {
		return "process " + strconv.Itoa(pid)
	}
	return string(comm[:len(comm)-1]) + " (pid " + strconv.Itoa(pid) + ")"
}

// LockDir creates dir (0700) if missing and takes an exclusive flock on
// it, without following a symbolic link at dir.
func LockDir(dir string) (*Lock, error) {
	made := ""
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		made = dir
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("lock %s: not a directory (a symbolic link?): give a path the daemon owns", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another xgate uses the pin directory %s (stop it, or give this one another pin.path): %w", dir, ErrInUse)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return &Lock{fd: fd, what: dir, made: made}, nil
}
