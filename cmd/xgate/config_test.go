package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestValidateStdin: -c - reads the configuration from stdin.
func TestValidateStdin(t *testing.T) {
	cmd := newRoot()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader("listen: {ports: [9000]}\n"))
	cmd.SetArgs([]string{"validate", "-c", "-"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("validate -c -: %v\n%s", err, out.String())
	}
	cmd = newRoot()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader("listen: {ports: [9000]}\nmode: fast\n"))
	cmd.SetArgs([]string{"validate", "-c", "-"})
	err := cmd.Execute()
	if exitCode(err) != exitConfig || !strings.Contains(err.Error(), "stdin:2") {
		t.Errorf("bad config on stdin: %v (exit %d), want stdin:2 and exit %d", err, exitCode(err), exitConfig)
	}
}

// TestDefaultConfigPath: without -c, run and validate read
// /etc/xgate/xgate.yaml, and a missing default says so.
func TestDefaultConfigPath(t *testing.T) {
	for _, c := range []string{"run", "validate"} {
		f := newRoot()
		sub, _, err := f.Find([]string{c})
		if err != nil {
			t.Fatal(err)
		}
		if d := sub.Flags().Lookup("config").DefValue; d != "/etc/xgate/xgate.yaml" {
			t.Errorf("%s -c defaults to %q", c, d)
		}
	}
	if _, err := os.Stat(defaultConfig); err == nil {
		t.Skip(defaultConfig + " exists on this host")
	}
	_, err := run(t, "validate")
	if exitCode(err) != exitConfig || !strings.Contains(err.Error(), "(the default; -c names another file)") {
		t.Errorf("validate without -c: %v", err)
	}
}

func TestLogFormat(t *testing.T) {
	var b bytes.Buffer
	log, err := newLogger(&b, "json", 0)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello", "k", 1)
	if !strings.HasPrefix(b.String(), "{") || !strings.Contains(b.String(), `"msg":"hello"`) {
		t.Errorf("json log %q", b.String())
	}
	if _, err := newLogger(&b, "xml", 0); exitCode(err) != exitUsage {
		t.Errorf("--log-format xml: %v (exit %d)", err, exitCode(err))
	}
}

// TestNoColor: a terminal takes ANSI escapes unless NO_COLOR is set (or
// TERM=dumb).
func TestNoColor(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pty number: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pty: %v", err)
	}
	defer tty.Close()
	t.Setenv("NO_COLOR", "")
	t.Setenv("TERM", "xterm")
	if !isTerminal(tty) {
		t.Fatal("a pty is not a terminal")
	}
	t.Setenv("NO_COLOR", "1")
	if isTerminal(tty) {
		t.Error("NO_COLOR=1: escapes still on")
	}
	t.Setenv("NO_COLOR", "")
	t.Setenv("TERM", "dumb")
	if isTerminal(tty) {
		t.Error("TERM=dumb: escapes still on")
	}
}
