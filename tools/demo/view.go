package demo

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/metrics"
)

// view is the demo's live view. On a terminal (Options.Live) it redraws a
// block of lines in place every second; otherwise it writes one line per
// second, and the timeline's notes as lines of their own when they happen.
// It is used from one goroutine, except post, which the senders call.
type view struct {
	w        io.Writer
	live     bool
	width    int
	title    string // "test hosts · receive path afxdp"
	duration time.Duration
	kernel   bool // XDP in front
	alerts   *alertTail
	alertsAt string // the alerts file, for the view

	prev      sample
	drawn     int // lines of the last live frame
	notes     []note
	lastBlock [2]uint64 // Feedback.Applied, Feedback.Unenforced at the last update
	blockRule string    // the rules with action block, for the notes

	done bool // the traffic has ended: rates are averages over the run

	mu      sync.Mutex
	pending []note // posted by the senders, taken by update
}

type sample struct {
	at     time.Duration
	sent   Traffic
	st     metrics.Stats
	alerts uint64 // records in the alerts file; set by update
}

type note struct {
	at   time.Duration
	text string
}

const alertRows = 5

func newView(o *Options, title string, kernel bool, cfg *config.Config, alertsPath string) *view {
	v := &view{w: o.Out, live: o.Live, width: o.Width, title: title, duration: o.Duration, kernel: kernel, alertsAt: alertsPath}
	v.alerts = newAlertTail(alertsPath, alertRows, cfg.Schema.Key, cfg.Schema.Amount, windowRules(cfg))
	var blocks []string
	for _, r := range cfg.EngineConfig().Rules {
		if strings.HasPrefix(r.Action, "block") {
			blocks = append(blocks, r.Name+" ("+r.Action+")")
		}
	}
	v.blockRule = strings.Join(blocks, ", ")
	return v
}

// addNote puts an event on the timeline; without a terminal it is printed
// at once.
func (v *view) addNote(at time.Duration, format string, args ...any) {
	n := note{at: at, text: fmt.Sprintf(format, args...)}
	v.notes = append(v.notes, n)
	if !v.live {
		fmt.Fprintf(v.w, "%6.1fs  %s\n", at.Seconds(), n.text)
	}
}

// finish draws the view a last time with the final counters, its rates
// averaged over the whole run.
func (v *view) finish(cur sample) error {
	v.done = true
	v.prev = sample{}
	return v.update(cur)
}

// post queues a note from another goroutine (a sender); the next update
// puts it on the timeline.
func (v *view) post(at time.Duration, text string) {
	v.mu.Lock()
	v.pending = append(v.pending, note{at: at, text: text})
	v.mu.Unlock()
}

// update reads the alerts file, derives the notes from the counters and
// draws the view.
func (v *view) update(cur sample) error {
	v.mu.Lock()
	pending := v.pending
	v.pending = nil
	v.mu.Unlock()
	for _, n := range pending {
		v.addNote(n.at, "%s", n.text)
	}
	err := v.alerts.poll()
	cur.alerts = v.alerts.lines
	f := cur.st.Feedback
	if f.Applied > v.lastBlock[0] {
		v.addNote(cur.at, "%s fired: %s put in the XDP blocklist",
			v.blockRule, plural(f.Applied-v.lastBlock[0], "source", "sources"))
	}
	if f.Unenforced > 0 && v.lastBlock[1] == 0 {
		v.addNote(cur.at, "%s fired: events dropped (no XDP here to block the source)", v.blockRule)
	}
	v.lastBlock = [2]uint64{f.Applied, f.Unenforced}
	if v.live {
		v.draw(cur)
	} else {
		fmt.Fprintln(v.w, v.line(cur))
	}
	v.prev = cur
	return err
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return num(n) + " " + many
}

// rate is the per-second rate of a counter between the previous sample
// and cur.
func (v *view) rate(cur sample, now, before uint64) float64 {
	dt := (cur.at - v.prev.at).Seconds()
	if dt <= 0 || now < before {
		return 0
	}
	return float64(now-before) / dt
}

// line is the one-line view for a non-terminal.
func (v *view) line(cur sample) string {
	st, p := &cur.st, &v.prev.st
	var b strings.Builder
	when := fmt.Sprintf("%6.1fs", cur.at.Seconds())
	if v.done {
		when = "   done"
	}
	fmt.Fprintf(&b, "%s  sent %d (%s)", when, cur.sent.Total(), perSec(v.rate(cur, cur.sent.Total(), v.prev.sent.Total())))
	if v.kernel {
		fmt.Fprintf(&b, "  xdp_drops %d", st.XDPDrops)
		if r := xdpReasons(&st.XDP, bpf.FateDropped, false); r != "" {
			fmt.Fprintf(&b, " [%s]", r)
		}
	}
	fmt.Fprintf(&b, "  decided %d (%s) [%s]  decode_errors %d  alerts %d",
		st.Engine.Events, perSec(v.rate(cur, st.Engine.Events, p.Engine.Events)), verdicts(&st.Engine, false),
		st.Engine.DecodeErrorTotal(), v.alerts.lines)
	if n := len(v.alerts.last); n > 0 {
		a := v.alerts.last[n-1]
		fmt.Fprintf(&b, " (last: %s %s %s)", a.Rule, a.Key, a.What)
	}
	return b.String()
}

