package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/xgate/xgate/gateway/host"
)

// TestReadPid: xgate reload signals only a process that holds its pid
// file's lock: a pid file naming a process called xgate (this test binary)
// that does not hold it is refused.
func TestReadPid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xgate.pid")
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readPid(path); err == nil || !strings.Contains(err.Error(), "does not hold its lock") {
		t.Fatalf("unlocked pid file: %v", err)
	}
	pf, err := host.LockPidFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Release()
	if pid, err := readPid(path); err != nil || pid != os.Getpid() {
		t.Fatalf("locked pid file: %d, %v", pid, err)
	}
}
