//go:build !lean

package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/xgate/xgate/tools/bench"
	"github.com/xgate/xgate/tools/gen"
)

func newLoad() *cobra.Command {
	var engine, to, netnsName, iface, dstMAC, rate string
	var testHost, asJSON bool
	var count uint64
	var duration time.Duration
	var sources, users int
	var badShare float64
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Send generated UDP JSON events (XDP live frames, AF_XDP or sendmmsg)",
		Long: `load sends realistic risk events (Zipf users, log-normal amounts, weighted
event types, an optional share of malformed JSON), bounded by --count and
--duration, paced at --rate or as fast as possible.

  --testhost   builds a veth test host pair and sends into a receiver that
               counts and drops every frame in XDP (no gateway): the rate of
               the generator itself, reported as its ceiling. Engines: auto
               (the default: xdp where the kernel allows live frames, else
               afxdp), xdp (BPF_PROG_RUN live frames), afxdp (an AF_XDP
               socket's TX ring, copy mode) or socket (sendmmsg).
  --to A:P     sends with the socket engine (the default without --testhost)
               from this namespace, or from --netns NAME; with --engine
               auto, xdp or afxdp and --iface IF, frames out of IF (in --netns
               NAME), to the MAC of A in IF's neighbour table or --dst-mac.
               With xdp the receiving end must take XDP frames (veth: an XDP
               program on the peer).`,
		Example: "  sudo xgate load --testhost --count 5000000\n  sudo xgate load --testhost --engine afxdp --count 3000000\n  sudo xgate load --testhost --engine socket --duration 5s --sources 4 --json\n  xgate load --engine socket --to 127.0.0.1:9000 --rate 100k --duration 10s\n  sudo xgate load --engine xdp --netns blue --iface veth1 --to 10.0.0.2:9000 --count 1000000",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := parseRate(rate)
			if err != nil {
				return err
			}
			o := bench.LoadOptions{Engine: engine, TestHost: testHost, NetNS: netnsName, Rate: r,
				Count: count, Duration: duration, Sources: sources,
				Events: gen.Config{Users: users, BadShare: badShare}}
			if !cmd.Flags().Changed("engine") && !testHost && iface == "" {
				o.Engine = bench.EngineSocket
			}
			o.Iface = iface
			if dstMAC != "" {
				if o.DstMAC, err = net.ParseMAC(dstMAC); err != nil {
					return fmt.Errorf("--dst-mac %q: %w", dstMAC, err)
				}
			}
			if to != "" {
				if o.To, err = netip.ParseAddrPort(to); err != nil {
					return fmt.Errorf("--to %q: want ADDR:PORT", to)
				}
			}
			if count > 0 && !cmd.Flags().Changed("duration") {
				o.Duration = 0 // the count bounds it
			}
			if isTerminal(cmd.ErrOrStderr()) {
				o.Progress = func(n uint64, el time.Duration) {
					what := "sent"
					if o.Engine != bench.EngineSocket {
						what = "received"
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "\r\033[K%5.1fs  %s %d  %.3f M/s", el.Seconds(), what, n, float64(n)/el.Seconds()/1e6)
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := bench.Load(ctx, o)
			if o.Progress != nil {
				fmt.Fprint(cmd.ErrOrStderr(), "\r\033[K")
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, rep)
			}
			fmt.Fprintf(out, "engine %s → %s\n", rep.Engine, rep.Target)
			fmt.Fprintf(out, "sent %d in %.2fs: %.3f M/s\n", rep.Sent, rep.ElapsedS, rep.PPS/1e6)
			if testHost {
				fmt.Fprintf(out, "received %d, undelivered (veth) %d\n", rep.Received, rep.Undelivered)
			}
			if rep.SenderCPUS > 0 {
				fmt.Fprintf(out, "sending thread's CPU %.2fs: %.3f M per CPU-second\n", rep.SenderCPUS, float64(rep.Sent)/rep.SenderCPUS/1e6)
			}
			if rep.CeilingPPS > 0 {
				fmt.Fprintf(out, "generator ceiling (%s alone into XDP drop, max rate): %.3f M/s\n", rep.Engine, rep.CeilingPPS/1e6)
			}
			if rep.Refused > 0 {
				fmt.Fprintf(out, "refused by the kernel (never completed) %d\n", rep.Refused)
			}
			if rep.Errors > 0 {
				fmt.Fprintf(out, "errors %d\n", rep.Errors)
			}
			if len(rep.ByKind) > 0 {
				var ks []string
				for k := range rep.ByKind {
					ks = append(ks, k)
				}
				sort.Strings(ks)
				fmt.Fprint(out, "events:")
				for _, k := range ks {
					fmt.Fprintf(out, " %s %d", k, rep.ByKind[k])
				}
				fmt.Fprintln(out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&engine, "engine", bench.EngineAuto, "auto (xdp if the kernel allows live frames, else afxdp), xdp (live frames), afxdp (AF_XDP TX ring) or socket (sendmmsg; the default without --testhost and --iface)")
	f.BoolVar(&testHost, "testhost", false, "build a test host pair and send into an XDP counting receiver")
	f.StringVar(&to, "to", "", "destination ADDR:PORT (socket engine)")
	f.StringVar(&netnsName, "netns", "", "send from this network namespace (under /run/netns)")
	f.StringVar(&iface, "iface", "", "auto/xdp/afxdp engine without --testhost: the interface to send from")
	f.StringVar(&dstMAC, "dst-mac", "", "auto/xdp/afxdp engine without --testhost: next hop MAC (default: from the neighbour table)")
	f.StringVar(&rate, "rate", "max", "datagrams/s (e.g. 200000, 200k, 1.5M) or max")
	f.Uint64Var(&count, "count", 0, "datagrams to send (0: until --duration)")
	f.DurationVar(&duration, "duration", 10*time.Second, "longest send (with --count: a bound on it, if given)")
	f.IntVar(&sources, "sources", 1, "auto/xdp/afxdp engine: client IPv4 addresses; socket engine: sockets")
	f.IntVar(&users, "users", 100000, "distinct user ids (Zipf)")
	f.Float64Var(&badShare, "bad-share", 0, "share of malformed events, 0..1")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}
