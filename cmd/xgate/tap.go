package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/spf13/cobra"
)

func newTap() *cobra.Command {
	var addr, token, verdict, rule string
	var rate, count int
	var duration time.Duration
	cmd := &cobra.Command{
		Use:   "tap",
		Short: "Stream a sample of decided events from a running gateway (NDJSON)",
		Long: `tap reads GET /tap of a running gateway's HTTP server (http.listen) and prints
one JSON line per sampled event: {"event": <the original JSON>, "verdict",
"rule", "queue", "latency_us"} (latency_us: receive → verdict on the afxdp
path only). Events are filtered by --verdict (a comma-separated list) and
--rule, and sampled to at most --rate lines per second. Filter and rate are
applied by the gateway's workers as they decide: with no tap connected they
do nothing, and with one they copy only the events it wants, within its
rate, into a lossy ring; what the ring cannot keep is counted in
xgate_tap_dropped_total. At most 64 taps may be connected at once.

It runs until interrupted, --count lines were printed or --duration passed.`,
		Example: "  xgate tap --verdict alert\n  xgate tap --rule big-payment --rate 10 --count 5\n  xgate tap --verdict drop,block --duration 30s | jq .event",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			return runTap(ctx, cmd.OutOrStdout(), addr, token, verdict, rule, rate, count)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", config.DefaultHTTPListen, "HTTP address of the gateway: its http.listen, host:port or unix:/path")
	cmd.Flags().StringVar(&token, "token", os.Getenv("XGATE_HTTP_TOKEN"), "bearer token of the gateway's HTTP server (http.token; default $XGATE_HTTP_TOKEN)")
	cmd.Flags().StringVar(&verdict, "verdict", "", "only these verdicts, comma-separated (pass, alert, drop, block; default all)")
	cmd.Flags().StringVar(&rule, "rule", "", "only events decided by this rule")
	cmd.Flags().IntVar(&rate, "rate", 100, "at most this many lines per second")
	cmd.Flags().IntVar(&count, "count", 0, "stop after this many lines (0: no limit)")
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop after this long (0: until interrupted)")
	return cmd
}

// runTap streams /tap to out until ctx ends or count lines were copied.
func runTap(ctx context.Context, out io.Writer, addr, token, verdict, rule string, rate, count int) error {
	q := url.Values{}
	if verdict != "" {
		q.Set("verdict", verdict)
	}
	if rule != "" {
		q.Set("rule", rule)
	}
	q.Set("rate", strconv.Itoa(rate))
	client, base := httpClient(addr, 0)
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/tap?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("tap: %s: %w (is the gateway running with http.listen there?)", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("tap: %s: %s: %s", addr, resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	w := bufio.NewWriter(out)
	defer w.Flush()
	n := 0
	for sc.Scan() {
		if _, err := w.Write(append(sc.Bytes(), '\n')); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
		n++
		if count > 0 && n >= count {
			return nil
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tap: %w", err)
	}
	return nil
}
