package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway"
)

// session is one demo run of a gateway that is set up and not yet
// running: it runs it, streams the traffic with the live view, drains,
// stops it and fills the report.
type session struct {
	o     *Options
	g     *gateway.Gateway
	cfg   *config.Config
	sent  *counters
	view  *view
	rep   *Report
	files []SinkFile
}

// floodWindow is when the flooding source sends: the middle half of the
// run.
func floodWindow(d time.Duration) (from, to time.Duration) { return d / 4, d * 3 / 4 }

// run streams with stream (which must return by o.Duration or when its
// context ends), drawing the view every second, and then waits until the
// gateway has accounted for everything sent (bounded), stops it and
// checks the identity.
func (s *session) run(ctx context.Context, stream func(ctx context.Context, start time.Time) error) error {
	runCtx, stopGateway := context.WithCancel(context.Background())
	defer stopGateway()
	gwDone := make(chan error, 1)
	go func() { gwDone <- s.g.Run(runCtx) }()
	s.printTryThis(gwDone)

	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	streamDone := make(chan error, 1)
	start := time.Now()
	go func() { streamDone <- stream(streamCtx, start) }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var streamErr, gwErr error
	gwStopped := false
wait:
	for {
		select {
		case streamErr = <-streamDone:
			break wait
		case gwErr = <-gwDone: // the gateway ended before the traffic did
			gwStopped = true
			stopStream()
			streamErr = <-streamDone
			break wait
		case <-tick.C:
			if err := s.draw(time.Since(start)); err != nil {
				stopStream()
				streamErr = errors.Join(err, <-streamDone)
				break wait
			}
		}
	}
	s.rep.Elapsed = time.Since(start)
	s.rep.Interrupted = ctx.Err() != nil
	sent := s.sent.load()
	if !gwStopped {
		s.drain(sent.Total())
		stopGateway()
		gwErr = <-gwDone
	}
	st, err := s.g.Stats() // after Stop: exact
	if err != nil {
		return errors.Join(streamErr, gwErr, fmt.Errorf("demo: gateway stats: %w", err))
	}
	s.rep.Sent, s.rep.Stats = sent, st
	s.rep.Latency = s.g.Latency()
	s.rep.Unaccounted = int64(sent.Total()) - int64(st.Accounted())
	if err := s.view.finish(sample{at: s.rep.Elapsed, sent: sent, st: st}); err != nil {
		fmt.Fprintf(s.o.Out, "alerts file unreadable: %v\n", err)
	}
	s.view.alerts.close()
	for i := range s.files {
		for _, sk := range st.Sinks {
			if sk.Name == s.files[i].Name {
				s.files[i].Records = sk.Records
			}
		}
		if s.files[i].What == "alerts" {
			s.rep.Alerts = s.files[i].Records
		}
	}
	s.rep.Files = s.files
	if gwErr != nil {
		gwErr = fmt.Errorf("demo: gateway: %w", gwErr)
	}
	if err := errors.Join(streamErr, gwErr); err != nil {
		return err
	}
	if s.rep.Unaccounted != 0 {
		return fmt.Errorf("%w: %d sent, %d accounted for", ErrAccounting, sent.Total(), st.Accounted())
	}
	return nil
}

// draw takes a sample and updates the view.
func (s *session) draw(at time.Duration) error {
	st, err := s.g.Stats()
	if err != nil {
		return fmt.Errorf("demo: gateway stats: %w", err)
	}
	if err := s.view.update(sample{at: at, sent: s.sent.load(), st: st}); err != nil {
		// The view without alerts is still a view: say it once, go on.
		s.view.addNote(at, "alerts file unreadable: %v", err)
	}
	return nil
}

