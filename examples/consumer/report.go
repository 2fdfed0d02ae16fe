package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/xgate/xgate/examples/consumer/window"
)

// Report is what a Consumer counted since it started.
type Report struct {
	Records  uint64            // records read
	Outcomes map[string]uint64 // windowed candidates by window.Outcome: accepted, late, duplicate, stale
	// Skipped: records that did not enter the window, by reason: no_rx_ns,
	// no_ts, invalid_json, verdict (not a counted verdict), type (another
	// event type), no_key, no_amount, bad_amount (not exact in Decimals).
	Skipped        map[string]uint64
	KeyMismatch    uint64 // record key ≠ the key field: the topic is not keyed by it
	ForeignCommits uint64 // commits without a window checkpoint: started without history
	ReplayGaps     uint64 // a replay's first record was after its checkpoint (retention)
	Commits        uint64
	CommitErrors   uint64

	Results   uint64            // final exact windows (one per accepted record)
	Alerts    uint64            // of which over the threshold
	AlertKeys map[string]uint64 // exact alerts by key
	// GatewayAlertKeys: results whose event the gateway alerted on with
	// the compared rule, by key.
	GatewayAlertKeys map[string]uint64
	Compare          Compare

	Keys    int // live keys in the windows
	Pending int // accepted records whose result waits for the watermark
}

// Compare sets the gateway's verdict on each event beside the exact window
// of the same event. The gateway alerts on an event when its own window,
// updated with that event, is over the threshold; the exact window is over
// (t − size, t] of every event of the key, whichever gateway received it.
type Compare struct {
	BothAlert uint64 // gateway alert (the rule), exact alert
	Neither   uint64 // no gateway alert, no exact alert
	// ExactOnly: exact alert, the gateway did not alert. Expected: the
	// gateway's window covers only the last size−slide .. size (its ring
	// drops a whole slide at a time), only the events its own host
	// received, and only those decided before the event, while the exact
	// window also holds events with the same receive time (one batch
	// shares its rx_ns) — so the gateway's sum can only be lower.
	ExactOnly uint64
	// GatewayOnly: the gateway alerted, the exact window is not over the
	// threshold. Not expected on one host, unless the gateway's window
	// counted events that are not in the topic (dropped by a later rule,
	// or by the sink when its buffer was full) or the two disagree on time
	// (the gateway's monotonic clock against rx_ns, or --time ts).
	GatewayOnly uint64
	// Masked: the gateway alerted by another rule that came first; the
	// record names one rule, so whether this one fired is unknown.
	Masked           uint64
	MaskedExactAlert uint64 // of which the exact window alerted
	// GatewayAlertIgnored: the gateway alerted (the rule) on an event the
	// exact window rejected as late or as a duplicate.
	GatewayAlertIgnored uint64
}

func newReport() Report {
	return Report{Outcomes: map[string]uint64{}, Skipped: map[string]uint64{},
		AlertKeys: map[string]uint64{}, GatewayAlertKeys: map[string]uint64{}}
}

func (r *Report) add(res window.Result) {
	r.Results++
	if res.Alert {
		r.Alerts++
		r.AlertKeys[res.Key]++
	}
	switch res.Tag {
	case markAlert:
		r.GatewayAlertKeys[res.Key]++
		if res.Alert {
			r.Compare.BothAlert++
		} else {
			r.Compare.GatewayOnly++
		}
	case markMasked:
		r.Compare.Masked++
		if res.Alert {
			r.Compare.MaskedExactAlert++
		}
	default:
		if res.Alert {
			r.Compare.ExactOnly++
		} else {
			r.Compare.Neither++
		}
	}
}

func (r *Report) clone() Report {
	c := *r
	c.Outcomes = maps.Clone(r.Outcomes)
	c.Skipped = maps.Clone(r.Skipped)
	c.AlertKeys = maps.Clone(r.AlertKeys)
	c.GatewayAlertKeys = maps.Clone(r.GatewayAlertKeys)
	return c
}

// Agreement is the share of compared events (masked ones left out) where
// the gateway and the exact window agree; 1 with nothing compared.
func (r Report) Agreement() float64 {
	c := r.Compare
	n := c.BothAlert + c.Neither + c.ExactOnly + c.GatewayOnly
	if n == 0 {
		return 1
	}
	return float64(c.BothAlert+c.Neither) / float64(n)
}

// String renders the report for people.
func (r Report) String() string {
	var b strings.Builder
	kv := func(m map[string]uint64) string {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
		if len(parts) == 0 {
			return "none"
		}
		return strings.Join(parts, ", ")
	}
	fmt.Fprintf(&b, "records %d; windowed: %s; not windowed: %s\n", r.Records, kv(r.Outcomes), kv(r.Skipped))
	fmt.Fprintf(&b, "exact windows %d (pending %d, live keys %d); alerts %d on %d keys\n",
		r.Results, r.Pending, r.Keys, r.Alerts, len(r.AlertKeys))
	c := r.Compare
	fmt.Fprintf(&b, "gateway vs exact, per event: agreement %.2f%%\n", 100*r.Agreement())
	fmt.Fprintf(&b, "  both alert    %d\n  neither       %d\n", c.BothAlert, c.Neither)
	fmt.Fprintf(&b, "  exact only    %d   (expected: the gateway's ring window is up to one slide short, sees one host's share, not its batch's later events)\n", c.ExactOnly)
	fmt.Fprintf(&b, "  gateway only  %d   (unexpected on one host: events missing from the topic, or clocks)\n", c.GatewayOnly)
	fmt.Fprintf(&b, "  masked        %d   (another rule's alert named on the record; exact alert on %d)\n", c.Masked, c.MaskedExactAlert)
	if c.GatewayAlertIgnored > 0 {
		fmt.Fprintf(&b, "  gateway alerts on events the exact window rejected (late or duplicate): %d\n", c.GatewayAlertIgnored)
	}
	var gwOnlyKeys []string
	for k := range r.GatewayAlertKeys {
		if r.AlertKeys[k] == 0 {
			gwOnlyKeys = append(gwOnlyKeys, k)
		}
	}
	slices.Sort(gwOnlyKeys)
	fmt.Fprintf(&b, "keys: %d with exact alerts, %d with gateway alerts, %d with gateway alerts and no exact one %v\n",
		len(r.AlertKeys), len(r.GatewayAlertKeys), len(gwOnlyKeys), gwOnlyKeys)
	if r.KeyMismatch+r.ForeignCommits+r.ReplayGaps+r.CommitErrors > 0 {
		fmt.Fprintf(&b, "warnings: record key ≠ key field %d (not partition-affine), commits without checkpoint %d, replay gaps %d, commit errors %d\n",
			r.KeyMismatch, r.ForeignCommits, r.ReplayGaps, r.CommitErrors)
	}
	return b.String()
}
