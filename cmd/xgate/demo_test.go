package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoPlainCLI runs `xgate demo --plain` briefly: its output is not a
// terminal, so the view is one line per second, and the report checks the
// accounting.
func TestDemoPlainCLI(t *testing.T) {
	dir := t.TempDir()
	out, err := run(t, "demo", "--plain", "--duration", "2s", "--rate", "2k", "--dir", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"PLAIN MODE ON LOOPBACK", "plain mode asked for (--plain)", "Final report",
		"every packet sent is accounted for", filepath.Join(dir, "alerts.ndjson")} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\033[") {
		t.Errorf("output to a non-terminal redraws in place:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "gateway.log")); err != nil {
		t.Errorf("gateway log: %v", err)
	}
}

func TestDemoRejectsMaxRate(t *testing.T) {
	if out, err := run(t, "demo", "--rate", "max"); err == nil || !strings.Contains(err.Error(), "fixed rate") {
		t.Fatalf("--rate max: err %v\n%s", err, out)
	}
}