// drain waits until the gateway has accounted for sent packets, or has
// made no progress for a second (at most 5 s): the last packets may still
// be in a ring or a socket when the traffic stops.
func (s *session) drain(sent uint64) {
	deadline := time.Now().Add(5 * time.Second)
	var last uint64
	lastChange := time.Now()
	for time.Now().Before(deadline) && time.Since(lastChange) < time.Second {
		st, err := s.g.Stats()
		if err != nil {
			return
		}
		n := st.Accounted()
		if n >= sent {
			return
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// printReport writes the final report: the identity term by term, the
// rules, the block feedback, and the sink files.
func printReport(w io.Writer, rep *Report, cleanup string) {
	st := &rep.Stats
	kernel := rep.Mode == ModeTestHosts
	fmt.Fprintln(w)
	stopped := ""
	if rep.Interrupted {
		stopped = " (interrupted)"
	}
	fmt.Fprintf(w, "Final report: %.1fs of traffic%s, receive path %s\n", rep.Elapsed.Seconds(), stopped, rep.Path)
	row := func(label string, n uint64, detail string) {
		fmt.Fprintf(w, "  %-18s %12s%s\n", label, num(n), paren(detail))
	}
	row("sent", rep.Sent.Total(), trafficParts(rep.Sent, kernel))
	if kernel {
		row("= XDP drops", st.XDPDrops, xdpReasons(&st.XDP, bpf.FateDropped, true))
		row("+ not for us", st.NotForUs, xdpReasons(&st.XDP, bpf.FateNotForUs, true))
		row("+ socket drops", st.SocketDrops, "")
		row("+ ring drops", st.RingDrops, "")
	} else {
		row("= socket drops", st.SocketDrops, "")
	}
	row("+ decode errors", st.Engine.DecodeErrorTotal(), decodeErrors(&st.Engine))
	row("+ events decided", st.Engine.Events, verdicts(&st.Engine, true))
	mark := "✓ every packet sent is accounted for"
	if rep.Unaccounted != 0 {
		mark = "✗ the counters do not add up to what was sent"
	}
	fmt.Fprintf(w, "  %-18s %12d  %s\n", "unaccounted", rep.Unaccounted, mark)
	if line := latencyLine(rep.Latency); line != "" {
		fmt.Fprintf(w, "  %s\n", line)
	}
	fmt.Fprintf(w, "  rules fired: %s\n", rulesFired(&st.Engine))
	f := st.Feedback
	if kernel {
		fmt.Fprintf(w, "  block verdicts: %s, %s written into the XDP blocklist (%s already blocked, %s over block_max)\n",
			num(f.Requested), num(f.Applied), num(f.Deduped), num(f.OverLimit))
	} else {
		fmt.Fprintf(w, "  block verdicts: %s, not enforced in the kernel on the plain path (the events were dropped)\n", num(f.Requested))
	}
	fmt.Fprintf(w, "  sink files, kept for you to read (%s):\n", rep.Dir)
	what := map[string]string{
		"alerts":     "alert verdicts, annotated with rule and value",
		"dropped":    "drop and block verdicts, annotated",
		"rejects":    "decode errors, with the raw input",
		"passed":     "events that passed or alerted, as received",
		"routed":     "events of the rules that route to this sink (to:), annotated",
		"aggregates": "window aggregates (emit:), one per key and slide or alert",
	}
	for _, sf := range rep.Files {
		lost := ""
		for _, sk := range st.Sinks {
			if sk.Name == sf.Name && sk.Dropped+sk.Failed+sk.TooBig > 0 {
				lost = fmt.Sprintf(", %s not written (sink behind or failing)", num(sk.Dropped+sk.Failed+sk.TooBig))
			}
		}
		fmt.Fprintf(w, "    %-44s %10s records: %s%s\n", sf.Path, num(sf.Records), what[sf.What], lost)
	}
	fmt.Fprintf(w, "    %-44s %10s  the gateway's log\n", rep.Log, "")
	fmt.Fprintf(w, "  cleaned up: %s\n", cleanup)
}

// latencyLine says the receive → verdict quantiles as upper bounds of
// their log2 buckets; "" without samples.
func latencyLine(h [gateway.LatencyBuckets]uint64) string {
	var total uint64
	for _, n := range h {
		total += n
	}
	if total == 0 {
		return ""
	}
	q := func(f float64) string {
		var cum uint64
		for i, n := range h {
			cum += n
			if float64(cum) >= f*float64(total) {
				if i == len(h)-1 {
					return fmt.Sprintf("> %d µs", 1<<(i-1))
				}
				return fmt.Sprintf("≤ %d µs", 1<<i)
			}
		}
		return "?"
	}
	return fmt.Sprintf("receive → verdict: %s frames timed, p50 %s, p99 %s, p99.9 %s", num(total), q(0.5), q(0.99), q(0.999))
}

// printTryThis waits (at most 2 s) for the gateway's HTTP server and says
// how to watch the run from another terminal.
func (s *session) printTryThis(gwDone <-chan error) {
	deadline := time.Now().Add(2 * time.Second)
	addr := s.g.HTTPAddr()
	for addr == "" && time.Now().Before(deadline) && len(gwDone) == 0 {
		time.Sleep(10 * time.Millisecond)
		addr = s.g.HTTPAddr()
	}
	if addr == "" {
		return
	}
	s.rep.HTTPAddr = addr
	w := s.o.Out
	fmt.Fprintf(w, "  watch it from another terminal while it runs (HTTP on %s):\n", addr)
	fmt.Fprintf(w, "            export XGATE_HTTP_TOKEN=%s\n", s.cfg.HTTP.Token)
	fmt.Fprintf(w, "            xgate stats --addr %s\n", addr)
	fmt.Fprintf(w, "            xgate tap --addr %s --verdict alert --count 5\n", addr)
	fmt.Fprintf(w, "            curl -s -H \"Authorization: Bearer $XGATE_HTTP_TOKEN\" http://%s/metrics | grep ^xgate_accounting\n", addr)
	fmt.Fprintln(w)
}
