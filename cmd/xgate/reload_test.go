package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway"
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

// TestAwaitReloadCoalesced: SIGHUPs coalesce; a result of a reload that
// read the config before the caller's edit is not the caller's answer:
// xgate reload signals once more and takes the next result.
func TestAwaitReloadCoalesced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xgate.reload.json")
	write := func(seq uint64, mtime int64) {
		t.Helper()
		r := &gateway.ReloadResult{Seq: seq, Applied: true}
		if err := writeReloadResult(path, r, "/etc/xgate/xgate.yaml", mtime); err != nil {
			t.Fatal(err)
		}
	}
	write(1, 100)
	before, err := readReloadResult(path)
	if err != nil {
		t.Fatal(err)
	}
	write(2, 150) // a reload already running when the edit (mtime 200) came
	resent := 0
	r, err := awaitReload(context.Background(), path, os.Getpid(), before, 200, 5*time.Second, func() {
		resent++
		write(3, 200) // what the daemon answers the second signal with
	})
	if err != nil || r.Seq != 3 || resent != 1 {
		t.Fatalf("got seq %d after %d more signals (%v): want 3 after 1", r.Seq, resent, err)
	}
	// Without a file time (stdin, or an older daemon) any new result is the answer.
	write(4, 0)
	before, _ = readReloadResult(path)
	write(5, 0)
	if r, err := awaitReload(context.Background(), path, os.Getpid(), before, 200, time.Second, func() { t.Error("signalled again") }); err != nil || r.Seq != 5 {
		t.Errorf("no file time: seq %d, %v", r.Seq, err)
	}
}
