package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/gateway/metrics"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xgate/xgate/engine"
)

// Snapshot is what `xgate stats` shows: a running gateway's /status and
// the parts of /metrics an operator looks at first, read over HTTP.
type Snapshot struct {
	Time          time.Time          `json:"time"`
	Address       string             `json:"address"`
	Version       string             `json:"version"`
	Path          config.Mode        `json:"path"`
	Interface     string             `json:"interface,omitempty"`
	UptimeSeconds float64            `json:"uptime_seconds"`
	Ready         bool               `json:"ready"`
	Accounting    metrics.Accounting `json:"accounting"`
	Verdicts      map[string]uint64  `json:"verdicts"`
	// Rules by times fired, most first.
	Rules []RuleCount `json:"rules"`
	// Latency is receive → verdict on the afxdp path (all queues); nil
	// when the gateway has no such histogram.
	Latency *Quantiles `json:"latency,omitempty"`
	// KernelLatency is the socket path's kernel queueing latency (probe).
	KernelLatency *Quantiles   `json:"kernel_latency,omitempty"`
	Queues        []QueueCount `json:"queues"`
	// Probes are the kernel probes' states, from /status.
	Probes []gateway.ProbeState `json:"probes,omitempty"`
}

// RuleCount is how often a rule fired.
type RuleCount struct {
	Rule   string `json:"rule"`
	Action string `json:"action"`
	Fired  uint64 `json:"fired"`
}

// Quantiles of a histogram, in seconds, interpolated within buckets as
// Prometheus's histogram_quantile does.
type Quantiles struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_seconds"`
	P99   float64 `json:"p99_seconds"`
	P999  float64 `json:"p999_seconds"`
}

// QueueCount is one worker's load and losses.
type QueueCount struct {
	Queue       int    `json:"queue"`
	Datagrams   uint64 `json:"datagrams"`
	SocketDrops uint64 `json:"socket_drops"`
	RingDrops   uint64 `json:"ring_drops"`
}

// FetchSnapshot reads /status and /metrics of the gateway whose HTTP
// server listens on addr (host:port, or a URL prefix http://host:port),
// sending token as a bearer token when not "" (http.token).
func FetchSnapshot(ctx context.Context, client *http.Client, addr, token string) (*Snapshot, error) {
	c, base := httpClient(addr, 0)
	if client == nil {
		client = c
	}
	get := func(path string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return nil, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%w (is the gateway running with http.listen there?)", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if resp.StatusCode == http.StatusUnauthorized {
			return nil, fmt.Errorf("%s: %s: the gateway wants its bearer token: pass --token (its http.token)", path, resp.Status)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
		}
		return body, nil
	}
	body, err := get("/status")
	if err != nil {
		return nil, err
	}
	var st gateway.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("/status: %w", err)
	}
	body, err = get("/metrics")
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	s := &Snapshot{Time: time.Now(), Address: addr, Version: st.Version, Path: st.Path, Interface: st.Interface,
		UptimeSeconds: st.UptimeSeconds, Ready: st.Ready, Accounting: st.Accounting, Verdicts: st.Verdicts,
		Probes: st.Probes}
	if s.Verdicts == nil {
		s.Verdicts = map[string]uint64{}
	}
	s.fromMetrics(fams)
	return s, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func counterValue(m *dto.Metric) uint64 {
	switch {
	case m.Counter != nil:
		return uint64(m.Counter.GetValue())
	case m.Gauge != nil:
		return uint64(m.Gauge.GetValue())
	case m.Untyped != nil:
		return uint64(m.Untyped.GetValue())
	}
	return 0
}

