package bench

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
)

// startCPUProfile starts a pprof CPU profile of the whole process (the
// gateway runs in it) into path, "{mode}" in it replaced by mode, and
// returns the function that stops it and closes the file. An empty path
// profiles nothing.
func startCPUProfile(path, mode string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	path = strings.ReplaceAll(path, "{mode}", mode)
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
