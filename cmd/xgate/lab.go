//go:build !lean

package main

import "github.com/spf13/cobra"

// labCommands are the commands that build test hosts and drive load:
// demo, load and bench. This full build links them (and with them the
// test-host builder, the load generators and the plots); `make build`
// names it xgate-lab and builds the daemon with -tags lean, whose
// lab_lean.go hands these commands over to it.
func labCommands() []*cobra.Command {
	return []*cobra.Command{newDemo(), newLoad(), newBench()}
}
