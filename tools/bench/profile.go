package bench

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
)

// profilePath is the --cpuprofile file of mode: "{mode}" in path replaced
// by it.
func profilePath(path, mode string) string { return strings.ReplaceAll(path, "{mode}", mode) }

// startCPUProfile starts a pprof CPU profile of this process into path
// and returns the function that stops it and closes the file. An empty
// path profiles nothing. It runs where the receiver runs: in the
// receiver's process (child.go), or in the bench's with the receiver in
// it (Options.InProcess).
func startCPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("bench: cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("bench: cpu profile %s: %w", path, err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("bench: cpu profile %s: %w", path, err)
		}
		return nil
	}, nil
}