func (s *Snapshot) fromMetrics(fams map[string]*dto.MetricFamily) {
	if f := fams["xgate_rule_fired_total"]; f != nil {
		for _, m := range f.Metric {
			s.Rules = append(s.Rules, RuleCount{Rule: label(m, "rule"), Action: label(m, "action"), Fired: counterValue(m)})
		}
	}
	sort.SliceStable(s.Rules, func(i, j int) bool {
		if s.Rules[i].Fired != s.Rules[j].Fired {
			return s.Rules[i].Fired > s.Rules[j].Fired
		}
		return s.Rules[i].Rule < s.Rules[j].Rule
	})
	if s.Rules == nil {
		s.Rules = []RuleCount{}
	}
	queues := map[int]*QueueCount{}
	q := func(m *dto.Metric) *QueueCount {
		id, _ := strconv.Atoi(label(m, "queue"))
		if queues[id] == nil {
			queues[id] = &QueueCount{Queue: id}
		}
		return queues[id]
	}
	for name, set := range map[string]func(*QueueCount, uint64){
		"xgate_datagrams_total":        func(c *QueueCount, v uint64) { c.Datagrams = v },
		"xgate_socket_drops_total":     func(c *QueueCount, v uint64) { c.SocketDrops = v },
		"xgate_afxdp_ring_drops_total": func(c *QueueCount, v uint64) { c.RingDrops = v },
	} {
		if f := fams[name]; f != nil {
			for _, m := range f.Metric {
				set(q(m), counterValue(m))
			}
		}
	}
	s.Queues = []QueueCount{}
	for _, c := range queues {
		s.Queues = append(s.Queues, *c)
	}
	sort.Slice(s.Queues, func(i, j int) bool { return s.Queues[i].Queue < s.Queues[j].Queue })
	s.Latency = histogramQuantiles(fams["xgate_receive_to_verdict_seconds"])
	s.KernelLatency = histogramQuantiles(fams["xgate_kernel_queue_latency_seconds"])
}

