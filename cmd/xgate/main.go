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

// Set by the Makefile through -ldflags (tools/version.sh: the git tag).
// A plain `go build` leaves "dev"; `go install …@v0.2.0` is read from the
// build information instead (init).
var (
	version = "dev"
	commit  = "unknown"
)

func init() {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		version = info.Main.Version
	}
	if commit == "unknown" {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				commit = s.Value[:12]
			}
		}
	}
}

// versionLine is what `xgate version` and `xgate --version` print.
func versionLine() string {
	return fmt.Sprintf("xgate %s (commit %s, %s, cilium/ebpf %s)\n",
		version, commit, runtime.Version(), depVersion("github.com/cilium/ebpf"))
}

// writeJSON writes v as indented JSON, the --json output of every command.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "xgate:", err)
		os.Exit(exitCode(err))
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
		Version:       version,
	}
	root.SetVersionTemplate(versionLine())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(newVersion(), newRun(), newValidate(), newReload(), newStats(), newTap(), newFeatures(), newBlock(), newDocs())
	root.AddCommand(labCommands()...)
	return root
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version, commit and the cilium/ebpf version",
		Example: "  xgate version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(cmd.OutOrStdout(), versionLine())
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
