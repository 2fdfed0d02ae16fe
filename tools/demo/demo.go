// Package demo is `xgate demo`: it shows what xgate does on this machine,
// with nothing to configure.
//
// Part one runs the rule engine on generated risk events (no root needed).
// Part two, as root, builds a test host pair (two network namespaces and a
// veth, removed afterwards), starts the gateway on the receiving end (mode
// auto: AF_XDP behind the XDP program), sends a known mix of traffic from
// the peer, and checks that every packet sent is accounted for.
package demo

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/tools/gen"
)

// Options shape a demo run.
type Options struct {
	Events int  // events for the engine part; default 200000
	Kernel bool // run the kernel part (needs root)
	Out    io.Writer
	// SinkDir receives the sink files of part 2; "" makes a new directory
	// under the system's temp dir and leaves it for the user to read.
	SinkDir string
}

// rulesYAML are the demo rules, the example of DESIGN.md plus a rule that
// blocks: one text for both parts, in the configuration's own form.
const rulesYAML = `rules:
  - name: big-payment
    when: event_type == "payment" && amount > 10000
    action: alert
  - name: bot
    when: event_type == "bot"
    action: block 30s
  - name: per-user-rate
    rate_limit: {key: user_id, rate: 100/s, burst: 200, max_keys: 262144}
    action: drop
  - name: velocity
    window: {key: user_id, size: 60s, slide: 5s, agg: sum(amount), max_keys: 262144}
    when: value > 50000
    action: alert
  - name: flood-source
    rate_limit: {key: src_ip, rate: 10000/s, max_keys: 65536}
    action: block 30s
`

// Rules are the demo rules as the engine takes them.
func Rules() ([]engine.RuleSpec, error) {
	// A configuration needs a port; only its rules are used here.
	cfg, err := gateway.ParseConfig("demo rules", []byte("listen: {ports: [9000]}\n"+rulesYAML))
	if err != nil {
		return nil, err
	}
	return cfg.EngineConfig().Rules, nil
}

// Run runs the demo and writes its report to opts.Out.
func Run(opts Options) error {
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.Events <= 0 {
		opts.Events = 200000
	}
	w := opts.Out
	fmt.Fprintln(w, "xgate demo")
	fmt.Fprintln(w, "==========")
	fmt.Fprintln(w, "Shows the rule engine alone, then the whole gateway (XDP program, AF_XDP sockets,")
	fmt.Fprintln(w, "workers, feedback into the XDP blocklist, sinks) on a veth test host pair.")
	fmt.Fprintln(w)
	if err := runEngine(w, opts.Events); err != nil {
		return fmt.Errorf("engine demo: %w", err)
	}
	fmt.Fprintln(w)
	if !opts.Kernel {
		fmt.Fprintln(w, "Part 2 (kernel data plane) skipped: it needs root (network namespaces, XDP). Run: sudo make demo")
		return nil
	}
	if err := runKernel(w, opts.SinkDir); err != nil {
		return fmt.Errorf("kernel demo: %w", err)
	}
	return nil
}

