package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/spf13/cobra"

	"github.com/xgate/xgate/gateway"
)

// newBlock is `xgate block list|add|remove`: the XDP blocklist of a
// running gateway, over its HTTP API (/blocklist).
func newBlock() *cobra.Command {
	var addr, token string
	cmd := &cobra.Command{
		Use:   "block",
		Short: "List, add or remove sources in a running gateway's XDP blocklist",
		Long: `block talks to a running gateway's /blocklist (http.listen). list shows every
blocked source with the rule that blocked it (or "manual"), since when and
until when; add blocks a source by hand (for --ttl, or until removed);
remove releases one, and the next block verdict for it applies at once.
Adding and removing need the gateway's bearer token (http.token): without
one set, the gateway refuses changes over HTTP. Sources in an
xdp.never_block network cannot be blocked.`,
		Example: "  xgate block list\n  xgate block add 203.0.113.7 --ttl 1h --token $TOKEN\n  xgate block remove 203.0.113.7 --token $TOKEN\n  xgate block list --json | jq '.[] | select(.rule==\"flood-source\")'",
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&addr, "addr", config.DefaultHTTPListen, "HTTP address of the gateway: its http.listen, host:port or unix:/path")
	pf.StringVar(&token, "token", os.Getenv("XGATE_HTTP_TOKEN"), "bearer token (http.token; default $XGATE_HTTP_TOKEN)")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "Show the blocked sources",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := blockCall(cmd.Context(), http.MethodGet, addr, token, nil)
			if err != nil {
				return err
			}
			var bl []gateway.BlockEntry
			if err := json.Unmarshal(body, &bl); err != nil {
				return fmt.Errorf("block list: the gateway's answer: %w", err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), bl)
			}
			return writeBlocklist(cmd.OutOrStdout(), bl)
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var ttl time.Duration
	add := &cobra.Command{
		Use:   "add ADDR",
		Short: "Block a source by hand",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := netip.ParseAddr(args[0])
			if err != nil {
				return fmt.Errorf("block add %q: want an IPv4 or IPv6 address", args[0])
			}
			if ttl < 0 {
				return fmt.Errorf("block add: --ttl %v: want a duration (0: until removed)", ttl)
			}
			q := url.Values{"addr": {a.String()}, "ttl": {ttl.String()}}
			if _, err := blockCall(cmd.Context(), http.MethodPost, addr, token, q); err != nil {
				return err
			}
			what := "until removed"
			if ttl > 0 {
				what = "for " + ttl.String()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "blocked %s %s\n", a, what)
			return nil
		},
	}
	add.Flags().DurationVar(&ttl, "ttl", 0, "how long (0: until removed)")

	remove := &cobra.Command{
		Use:   "remove ADDR",
		Short: "Release a blocked source",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := netip.ParseAddr(args[0])
			if err != nil {
				return fmt.Errorf("block remove %q: want an IPv4 or IPv6 address", args[0])
			}
			if _, err := blockCall(cmd.Context(), http.MethodDelete, addr, token, url.Values{"addr": {a.String()}}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "released %s\n", a)
			return nil
		},
	}
	cmd.AddCommand(list, add, remove)
	return cmd
}

// blockCall makes one request to /blocklist and returns the body of a 2xx
// answer, or an error with the gateway's message.
func blockCall(ctx context.Context, method, addr, token string, q url.Values) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	client, base := httpClient(addr, 0)
	u := base + "/blocklist"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("block: %s: %w (is the gateway running with http.listen there?)", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("block: %s: %w", addr, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("block: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func writeBlocklist(w io.Writer, bl []gateway.BlockEntry) error {
	if len(bl) == 0 {
		_, err := fmt.Fprintln(w, "no source is blocked")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tRULE\tSINCE\tUNTIL\tLEFT")
	for _, b := range bl {
		since, until, left := "-", "permanent", "-"
		if !b.Since.IsZero() {
			since = b.Since.Local().Format(time.DateTime)
		}
		if !b.Until.IsZero() {
			until = b.Until.Local().Format(time.DateTime)
			left = (time.Duration(b.TTL * float64(time.Second))).Round(time.Second).String()
			if !b.Live {
				left = "expired"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Addr, b.Rule, since, until, left)
	}
	return tw.Flush()
}
