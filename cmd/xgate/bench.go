//go:build !lean

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"

	"github.com/spf13/cobra"

	"github.com/xgate/xgate/tools/bench"
	"github.com/xgate/xgate/tools/gen"
	"github.com/xgate/xgate/tools/loadgen"
)

func newBench() *cobra.Command {
	var mode, engine, compare, rate, plotPath, cpuProfile string
	var duration, warmup, hostCheck, spin time.Duration
	probes, rxTimestamps := true, true
	var sources, users, steps, rtPrio int
	var badShare float64
	var asJSON, sweep bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the gateway end to end on veth test hosts",
		Long: `bench builds two test hosts (network namespaces joined by a veth pair), starts
the gateway in one of them in the chosen mode with the default risk rules
(those of examples/xgate.yaml, no sinks, nothing pinned), warms up for 2 s,
drives the XDP live-frames generator from the other host for --duration, and
reports where every datagram went (unaccounted must be 0), events/s, the
receive → verdict latency (afxdp only), GC cycles, RSS, CPU per event and
the allocations per event on the gateway's workers. Everything it builds is
removed when it ends. Needs root.

Layout: the sender is pinned to CPU 1, and the receiving host's kernel path
(XDP, the AF_XDP copy, the UDP stack) runs there too; the gateway's workers
and the raw modes' readers get the other CPUs (workers.cpus), so on a
2-CPU host one worker on CPU 0 decides everything.

--compare runs several modes with the same load and prints them side by side,
with ratios against the first. Besides the gateway's paths (afxdp, socket,
plain) it knows three yardsticks that run instead of the gateway:

  baseline  a plain Go server (tools/baseline): net.ListenUDP-style sockets,
            one per core, one datagram per read, encoding/json, the same
            rules as plain Go
  gjson     the same server reading the JSON with gjson instead
  rawxsk    the gateway's XDP program in afxdp mode and one AF_XDP socket per
            queue whose frames are only counted and returned (no decoding)
  rawsock   the gateway's XDP program in socket mode and one recvmmsg socket
            per worker CPU (SO_REUSEPORT, the gateway's receive buffer)
            whose datagrams are only counted

For the raw modes "decided" is what the receivers counted.

--sweep measures latency against load on one gateway: a max-rate run, then
fixed offered loads of 10 %, 20 %, …, 100 % of the rate it decided (--steps),
each for --duration (default 3 s in a sweep, so a sweep takes about 40 s).
It prints one line per load (--json: an array), and --plot FILE.png draws p50
and p99 against the offered load. --rate R makes R the 100 % load instead of
the max-rate run.

--rate 20k,120k,max (a comma list) runs every mode at each of the loads,
one target per mode, a warm-up and a measured window per load, and prints a
line per load and mode: offered and decided rates, the receiver's CPU (the
CPU time of the receiver's own process: every receiver, the gateway and
the yardsticks alike, runs in a child process of the bench, so it is
charged all its threads and Go runtime and nothing of the generator's;
the receiving host's kernel path, which runs on the sender's CPU, is not
in it),
events per receiver CPU-second with its ratio against the first mode, and
unaccounted. --json prints an array of loads, each with its reports.`,
		Example: "  sudo xgate bench\n  sudo xgate bench --mode socket --duration 5s --json\n  sudo xgate bench --compare afxdp,socket,plain --rate 500000\n  sudo xgate bench --compare afxdp,rawxsk,socket,rawsock,baseline --duration 5s\n  sudo xgate bench --sweep --plot latency-vs-load.png\n  sudo xgate bench --compare plain,socket,afxdp,gjson,baseline --rate 20k,120k,max",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			loads, err := bench.ParseRates(rate)
			if err != nil {
				return err
			}
			r := loads[0].TargetRate
			if len(loads) > 1 && (sweep || cmd.Flags().Changed("histograms")) {
				return errors.New("bench: several --rate loads are for --mode or --compare runs; not with --sweep or --histograms")
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
			if sweep && compare != "" {
				return errors.New("bench: --sweep runs one --mode; not with --compare")
			}
			if sweep && steps < 1 {
				return fmt.Errorf("bench: --steps %d: want at least 1", steps)
			}
			if plotPath != "" && !sweep {
				return errors.New("bench: --plot needs --sweep")
			}
			if plotPath != "" && !strings.EqualFold(filepath.Ext(plotPath), ".png") {
				return fmt.Errorf("bench: --plot %s: want a .png file", plotPath)
			}
			if plotPath != "" && mode != "afxdp" {
				return fmt.Errorf("bench: --plot: only the afxdp path measures latency, not %s", mode)
			}
			if sweep && !cmd.Flags().Changed("duration") {
				duration = bench.DefaultSweepDuration
			}
			if sweep && !cmd.Flags().Changed("warmup") {
				warmup = bench.DefaultSweepWarmup
			}
			if warmup == 0 {
				warmup = -1 // bench.Options: < 0 is none
			}
			if rtPrio < 0 || rtPrio > host.MaxRealtimePriority {
				return fmt.Errorf("bench: --rt-priority %d: want 0 (off) or 1..%d", rtPrio, host.MaxRealtimePriority)
			}
			if _, err := loadgen.ResolveEngine(engine); err != nil {
				return fmt.Errorf("bench: --engine: %w", err)
			}
			o := bench.Options{Engine: engine, Duration: duration, Warmup: warmup, Rate: r, Sources: sources,
				Events: gen.Config{Users: users, BadShare: badShare}, RTPriority: rtPrio}
			o.NoProbes, o.NoRxTimestamps = !probes, !rxTimestamps
			if cpuProfile != "" && (sweep || len(loads) > 1 || cmd.Flags().Changed("histograms")) {
				return errors.New("bench: --cpuprofile is for --mode or --compare runs at one --rate; not with --sweep or --histograms")
			}
			o.CPUProfile = cpuProfile
			if cmd.Flags().Changed("spin") {
				if spin < 0 || spin > config.MaxRxSpin {
					return fmt.Errorf("bench: --spin %v: want 0 .. %v", spin, config.MaxRxSpin)
				}
				o.Spin = spin
				if spin == 0 {
					o.Spin = -1 // bench.Options: < 0 is no spin
				}
			}
			if isTerminal(cmd.ErrOrStderr()) {
				o.Progress = func(p bench.Progress) {
					if p.Elapsed == 0 { // a step with nothing counted yet
						fmt.Fprintf(cmd.ErrOrStderr(), "\r\033[K%s %s …", p.Mode, p.Phase)
						return
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "\r\033[K%s %s %5.1fs  decided %d  %.3f M events/s",
						p.Mode, p.Phase, p.Elapsed.Seconds(), p.Decided, float64(p.Decided)/p.Elapsed.Seconds()/1e6)
				}
			} else {
				o.Progress = stepLines(cmd.ErrOrStderr(), modes, time.Now())
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if hostCheck < 0 {
				return fmt.Errorf("bench: --host-check %v: want 0 (skip) or a duration", hostCheck)
			}
			histograms, _ := cmd.Flags().GetBool("histograms")
			if histograms && sweep {
				return errors.New("bench: --histograms is for single runs; not with --sweep")
			}
			if hostCheck > 0 {
				if rtPrio > 0 {
					hostCheck = min(hostCheck, bench.MaxRTHostCheck)
				}
				hs, err := bench.HostCheck(bench.WorkerCPUs(), bench.OtherCPUs(), hostCheck, rtPrio)
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if asJSON {
					w = cmd.ErrOrStderr() // stdout is the JSON alone
				}
				bench.WriteHostCheck(w, hs)
			}
			if histograms {
				if !isTerminal(cmd.ErrOrStderr()) {
					o.Progress = nil // RunHistogramsTo clears a terminal line
				}
				return bench.RunHistogramsTo(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), modes, o, asJSON)
			}
			if sweep {
				o.Mode = modes[0]
				return runSweep(ctx, cmd, bench.SweepOptions{Options: o, Steps: steps}, asJSON, plotPath)
			}
			if len(loads) > 1 {
				return runLoads(ctx, cmd, modes, loads, o, asJSON)
			}
			reps, err := bench.Compare(ctx, modes, o)
			if o.Progress != nil && isTerminal(cmd.ErrOrStderr()) {
				fmt.Fprint(cmd.ErrOrStderr(), "\r\033[K")
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if compare == "" {
					return writeJSON(out, reps[0])
				}
				return writeJSON(out, reps)
			}
			bench.WriteTable(out, reps)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&mode, "mode", "afxdp", "afxdp, socket or plain (the gateway), or baseline, gjson, rawxsk, rawsock")
	f.StringVar(&engine, "engine", bench.EngineAuto, "the generator: auto (xdp if the kernel allows live frames, else afxdp), xdp (live frames) or afxdp (AF_XDP TX ring)")
	f.StringVar(&compare, "compare", "", "comma list of modes to run with the same load, side by side (e.g. afxdp,rawxsk,socket,rawsock,baseline)")
	f.StringVar(&rate, "rate", "max", "offered datagrams/s (e.g. 500000, 500k, 1.5M) or max; a comma list (20k,120k,max) runs every mode at each load and reports events per receiver CPU-second")
	f.DurationVar(&duration, "duration", bench.DefaultDuration, "measured send per mode")
	f.DurationVar(&warmup, "warmup", bench.DefaultWarmup, "send before the measurement (0: none)")
	f.IntVar(&sources, "sources", bench.DefaultSources, "client IPv4 addresses the load comes from")
	f.IntVar(&users, "users", 100000, "distinct user ids (Zipf)")
	f.Float64Var(&badShare, "bad-share", 0, "share of malformed events, 0..1")
	f.BoolVar(&asJSON, "json", false, "print JSON (one object; an array with --compare or --sweep)")
	f.BoolVar(&sweep, "sweep", false, "latency against load: a max-rate run, then 10 %, 20 %, …, 100 % of its rate")
	f.IntVar(&steps, "steps", bench.DefaultSweepSteps, "loads of a --sweep, evenly spaced up to the max")
	f.Bool("histograms", false, "also print the latency histograms of the measured window (receive → verdict, kernel queueing, XDP cost) as bucket tables")
	f.IntVar(&rtPrio, "rt-priority", 0, "run the gateway's workers SCHED_FIFO at this priority, 1..99 (workers.realtime_priority); 0: off")
	f.BoolVar(&probes, "probes", true, "run the gateway's kernel probes (probes.enabled); --probes=false measures what they cost")
	f.BoolVar(&rxTimestamps, "rx-timestamps", true, "host-wide software receive timestamps for the socket path's latency (probes.rx_timestamps)")
	f.DurationVar(&spin, "spin", config.DefaultRxSpin, "afxdp.spin: how long the workers spin on an empty RX ring before they sleep (0..10ms)")
	f.DurationVar(&hostCheck, "host-check", time.Second, "before the runs, spin this long on every CPU and report the stalls (≥ 200 µs) the host imposes on the worker CPUs; 0: skip")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a pprof CPU profile of the receiver (its own process) over each measured window to this file; {mode} in it is replaced by the mode")
	f.StringVar(&plotPath, "plot", "", "with --sweep: write p50/p99 latency against offered load to this PNG file")
	return cmd
}