func runEngine(w io.Writer, events int) error {
	fmt.Fprintf(w, "Part 1: the rule engine on %d generated events from 100k users (Zipf), arriving at 50k/s (simulated clock), one core, no root\n", events)
	fmt.Fprintln(w, "  rules:")
	rules, err := Rules()
	if err != nil {
		return err
	}
	for _, r := range rules {
		fmt.Fprintf(w, "    %-14s %s\n", r.Name, describe(r))
	}
	g, err := gen.New(gen.Config{Users: 100000, BadShare: 0.01, BigShare: 0.02, Seed: 1})
	if err != nil {
		return err
	}
	frames := make([][]byte, events)
	kinds := make(map[gen.Kind]int)
	for i := range frames {
		var k gen.Kind
		frames[i], k = g.Append(nil)
		kinds[k]++
	}
	// Events arrive at a simulated 50k/s from 256 sources, so that rate
	// limits and windows see a realistic timeline however fast the engine
	// runs; the throughput figure is the real wall time of the loop.
	const arrivalsPerSec = 50000
	clk := &engine.ManualClock{}
	e, err := engine.New(engine.Config{Rules: rules, Clock: clk})
	if err != nil {
		return err
	}
	wk := e.NewWorker()
	srcs := make([]netip.Addr, 256)
	for i := range srcs {
		srcs[i] = netip.AddrFrom4([4]byte{198, 18, 1, byte(i)})
	}
	start := time.Now()
	for i, f := range frames {
		clk.Advance(time.Second / arrivalsPerSec)
		wk.Process(f, srcs[i&255])
	}
	elapsed := time.Since(start)
	wk.Flush()
	s := e.Stats()
	fmt.Fprintf(w, "  decided %d events and rejected %d malformed ones in %v: %.2f M events/s on one core\n",
		s.Events, s.DecodeErrorTotal(), elapsed.Round(time.Millisecond), float64(events)/elapsed.Seconds()/1e6)
	fmt.Fprintf(w, "  verdicts: %s\n", verdicts(&s))
	fmt.Fprintf(w, "  decode errors: %s (generated: %s)\n", decodeErrors(&s), generatedBad(kinds))
	printRules(w, &s)
	if s.Events+s.DecodeErrorTotal() != uint64(events) {
		return fmt.Errorf("accounting broken: %d decided + %d rejected != %d generated", s.Events, s.DecodeErrorTotal(), events)
	}
	fmt.Fprintf(w, "  accounting: %d generated = %d decided + %d rejected  ✓\n", events, s.Events, s.DecodeErrorTotal())
	return nil
}

func describe(r engine.RuleSpec) string {
	var b strings.Builder
	switch {
	case r.RateLimit != nil:
		fmt.Fprintf(&b, "rate_limit %s per %s", r.RateLimit.Rate, r.RateLimit.Key)
		if r.RateLimit.Burst > 0 {
			fmt.Fprintf(&b, " (burst %g)", r.RateLimit.Burst)
		}
	case r.Window != nil:
		fmt.Fprintf(&b, "window %v/%v %s per %s when %s", r.Window.Size, r.Window.Slide, r.Window.Agg, r.Window.Key, r.When)
	default:
		fmt.Fprintf(&b, "when %s", r.When)
	}
	fmt.Fprintf(&b, " → %s", r.Action)
	return b.String()
}

func verdicts(s *engine.Stats) string {
	var parts []string
	for a := engine.Action(0); a < engine.NumActions; a++ {
		parts = append(parts, fmt.Sprintf("%s %d", a, s.Verdicts[a]))
	}
	return strings.Join(parts, ", ")
}

func decodeErrors(s *engine.Stats) string {
	var parts []string
	for e := engine.DecodeError(1); e < engine.NumDecodeErrors; e++ {
		if n := s.DecodeErrors[e]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", e, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func generatedBad(kinds map[gen.Kind]int) string {
	var parts []string
	for k := gen.Kind(1); k < gen.NumKinds; k++ {
		if kinds[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, kinds[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func printRules(w io.Writer, s *engine.Stats) {
	fmt.Fprintln(w, "  rules fired:")
	for _, r := range s.Rules {
		extra := ""
		if r.Limiter != nil {
			extra = fmt.Sprintf("  (keys %d, limited %d, evictions %d)", r.Limiter.Keys, r.Limiter.Limited, r.Limiter.Evictions)
		}
		if r.Window != nil {
			extra = fmt.Sprintf("  (keys %d, evictions %d, %d KiB)", r.Window.Keys, r.Window.Evictions, r.Window.Bytes>>10)
		}
		fmt.Fprintf(w, "    %-14s %-6s %8d%s\n", r.Name, r.Action, r.Fired, extra)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
