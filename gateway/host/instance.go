package host

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

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
// too).
type Lock struct {
	fd   int
	what string
}

// Release drops the lock. Safe on nil.
func (l *Lock) Release() error {
	if l == nil || l.fd < 0 {
		return nil
	}
	err := unix.Close(l.fd)
	l.fd = -1
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
// When another process holds it, the error names that process (the
// kernel's SO_PEERCRED of the lock's listener).
func LockPort(port uint16) (*Lock, error) {
	name := portLockName(port)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock udp port %d: socket: %w", port, err)
	}
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: name})
	if err == nil {
		// Listening lets a second daemon ask who holds the port (nobody
		// accepts: a few askers fit in the backlog, later ones are told
		// "another process").
		err = unix.Listen(fd, 16)
	}
	if err == nil {
		return &Lock{fd: fd, what: "udp port " + strconv.Itoa(int(port))}, nil
	}
	unix.Close(fd)
	if !errors.Is(err, unix.EADDRINUSE) {
		return nil, fmt.Errorf("lock udp port %d: %w", port, err)
	}
	holder := "another process"
	if pid := lockHolder(name); pid > 0 {
		holder = processName(pid)
	}
	return nil, fmt.Errorf("%s already receives udp port %d in this network namespace; a second daemon would take "+
		"half its traffic through SO_REUSEPORT (stop it, or give this one other listen.ports): %w", holder, port, ErrInUse)
}

// lockHolder asks the holder of the abstract socket name for its pid
// (0 when it cannot be told).
func lockHolder(name string) int {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: name}); err != nil && !errors.Is(err, unix.EAGAIN) {
		return 0
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0
	}
	return int(cred.Pid)
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
	return &Lock{fd: fd, what: dir}, nil
}
