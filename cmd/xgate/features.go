package main

import (
	"fmt"
	"io"

	"github.com/xgate/xgate/gateway/host"

	"github.com/spf13/cobra"
)

func newFeatures() *cobra.Command {
	var iface string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "features [--interface IF] [--json]",
		Short: "List the kernel and interface features xgate probes, and what each makes it do",
		Long: `features probes every kernel feature xgate may use (BPF links, XDP metadata,
live frames, tp_btf, socket filters, sk_reuseport, BTF) and says for each
whether it is available, refused, switched off (XGATE_FEATURES_OFF) or
unknown, why, and what xgate does about it.

With --interface it also tries the interface: a native XDP attach through a
bpf_link (detached at once) and AF_XDP binds on queue 0 (zero-copy, then
copy). An interface that already has an XDP program — a running xgate — is
not touched: its features say "in use". Some drivers reset their rings when
a native XDP program comes or goes, so probe a busy NIC with care.`,
		Example: "  sudo xgate features\n  sudo xgate features --interface eth0 --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := &host.InterfaceReport{}
			if iface != "" {
				var err error
				if r, err = host.ProbeInterface(iface); err != nil {
					return err
				}
			} else {
				r.Features = host.HostFeatures()
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			printFeatures(cmd.OutOrStdout(), r)
			return nil
		},
	}
	cmd.Flags().StringVar(&iface, "interface", "", "also probe this interface (in this network namespace)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printFeatures writes the report as text, one line per feature.
func printFeatures(w io.Writer, r *host.InterfaceReport) {
	if r.RxQueues != nil {
		fmt.Fprintf(w, "%s: %d active RX queues (from %s)\n", r.Interface, r.RxQueues.Active, r.RxQueues.Source)
	}
	for _, f := range r.Features {
		fmt.Fprintln(w, f.Line())
	}
}
