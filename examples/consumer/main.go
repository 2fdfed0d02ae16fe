// Command consumer reads the events topic xgate gateways produce to Kafka
// and computes exact per-key sliding-window sums downstream — the
// authoritative version of the gateways' per-host, ring-approximated
// windows — emits its own alerts, and compares them with the gateways'.
//
//	go run ./examples/consumer --brokers kafka-1:9092 --topic xgate.events \
//	    --window 60s --threshold 50000 --rule velocity
//
// Each alert is one JSON line on stdout (or --alerts FILE); a report of
// what was read and how the gateways' verdicts compare goes to stderr every
// --report-every and at the end. See docs/deploy.md for the deployment
// this belongs to, and window/ for the exact semantics.
//
// # Time
//
// --time rx (default) windows events by the gateway's receive time (the
// record's rx_ns header): stamped by the gateway, not by the client, so a
// client cannot move its events out of a window by lying about ts, and on
// the same axis as the gateway's own windows, so the comparison is event
// by event. --time ts windows by the event's own ts (milliseconds), for
// business time (events buffered on a phone and sent later); lateness must
// then cover the producers' clock skew and buffering.
//
// # Delivery
//
// A consumer group member, commits after processing: each partition's
// committed offset is where a new owner must start to rebuild its windows
// (about window + dedup horizon back), and the commit's metadata says how
// far results were emitted, so after a rebalance or a restart the windows
// are exact again at once and no alert is emitted twice by the group
// (except the results a --flush emitted early). Alert IDs are the event's
// topic/partition/offset, stable across replays, for downstream dedup.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg         Config
		brokers     = fs.String("brokers", "127.0.0.1:9092", "seed brokers, comma-separated host:port")
		types       = fs.String("types", "payment", "event types that enter the window, comma-separated (\"\" = all)")
		verdicts    = fs.String("verdicts", "pass,alert", "gateway verdicts (header verdict) that enter the window")
		alertsPath  = fs.String("alerts", "-", "where exact alerts go, one JSON line each (- = stdout, \"\" = nowhere)")
		reportEvery = fs.Duration("report-every", 10*time.Second, "print the report to stderr this often (0 = only at the end)")
		useTLS      = fs.Bool("tls", false, "TLS to the brokers (system roots)")
		saslMech    = fs.String("sasl-mechanism", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		saslUser    = fs.String("sasl-user", "", "SASL user")
		saslPwFile  = fs.String("sasl-password-file", "", "file whose first line is the SASL password")
		verbose     = fs.Bool("v", false, "log at debug level")
	)
	fs.StringVar(&cfg.Topic, "topic", "xgate.events", "the gateways' events topic (sink what: passed)")
	fs.StringVar(&cfg.Group, "group", "xgate-windows", "consumer group")
	fs.DurationVar(&cfg.Window, "window", 60*time.Second, "window size: sum over (t − window, t]")
	fs.DurationVar(&cfg.Lateness, "lateness", 5*time.Second, "how far behind the newest time of its partition an event may arrive and still count")
	fs.DurationVar(&cfg.Dedup, "dedup", 0, "an event whose ID was accepted at most this long before is a duplicate (default: the window; 0s: only exact re-sends)")
	fs.StringVar(&cfg.Threshold, "threshold", "50000", "alert when a window's sum is greater")
	fs.IntVar(&cfg.Decimals, "decimals", 6, "amounts are exact to this many decimals (more is an error, counted)")
	fs.StringVar(&cfg.Time, "time", "rx", "rx (the gateway's receive time, header rx_ns) or ts (the event's ts field, ms)")
	fs.StringVar(&cfg.TSField, "ts-field", "ts", "the event time field, milliseconds since the epoch (--time ts)")
	fs.StringVar(&cfg.KeyField, "key", "user_id", "the key field (the gateway's schema.key: the records' Kafka key)")
	fs.StringVar(&cfg.AmountField, "amount", "amount", "the summed field")
	fs.StringVar(&cfg.IDField, "id", "event_id", "the per-event dedup key (\"\" = no dedup)")
	fs.StringVar(&cfg.TypeField, "type-field", "event_type", "the field --types matches")
	fs.StringVar(&cfg.Rule, "rule", "velocity", "the gateway window rule to compare with (header rule of alerts)")
	fs.DurationVar(&cfg.CommitEvery, "commit-every", time.Second, "commit checkpoints this often")
	fs.DurationVar(&cfg.ExitIdle, "exit-idle", 0, "exit once no record came for this long (0 = run until SIGINT/SIGTERM)")
	fs.BoolVar(&cfg.Flush, "flush", false, "with --exit-idle: emit the results still waiting for the watermark before exiting")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	dedupSet := false
	fs.Visit(func(f *flag.Flag) { dedupSet = dedupSet || f.Name == "dedup" })
	if !dedupSet {
		cfg.Dedup = cfg.Window
	}
	cfg.Brokers = splitList(*brokers)
	cfg.Types = splitList(*types)
	cfg.Verdicts = splitList(*verdicts)
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	switch *alertsPath {
	case "":
	case "-":
		cfg.Alerts = stdout
	default:
		f, err := os.OpenFile(*alertsPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("alerts file: %w", err)
		}
		defer f.Close()
		cfg.Alerts = f
	}
	if *useTLS {
		cfg.KgoOpts = append(cfg.KgoOpts, kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	if *saslMech != "" {
		m, err := saslOpt(*saslMech, *saslUser, *saslPwFile)
		if err != nil {
			return err
		}
		cfg.KgoOpts = append(cfg.KgoOpts, m)
	}

	c, err := NewConsumer(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *reportEvery > 0 {
		go func() {
			t := time.NewTicker(*reportEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					fmt.Fprint(stderr, c.Report())
				}
			}
		}()
	}
	rep, err := c.Run(ctx)
	fmt.Fprint(stderr, rep)
	return err
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func saslOpt(mech, user, pwFile string) (kgo.Opt, error) {
	if user == "" || pwFile == "" {
		return nil, errors.New("sasl: --sasl-user and --sasl-password-file are required")
	}
	b, err := os.ReadFile(pwFile)
	if err != nil {
		return nil, fmt.Errorf("sasl password: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimRight(pw, "\r")
	switch strings.ToUpper(mech) {
	case "PLAIN":
		return kgo.SASL(plain.Auth{User: user, Pass: pw}.AsMechanism()), nil
	case "SCRAM-SHA-256":
		return kgo.SASL(scram.Auth{User: user, Pass: pw}.AsSha256Mechanism()), nil
	case "SCRAM-SHA-512":
		return kgo.SASL(scram.Auth{User: user, Pass: pw}.AsSha512Mechanism()), nil
	}
	return nil, fmt.Errorf("sasl mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", mech)
}
