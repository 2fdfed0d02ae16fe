package testenv

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// AsUser runs fn on an OS thread of its own whose real, effective and
// saved uid are uid (as a local unprivileged user would act), and waits
// for it. The thread is never handed back: it ends with fn's goroutine.
// The main thread is never used, because it outlives a goroutine that
// locked it, and the process's /proc status (its uid included) is the
// main thread's: a goroutine that lands there holds it while another,
// necessarily on another thread, does the work. Needs root.
//
// Another process's view of "a user" (its pid in /proc/locks, its
// /proc status) stays this process's root: tests of what another process
// does run one (setpriv).
func AsUser(uid int, fn func() error) error {
	done := make(chan error, 1)
	var run func()
	run = func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			inner := make(chan struct{})
			go func() { run(); close(inner) }()
			<-inner
			runtime.UnlockOSThread() // unchanged: hand it back
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			done <- e
			return
		}
		done <- fn()
	}
	go run()
	return <-done
}
