package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/spf13/cobra"
)

func newStats() *cobra.Command {
	var addr, token, pins string
	var once, asJSON bool
	var duration, interval time.Duration
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show a running gateway's accounting, verdicts, rules, latency and queues",
		Long: `stats reads /status and /metrics of a running gateway over HTTP (http.listen)
and shows the terms of the accounting identity, events by verdict, the rules
that fired most, the receive → verdict latency (p50/p99/p999; afxdp path),
the kernel queueing latency (socket path, with probes) and per-queue
datagrams and drops.

By default it is a live view refreshing every second with rates per second
(the screen is cleared only when stdout is a terminal), until interrupted or
--duration has passed. --once prints one plain-text snapshot, --json one JSON
snapshot.

--pins DIR reads the XDP program's pinned maps (pin.path) directly instead
of HTTP: with the daemon running, or stopped with pin.keep. It shows the XDP
part of a snapshot (packets by reason, events, the program's cost, the
blocklist), in the same live view (rates and the program's cost over each
interval, from the difference of two readings; the pins are opened anew for
every reading, so a restarted gateway's new maps are followed), or once
with --once or --json.`,
		Example: "  xgate stats --pins /sys/fs/bpf/xgate --once\n  xgate stats --pins /sys/fs/bpf/xgate\n  xgate stats\n  xgate stats --addr 127.0.0.1:9717 --once\n  xgate stats --json | jq .accounting\n  xgate stats --duration 10s > stats.log",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if once && asJSON {
				return fmt.Errorf("stats: --once and --json are exclusive")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if pins != "" {
				return pinStats(ctx, cmd.OutOrStdout(), pins, asJSON, once, interval, duration)
			}
			client, _ := httpClient(addr, 5*time.Second)
			out := cmd.OutOrStdout()
			fetch := func() (*Snapshot, error) {
				s, err := FetchSnapshot(ctx, client, addr, token)
				if err != nil {
					return nil, fmt.Errorf("stats: %s: %w", addr, err)
				}
				return s, nil
			}
			if asJSON || once {
				s, err := fetch()
				if err != nil {
					return err
				}
				if once {
					return s.WriteText(out, nil, false)
				}
				return writeJSON(out, s)
			}
			return liveView(ctx, out, fetch, (*Snapshot).WriteText, interval, duration)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", config.DefaultHTTPListen, "HTTP address of the gateway: its http.listen, host:port or unix:/path")
	cmd.Flags().StringVar(&token, "token", os.Getenv("XGATE_HTTP_TOKEN"), "bearer token of the gateway's HTTP server (http.token; default $XGATE_HTTP_TOKEN)")
	cmd.Flags().StringVar(&pins, "pins", "", "read the pinned XDP maps in this bpffs directory (pin.path) instead of HTTP")
	cmd.Flags().BoolVar(&once, "once", false, "print one plain-text snapshot and exit")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON snapshot and exit")
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop the live view after this long (0: until interrupted)")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "refresh interval of the live view")
	return cmd
}

// liveView refreshes every interval, writing each snapshot with the
// previous one (nil at first) for rates; on a terminal it redraws in
// place, else it appends with a "----" line between snapshots.
func liveView[T any](ctx context.Context, out io.Writer, fetch func() (*T, error),
	write func(s *T, w io.Writer, prev *T, color bool) error, interval, duration time.Duration) error {
	if interval <= 0 {
		interval = time.Second
	}
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	tty := isTerminal(out)
	t := time.NewTicker(interval)
	defer t.Stop()
	var prev *T
	for {
		s, err := fetch()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if tty {
			fmt.Fprint(out, "\x1b[H\x1b[2J")
		} else if prev != nil {
			fmt.Fprintln(out, "----")
		}
		if err := write(s, out, prev, tty); err != nil {
			return err
		}
		prev = s
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// pinStats shows the XDP part of a snapshot from the pinned maps in dir:
// live, or once as text or JSON.
func pinStats(ctx context.Context, out io.Writer, dir string, asJSON, once bool, interval, duration time.Duration) error {
	fetch := func() (*PinSnapshot, error) {
		s, err := ReadPins(dir)
		if err != nil {
			return nil, fmt.Errorf("stats --pins: %w (are the maps pinned there? pin.path, pin.keep)", err)
		}
		return s, nil
	}
	if !asJSON && !once {
		return liveView(ctx, out, fetch, (*PinSnapshot).WriteLive, interval, duration)
	}
	s, err := fetch()
	if err != nil {
		return err
	}
	if once {
		return s.WriteText(out)
	}
	return writeJSON(out, s)
}
