//go:build linux

package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces are bind-mounted, as iproute2 does.
const netnsDir = "/run/netns"

// errThreadTainted says that a thread could not be moved back to its
// original namespace; its goroutine stays locked so the runtime ends it.
var errThreadTainted = errors.New("terminating OS thread")

// onThread runs fn on a fresh goroutine locked to its OS thread. setup
// moves the thread (into a namespace, usually); afterwards the thread is
// moved back to the namespace it started in. If that fails the goroutine
// exits still locked, so the runtime discards the thread instead of
// handing a thread in the wrong namespace to other goroutines.
func onThread(setup func() error, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()

		ferr := setup()
		if ferr == nil {
			ferr = fn()
		}
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w (%w)", err, errThreadTainted))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// inNS runs fn on a locked thread inside the namespace ns.
func inNS(ns netns.NsHandle, fn func() error) error {
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return nil
	}, fn)
}

// newNamedNS creates a network namespace bind-mounted at /run/netns/name
// (visible to `ip netns`) and returns an open handle to it.
func newNamedNS(name string) (netns.NsHandle, error) {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return netns.None(), fmt.Errorf("create %s: %w", netnsDir, err)
	}
	path := filepath.Join(netnsDir, name)
	ns := netns.None()
	err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare netns: %w", err)
		}
		return nil
	}, func() error {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if err != nil {
			return fmt.Errorf("create netns file: %w", err)
		}
		f.Close()
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			os.Remove(path)
			return fmt.Errorf("bind-mount netns %s: %w", name, err)
		}
		h, err := netns.Get()
		if err != nil {
			deleteNamedNS(name)
			return fmt.Errorf("open netns %s: %w", name, err)
		}
		ns = h
		return nil
	})
	if err != nil {
		if ns.IsOpen() {
			ns.Close()
		}
		return netns.None(), err
	}
	return ns, nil
}

// deleteNamedNS unmounts and removes /run/netns/name. The namespace itself
// goes away when its last reference (fd, socket, thread) does.
func deleteNamedNS(name string) error {
	path := filepath.Join(netnsDir, name)
	var errs []error
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", path, err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", path, err))
	}
	return errors.Join(errs...)
}
