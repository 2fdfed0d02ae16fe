package deploy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// heavy are what the daemon must not link: the testing package, the
// test-host builder, our bench/load/demo tooling and the plotting library.
func heavy(pkg string) bool {
	return pkg == "testing" || strings.HasPrefix(pkg, "github.com/xgate/xgate/testenv") ||
		strings.HasPrefix(pkg, "github.com/xgate/xgate/tools/") || strings.HasPrefix(pkg, "gonum.org/")
}

// TestLeanDaemon: the daemon (`make build`'s bin/xgate, -tags lean) links
// none of the heavy packages, the full build beside it (xgate-lab) does,
// and the daemon's demo, load and bench run xgate-lab, or say where it
// should be when it is missing.
func TestLeanDaemon(t *testing.T) {
	root := repoRoot(t)
	deps := func(tags ...string) []string {
		args := append([]string{"list", "-deps"}, tags...)
		return strings.Fields(run(t, root, "go", append(args, "./cmd/xgate")...))
	}
	for _, p := range deps("-tags", "lean") {
		if heavy(p) {
			t.Errorf("the lean daemon links %s", p)
		}
	}
	var full []string
	for _, p := range deps() {
		if heavy(p) {
			full = append(full, p)
		}
	}
	if len(full) == 0 { // else this test proves nothing about the filter
		t.Fatal("the full build links none of the heavy packages: the filter no longer matches")
	}

	bin := releaseBinary(t)
	lab := filepath.Join(filepath.Dir(bin), "xgate-lab")
	if mods := run(t, "", "go", "version", "-m", bin); strings.Contains(mods, "gonum.org/v1/plot") {
		t.Errorf("%s carries gonum.org/v1/plot:\n%s", bin, mods)
	}
	if mods := run(t, "", "go", "version", "-m", lab); !strings.Contains(mods, "gonum.org/v1/plot") {
		t.Errorf("%s lacks gonum.org/v1/plot: is it the full build?", lab)
	}

	// Through the daemon: `xgate load --help` prints load's own flags.
	if out := run(t, "", bin, "load", "--help"); !strings.Contains(out, "--count") || !strings.Contains(out, "--engine") {
		t.Errorf("xgate load --help through xgate-lab:\n%s", out)
	}
	// Alone (no xgate-lab beside it, none in PATH): a usage error that says what to do.
	alone := filepath.Join(t.TempDir(), "xgate")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(alone, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(alone, "bench", "--duration", "1s")
	cmd.Env = []string{"PATH=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "needs xgate-lab") ||
		!strings.Contains(string(out), "make build") {
		t.Errorf("xgate bench without xgate-lab: %v\n%s", err, out)
	}
}
