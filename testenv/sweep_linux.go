//go:build linux

package testenv

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Sweep removes what crashed runs left behind: namespaces under /run/netns
// named xgate-test-<pid>-… and links in the caller's namespace whose alias is
// xgate-test-<pid>-…, where no process <pid> exists any more. Objects of
// live processes (other tests running now) are never touched; a reused PID
// only delays a sweep. It returns what it removed.
func Sweep() ([]string, error) {
	var removed []string
	var errs []error

	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if !staleTag(e.Name()) {
			continue
		}
		if err := deleteNamedNS(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "netns "+e.Name())
	}

	links, err := netlink.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		if !staleTag(l.Attrs().Alias) {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", l.Attrs().Name, err))
			continue
		}
		removed = append(removed, "link "+l.Attrs().Name)
	}
	return removed, errors.Join(errs...)
}

// staleTag reports whether name is xgate-test-<pid>-… with <pid> gone.
func staleTag(name string) bool {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return false
	}
	pidStr, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return false
	}
	return pidGone(pid)
}

func pidGone(pid int) bool {
	return errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}
