// Command xgate is the one CLI of xgate: see `xgate --help`.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set by the Makefile through -ldflags.
var (
	version = "dev"
	commit  = "unknown"
)

// writeJSON writes v as indented JSON, the --json output of every command.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "xgate:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "xgate",
		Short: "eBPF-accelerated ingest gateway for small JSON events over UDP",
		Long: `xgate attaches to a NIC, polices and counts packets in XDP, hands the
survivors to Go workers without copying them, runs a lock-free rule engine
over the JSON events (filters, per-key rate limits, sliding windows), and
accounts for every packet it saw.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersion(), newDemo(), newRun(), newValidate(), newReload(), newLoad(), newBench(), newStats(), newTap(), newFeatures(), newBlock())
	return root
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version, commit and the cilium/ebpf version",
		Example: "  xgate version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "xgate %s (commit %s, %s, cilium/ebpf %s)\n",
				version, commit, runtime.Version(), depVersion("github.com/cilium/ebpf"))
			return nil
		},
	}
}

// depVersion reads a dependency's version from the build information.
func depVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range info.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Replace.Version + " (replaced)"
			}
			return d.Version
		}
	}
	return "not linked"
}
