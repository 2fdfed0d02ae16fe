//go:build lean

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

// labName is the full build (`go build ./cmd/xgate` without -tags lean),
// which `make build` writes next to the daemon.
const labName = "xgate-lab"

// labDirs are searched after the daemon's own directory, before PATH: the
// Debian package installs xgate-lab there, out of /usr/bin.
var labDirs = []string{"/usr/lib/xgate"}

// labCommands, in the lean daemon, are stand-ins for demo, load and bench:
// each replaces the process with `xgate-lab <command> <args>`, so the
// commands work as typed while the daemon links neither the test-host
// builder, the load generators, the plots nor the testing package.
func labCommands() []*cobra.Command {
	var cmds []*cobra.Command
	for _, c := range []struct{ name, short string }{
		{"demo", "Watch the gateway decide a realistic event stream on test hosts (root) or loopback"},
		{"load", "Send generated UDP JSON events (XDP live frames, AF_XDP or sendmmsg)"},
		{"bench", "Measure the gateway end to end on veth test hosts"},
	} {
		cmds = append(cmds, &cobra.Command{
			Use:                c.name,
			Short:              c.short,
			Long:               c.short + ".\n\nRuns " + labName + " (installed beside xgate); `xgate " + c.name + " --help` shows its flags.",
			DisableFlagParsing: true,
			RunE: func(_ *cobra.Command, args []string) error {
				return execLab(c.name, args)
			},
		})
	}
	return cmds
}

// execLab replaces this process with xgate-lab running command name.
func execLab(name string, args []string) error {
	path, err := findLab()
	if err != nil {
		return &usageError{fmt.Errorf("xgate %s: %w", name, err)}
	}
	argv := append([]string{path, name}, args...)
	if err := syscall.Exec(path, argv, os.Environ()); err != nil {
		return fmt.Errorf("xgate %s: exec %s: %w", name, path, err)
	}
	return nil // not reached: Exec does not return on success
}

// findLab looks beside the running binary, then in labDirs, then in PATH.
func findLab() (string, error) {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	for _, d := range append(dirs, labDirs...) {
		p := filepath.Join(d, labName)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(labName); err == nil {
		return p, nil
	} else if !errors.Is(err, exec.ErrNotFound) {
		return "", fmt.Errorf("look for %s in PATH: %w", labName, err)
	}
	return "", fmt.Errorf("needs %s, which is neither beside this binary, in %v nor in PATH: `make build` builds it beside bin/xgate (the daemon is built without the test-host builder, load generators and plots)", labName, labDirs)
}
