package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/tools/bench"
	"github.com/xgate/xgate/tools/gen"
)

func newBench() *cobra.Command {
	var mode, compare, rate string
	var duration, warmup time.Duration
	var sources, users int
	var badShare float64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the gateway end to end on veth test hosts",
		Long: `bench builds two test hosts (network namespaces joined by a veth pair), starts
the gateway in one of them in the chosen mode with the default risk rules
(those of examples/xgate.yaml, no sinks, nothing pinned), warms up for 2 s,
drives the XDP live-frames generator from the other host for --duration, and
reports where every datagram went (unaccounted must be 0), events/s, the
receive → verdict latency (afxdp only), GC cycles, RSS, CPU and allocations
per event. Everything it builds is removed when it ends. Needs root.

--compare runs several modes with the same load and prints them side by side,
with ratios against the first. Besides the gateway's paths (afxdp, socket,
plain) it knows three yardsticks that run instead of the gateway:

  baseline  a plain Go server (tools/baseline): net.ListenUDP-style sockets,
            one per core, encoding/json, the same rules as plain Go
  rawxsk    the gateway's XDP program in afxdp mode and one AF_XDP socket per
            queue whose frames are only counted and returned (no decoding)
  rawsock   the gateway's XDP program in socket mode and one recvmmsg socket
            per CPU (SO_REUSEPORT) whose datagrams are only counted

For the raw modes "decided" is what the receivers counted.`,
		Example: "  sudo xgate bench\n  sudo xgate bench --mode socket --duration 5s --json\n  sudo xgate bench --compare afxdp,socket,plain --rate 500000\n  sudo xgate bench --compare afxdp,rawxsk,socket,rawsock,baseline --duration 5s",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := parseRate(rate)
			if err != nil {
				return err
			}
			modes := []string{mode}
			if compare != "" {
				modes = strings.Split(compare, ",")
			}
			for i, m := range modes {
				modes[i] = strings.TrimSpace(m)
				if !slices.Contains(bench.AllModes, modes[i]) {
					return fmt.Errorf("bench: mode %q: want one of %s", m, strings.Join(bench.AllModes, ", "))
				}
			}
			if warmup == 0 {
				warmup = -1 // bench.Options: < 0 is none
			}
			o := bench.Options{Duration: duration, Warmup: warmup, Rate: r, Sources: sources,
				Events: gen.Config{Users: users, BadShare: badShare}}
			if isTerminal(cmd.ErrOrStderr()) {
				o.Progress = func(p bench.Progress) {
					fmt.Fprintf(cmd.ErrOrStderr(), "\r\033[K%s %s %5.1fs  decided %d  %.3f M events/s",
						p.Mode, p.Phase, p.Elapsed.Seconds(), p.Decided, float64(p.Decided)/p.Elapsed.Seconds()/1e6)
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			reps, err := bench.Compare(ctx, modes, o)
			if o.Progress != nil {
				fmt.Fprint(cmd.ErrOrStderr(), "\r\033[K")
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if compare == "" {
					return enc.Encode(reps[0])
				}
				return enc.Encode(reps)
			}
			bench.WriteTable(out, reps)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&mode, "mode", "afxdp", "afxdp, socket or plain (the gateway), or baseline, rawxsk, rawsock")
	f.StringVar(&compare, "compare", "", "comma list of modes to run with the same load, side by side (e.g. afxdp,rawxsk,socket,rawsock,baseline)")
	f.StringVar(&rate, "rate", "max", "offered datagrams/s (e.g. 500000, 500k, 1.5M) or max")
	f.DurationVar(&duration, "duration", bench.DefaultDuration, "measured send per mode")
	f.DurationVar(&warmup, "warmup", bench.DefaultWarmup, "send before the measurement (0: none)")
	f.IntVar(&sources, "sources", bench.DefaultSources, "client IPv4 addresses the load comes from")
	f.IntVar(&users, "users", 100000, "distinct user ids (Zipf)")
	f.Float64Var(&badShare, "bad-share", 0, "share of malformed events, 0..1")
	f.BoolVar(&asJSON, "json", false, "print JSON (one object; an array with --compare)")
	return cmd
}

// parseRate reads "max" (0) or a positive rate with an optional k or M.
func parseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "max") {
		return 0, nil
	}
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult, s = 1e6, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || v*mult > 1e9 {
		return 0, fmt.Errorf("rate %q: want max or a number of datagrams/s up to 1e9 (500000, 500k, 1.5M)", s)
	}
	return v * mult, nil
}

// isTerminal says whether w is a terminal (for the progress line).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
