//go:build !lean

package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/tools/demo"
)

func newDemo() *cobra.Command {
	var duration time.Duration
	var rate, dir string
	var plain bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch the gateway decide a realistic event stream on test hosts (root) or loopback",
		Long: `demo builds a pair of test hosts (network namespaces joined by a veth), starts
the gateway on one with the rules of examples/xgate.yaml, streams a realistic
mix from the other for --duration — events from thousands of clients (Zipf
users, log-normal amounts, some malformed JSON, some non-JSON, some to another
port) and, in the middle half, a flooding source — and shows rates, verdicts,
XDP drops by reason and alerts as they fire, refreshed every second (one line
per second when the output is not a terminal). The final report checks that
every packet sent is accounted for; the sink files stay in a temporary
directory; the test hosts are removed.

Without root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW), or with --plain, it
runs the gateway's plain UDP path on 127.0.0.1 instead, and says so.`,
		Example: "  sudo xgate demo\n  xgate demo --duration 10s --plain\n  sudo xgate demo --rate 50k --dir /tmp/xgate-demo",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := demo.Options{Duration: duration, Dir: dir, Plain: plain, Out: cmd.OutOrStdout()}
			if rate != "" {
				if strings.EqualFold(rate, "max") {
					return errors.New("--rate: the demo runs at a fixed rate; give events/s (20000, 20k)")
				}
				r, err := parseRate(rate)
				if err != nil {
					return err
				}
				o.Rate = r
			}
			if f, ok := o.Out.(*os.File); ok && isTerminal(f) {
				o.Live = true
				if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
					o.Width = int(ws.Col)
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			_, err := demo.Run(ctx, o)
			return err
		},
	}
	f := cmd.Flags()
	f.DurationVar(&duration, "duration", demo.DefaultDuration, "how long the traffic streams")
	f.StringVar(&rate, "rate", "", "client events/s (default 10000 on test hosts, 4000 on loopback; 20k, 1.5M)")
	f.StringVar(&dir, "dir", "", "directory for the sink files and the gateway's log (default: a new temp dir, kept)")
	f.BoolVar(&plain, "plain", false, "run plain mode on loopback even as root")
	return cmd
}