// runSweep runs a sweep, prints it and draws it.
func runSweep(ctx context.Context, cmd *cobra.Command, o bench.SweepOptions, asJSON bool, plotPath string) error {
	progress := o.Progress
	pts, err := bench.Sweep(ctx, o)
	if progress != nil && isTerminal(cmd.ErrOrStderr()) {
		fmt.Fprint(cmd.ErrOrStderr(), "\r\033[K")
	}
	out := cmd.OutOrStdout()
	if len(pts) > 0 {
		if asJSON {
			if jerr := writeJSON(out, pts); jerr != nil {
				return errors.Join(err, jerr)
			}
		} else {
			bench.WriteSweepTable(out, pts)
		}
	}
	if err != nil {
		return err
	}
	if plotPath != "" {
		if err := bench.WriteSweepPlot(plotPath, pts); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "plot written to %s\n", plotPath)
	}
	return nil
}

// runLoads runs every mode at every load and prints a line per load and
// mode (--json: an array of loads, each with its reports), also what was
// measured before an error.
func runLoads(ctx context.Context, cmd *cobra.Command, modes []string, loads []bench.FixedLoad, o bench.Options, asJSON bool) error {
	res, err := bench.CompareLoads(ctx, modes, loads, o)
	if o.Progress != nil && isTerminal(cmd.ErrOrStderr()) {
		fmt.Fprint(cmd.ErrOrStderr(), "\r\033[K")
	}
	if asJSON {
		if jerr := writeJSON(cmd.OutOrStdout(), res); jerr != nil {
			return errors.Join(err, jerr)
		}
	} else {
		bench.WriteLoadsTable(cmd.OutOrStdout(), res)
	}
	return err
}

// parseRate reads "max" (0) or a positive rate with an optional k or M.
func parseRate(s string) (float64, error) { return bench.ParseRate(s) }

// stepLines is the progress of a bench whose stderr is not a terminal: a
// line as each mode enters a phase (warmup, measure, drain), with its
// place among the modes and the time since the bench began, so a piped
// or logged bench is never silent for long.
func stepLines(w io.Writer, modes []string, began time.Time) func(bench.Progress) {
	var last string
	return func(p bench.Progress) {
		if key := p.Mode + " " + p.Phase; key != last {
			last = key
			fmt.Fprintf(w, "bench: mode %d/%d %s: %s (%.0fs since start)\n",
				slices.Index(modes, p.Mode)+1, len(modes), p.Mode, p.Phase, time.Since(began).Seconds())
		}
	}
}
