package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the module's root directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("not in a module (%q)", gomod)
	}
	return filepath.Dir(gomod)
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  string
	buildDir  string
)

// releaseBinary builds bin/xgate the way `make build` does (static,
// versioned) into a directory shared by this package's tests, once.
func releaseBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xgate-deploy-")
		if err != nil {
			buildErr = err.Error()
			return
		}
		buildDir = dir
		if err := os.Chmod(dir, 0o755); err != nil { // the unprivileged runs exec it
			buildErr = err.Error()
			return
		}
		bin := filepath.Join(dir, "xgate")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "make", "-s", "build", "BIN="+bin)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = "make build: " + err.Error() + "\n" + string(out)
			return
		}
		buildBin = bin
	})
	if buildErr != "" {
		t.Fatal(buildErr)
	}
	return buildBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// run runs a command and returns its combined output, failing the test on error.
func run(t testing.TB, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