// histogramQuantiles merges a family's histograms (same buckets) and
// reads p50, p99 and p99.9; nil without a histogram.
func histogramQuantiles(f *dto.MetricFamily) *Quantiles {
	if f == nil {
		return nil
	}
	cum := map[float64]uint64{}
	var count uint64
	found := false
	for _, m := range f.Metric {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		found = true
		count += h.GetSampleCount()
		for _, b := range h.GetBucket() {
			cum[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
	if !found {
		return nil
	}
	bounds := make([]float64, 0, len(cum))
	for b := range cum {
		if !math.IsInf(b, 1) {
			bounds = append(bounds, b)
		}
	}
	sort.Float64s(bounds)
	return &Quantiles{Count: count, P50: quantile(0.5, bounds, cum, count),
		P99: quantile(0.99, bounds, cum, count), P999: quantile(0.999, bounds, cum, count)}
}

// quantile interpolates linearly within the bucket that holds rank
// q·count; a rank in the +Inf bucket answers the highest finite bound.
func quantile(q float64, bounds []float64, cum map[float64]uint64, count uint64) float64 {
	if count == 0 || len(bounds) == 0 {
		return 0
	}
	rank := q * float64(count)
	lower, below := 0.0, uint64(0)
	for _, b := range bounds {
		c := cum[b]
		if float64(c) >= rank {
			if c == below {
				return b
			}
			return lower + (b-lower)*(rank-float64(below))/float64(c-below)
		}
		lower, below = b, c
	}
	return bounds[len(bounds)-1]
}

// rateText returns how the live views print a counter's rate per second
// between two readings dt seconds apart: "" when there is no interval
// (dt <= 0) or the counter went backwards.
func rateText(dt float64) func(cur, old uint64) string {
	return func(cur, old uint64) string {
		if dt <= 0 || cur < old {
			return ""
		}
		return fmt.Sprintf("  %12.1f/s", float64(cur-old)/dt)
	}
}

// boldRed is s in bold red (ANSI) when on, else s.
func boldRed(s string, on bool) string {
	if on {
		return "\x1b[1;31m" + s + "\x1b[0m"
	}
	return s
}

// WriteText prints the snapshot as plain text. With prev (an earlier
// snapshot of the same gateway) it adds rates per second; with color,
// nonzero drops are shown in bold red (ANSI).
func (s *Snapshot) WriteText(w io.Writer, prev *Snapshot, color bool) error {
	var b strings.Builder
	dt := 0.0
	if prev != nil {
		dt = s.Time.Sub(prev.Time).Seconds()
	}
	rate := rateText(dt)
	hi := func(s string, drop bool) string { return boldRed(s, drop && color) }
	fmt.Fprintf(&b, "xgate %s at %s  path %s", s.Version, s.Address, s.Path)
	if s.Interface != "" {
		fmt.Fprintf(&b, " on %s", s.Interface)
	}
	fmt.Fprintf(&b, "  up %s  ready %v\n\n", time.Duration(s.UptimeSeconds*1e9).Round(time.Second).String(), s.Ready)

	a := s.Accounting
	fmt.Fprintf(&b, "accounting (%s identity, by datagrams): seen %d = accounted %d", a.Identity, a.Seen, a.Accounted)
	if a.Unaccounted != 0 {
		fmt.Fprintf(&b, " (%d in flight or unaccounted)", a.Unaccounted)
	}
	if a.Identity == config.ModeSocket && !a.KernelDropsKnown {
		b.WriteString(" [kernel drops after XDP not seen: the kfree_skb probe is off]")
	}
	fmt.Fprintf(&b, "\nbeside it: events %d, event decode errors %d, %.2f events per datagram\n",
		a.Events, a.DecodeErrors, a.EventsPerDatagram)
	var pa []metrics.Term
	if prev != nil {
		pa = prev.Accounting.Terms()
	}
	for i, t := range a.Terms() {
		r := ""
		if pa != nil {
			r = rate(t.V, pa[i].V)
		}
		drop := t.V > 0 && t.Name != "events" && t.Name != "not_for_us"
		b.WriteString(hi(fmt.Sprintf("  %-15s %14d%s", t.Name, t.V, r), drop) + "\n")
	}

	b.WriteString("\nevents by verdict:\n")
	for a := engine.Action(0); a < engine.NumActions; a++ {
		n := a.String()
		r := ""
		if prev != nil {
			r = rate(s.Verdicts[n], prev.Verdicts[n])
		}
		fmt.Fprintf(&b, "  %-15s %14d%s\n", n, s.Verdicts[n], r)
	}

	b.WriteString("\ntop rules:\n")
	if len(s.Rules) == 0 {
		b.WriteString("  (none)\n")
	}
	for i, r := range s.Rules {
		if i == 10 {
			fmt.Fprintf(&b, "  … %d more\n", len(s.Rules)-i)
			break
		}
		fmt.Fprintf(&b, "  %-24s %-10s %12d\n", r.Rule, r.Action, r.Fired)
	}

	writeQ := func(name string, q *Quantiles) {
		if q == nil {
			return
		}
		fmt.Fprintf(&b, "\n%s: %d samples  p50 %s  p99 %s  p999 %s\n", name, q.Count,
			fmtSeconds(q.P50), fmtSeconds(q.P99), fmtSeconds(q.P999))
	}
	writeQ("latency receive → verdict", s.Latency)
	writeQ("kernel queueing latency", s.KernelLatency)

	b.WriteString("\nqueues:\n")
	fmt.Fprintf(&b, "  %5s %14s %14s %14s\n", "queue", "datagrams", "socket_drops", "ring_drops")
	pq := map[int]QueueCount{}
	if prev != nil {
		for _, q := range prev.Queues {
			pq[q.Queue] = q
		}
	}
	for _, q := range s.Queues {
		line := fmt.Sprintf("  %5d %14d %14d %14d", q.Queue, q.Datagrams, q.SocketDrops, q.RingDrops)
		if prev != nil {
			line += rate(q.Datagrams, pq[q.Queue].Datagrams)
		}
		b.WriteString(hi(line, q.SocketDrops+q.RingDrops > 0) + "\n")
	}
	if len(s.Probes) > 0 {
		b.WriteString("\nprobes:\n")
		for _, p := range s.Probes {
			if p.Running {
				fmt.Fprintf(&b, "  %-18s running\n", p.Name)
			} else {
				fmt.Fprintf(&b, "  %-18s missing: %s\n", p.Name, p.Reason)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtSeconds(s float64) string {
	return time.Duration(s * 1e9).Round(10 * time.Nanosecond).String()
}

// httpClient returns a client for a gateway's HTTP address — host:port,
// http://host:port, or unix:/path (http.listen) — and the URL base its
// paths go after. timeout 0: none (the request's context decides).
func httpClient(addr string, timeout time.Duration) (*http.Client, string) {
	if path, ok := strings.CutPrefix(addr, config.UnixPrefix); ok {
		var d net.Dialer
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}}
		return &http.Client{Transport: tr, Timeout: timeout}, "http://xgate"
	}
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &http.Client{Timeout: timeout}, strings.TrimSuffix(base, "/")
}