// draw redraws the live view in place.
func (v *view) draw(cur sample) {
	lines := v.frame(cur)
	var b strings.Builder
	if v.drawn > 0 {
		fmt.Fprintf(&b, "\033[%dA\033[J", v.drawn) // up to the frame's first line, clear below
	}
	for _, l := range lines {
		b.WriteString(clip(l, v.width-1))
		b.WriteByte('\n')
	}
	io.WriteString(v.w, b.String())
	v.drawn = len(lines)
}

// clip cuts s to n columns (one per rune: the view uses no wide runes).
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:max(n-1, 0)]) + "…"
}

// frame is the live view: a fixed number of lines, so redraws do not jump.
func (v *view) frame(cur sample) []string {
	st, p := &cur.st, &v.prev.st
	progress := fmt.Sprintf("%.0fs of %.0fs", min(cur.at, v.duration).Seconds(), v.duration.Seconds())
	if v.done {
		progress = fmt.Sprintf("done after %.1fs (average rates)", cur.at.Seconds())
	}
	// Counts and rates first, breakdowns after them: on a narrow terminal
	// only the breakdowns are cut.
	row := func(label string, n uint64, rate float64, detail string) string {
		return fmt.Sprintf("  %-10s %11s %9s   %s", label, num(n), perSec(rate), detail)
	}
	out := []string{
		fmt.Sprintf("xgate demo · %s · %s", v.title, progress),
		row("sent", cur.sent.Total(), v.rate(cur, cur.sent.Total(), v.prev.sent.Total()), trafficParts(cur.sent, v.kernel)),
	}
	if v.kernel {
		dropped := xdpReasons(&st.XDP, bpf.FateDropped, true)
		if dropped == "" {
			dropped = "none yet"
		}
		out = append(out,
			row("XDP seen", st.XDPSeen, v.rate(cur, st.XDPSeen, p.XDPSeen),
				fmt.Sprintf("dropped %s · not for us %s", num(st.XDPDrops), num(st.NotForUs))),
			fmt.Sprintf("  %-10s %11s %9s   %s", "", "", "", "dropped: "+dropped))
	} else {
		out = append(out, "  XDP        none: the plain path runs without BPF")
	}
	rejects := decodeErrors(&st.Engine)
	if rejects == "" {
		rejects = "none yet"
	}
	out = append(out,
		row("received", st.Datagrams, v.rate(cur, st.Datagrams, p.Datagrams),
			fmt.Sprintf("socket drops %s · ring drops %s", num(st.SocketDrops), num(st.RingDrops))),
		row("decided", st.Engine.Events, v.rate(cur, st.Engine.Events, p.Engine.Events), verdicts(&st.Engine, true)),
		row("rejected", st.Engine.DecodeErrorTotal(), v.rate(cur, st.Engine.DecodeErrorTotal(), p.Engine.DecodeErrorTotal()), rejects),
		"  rules fired  "+rulesFired(&st.Engine),
		row("alerts", cur.alerts, v.rate(cur, cur.alerts, v.prev.alerts), "newest last, from "+filepath.Base(v.alertsAt)+":"),
	)
	for i := range alertRows {
		if i < len(v.alerts.last) {
			a := v.alerts.last[i]
			out = append(out, fmt.Sprintf("    %-14s %-9s %s", a.Rule, a.Key, a.What))
		} else {
			out = append(out, "")
		}
	}
	out = append(out, "  timeline")
	const noteRows = 4
	notes := v.notes[max(0, len(v.notes)-noteRows):]
	for i := range noteRows {
		if i < len(notes) {
			out = append(out, fmt.Sprintf("    %5.1fs  %s", notes[i].at.Seconds(), notes[i].text))
		} else {
			out = append(out, "")
		}
	}
	return out
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

// trafficParts splits what was sent by kind.
func trafficParts(t Traffic, kernel bool) string {
	s := "events " + num(t.Events) + " · flood " + num(t.Flood)
	if kernel {
		s += " · not JSON " + num(t.NotJSON) + " · other port " + num(t.OtherPort)
	}
	return s
}

// xdpReasons lists the nonzero terminal reasons of one fate.
func xdpReasons(c *bpf.Counters, fate bpf.Fate, pretty bool) string {
	var parts []string
	for r := bpf.Reason(0); r < bpf.ReasonTerminal; r++ {
		if r.Fate() == fate && c[r].Packets > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", r, count(c[r].Packets, pretty)))
		}
	}
	return join(parts, pretty)
}

func verdicts(s *engine.Stats, pretty bool) string {
	var parts []string
	for a := engine.Action(0); a < engine.NumActions; a++ {
		parts = append(parts, fmt.Sprintf("%s %s", a, count(s.Verdicts[a], pretty)))
	}
	return join(parts, pretty)
}

func decodeErrors(s *engine.Stats) string {
	var parts []string
	for e := engine.DecodeError(1); e < engine.NumDecodeErrors; e++ {
		if n := s.DecodeErrors[e]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", e, num(n)))
		}
	}
	return join(parts, true)
}

func rulesFired(s *engine.Stats) string {
	if len(s.Rules) == 0 {
		return "none"
	}
	var parts []string
	for _, r := range s.Rules {
		parts = append(parts, fmt.Sprintf("%s %s", r.Name, num(r.Fired)))
	}
	return join(parts, true)
}

func count(n uint64, pretty bool) string {
	if pretty {
		return num(n)
	}
	return fmt.Sprint(n)
}

func join(parts []string, pretty bool) string {
	if pretty {
		return strings.Join(parts, " · ")
	}
	return strings.Join(parts, " ")
}
