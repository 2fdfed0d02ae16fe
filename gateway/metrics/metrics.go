// Package metrics is what the gateway counts and how Prometheus reads it:
// the Stats snapshot and its accounting identity (Accounting, the terms
// /status, /metrics and xgate stats show), and the collector that turns a
// Source into the xgate_* families at scrape time. It reads the gateway
// through Source only, so it imports nothing of the gateway's root.
package metrics

import (
	"math"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/lists"
	"github.com/xgate/xgate/xdp"
)

// Source is what the collector reads at scrape time: the gateway (through
// an adapter of its own) or a test's fake. Every method is called once per
// scrape, from the scraping goroutine, and must be safe while the gateway
// runs or stops.
type Source interface {
	// Stats reads every counter; an error fails the scrape (an invalid
	// xgate_xdp_packets_total, nothing else).
	Stats() (Stats, error)
	// Info is what xgate_info and xgate_build_info carry beside the
	// receive path and XDP mode of Stats.
	Info() Info
	// TapDropped is what the tap lost; ok is false without a tap.
	TapDropped() (n uint64, ok bool)
	// HasXDP: the XDP program is loaded, so its families are exported.
	HasXDP() bool
	// XDPCost is the program's sampled run-time histogram; ok is false
	// while its maps are closed.
	XDPCost() (c bpf.Cost, ok bool, err error)
	// CIDRHits are the packets from each CIDR list's sources, in the
	// program's order; ok is false while its maps are closed.
	CIDRHits() (hits []CIDRHit, ok bool, err error)
	// Blocklist counts the XDP blocklist's live and expired entries; ok
	// is false while its maps are closed.
	Blocklist() (live, expired int, ok bool, err error)
	// Queues are the workers' own counters, one per worker.
	Queues() []Queue
	// Lists are the enrichment lists in force.
	Lists() []lists.Stats
	// Probes are every kernel probe, in order, and whether it runs.
	Probes() []Probe
	// ProbeReadings reads the probes' maps; ok is false while they are
	// closed or without probes.
	ProbeReadings() (r ProbeReadings, ok bool)
}

// Info labels xgate_info and xgate_build_info.
type Info struct {
	Version, Revision, Interface string
}

// CIDRHit is one CIDR list of the XDP program and the packets it matched.
type CIDRHit struct {
	List    string
	Packets uint64
}

// Queue is one worker's counters, read at scrape time. ID is the worker's
// index: the RX queue on the afxdp path, the socket's index in the group
// on the socket and plain paths.
type Queue struct {
	ID, CPU     int
	Datagrams   uint64
	Busy        time.Duration
	SocketDrops uint64
	HasSocket   bool   // a UDP socket of ours (socket and plain paths)
	XSK         bool   // an AF_XDP socket (afxdp path)
	Bind        string // copy | zerocopy (afxdp)
	Ring        xdp.Stats
	RingErr     error
	RingDropped uint64 // Ring.RxDropped + Ring.RxRingFull
	BadFrames   uint64
	NoMeta      uint64 // frames without the program's receive timestamp
	// Latency is receive → verdict: bucket i counts datagrams decided
	// within 2^i µs (the last also everything slower); LatencySum is the
	// exact sum of those observations.
	Latency    []uint64
	LatencySum time.Duration
}

// Probe is one kernel probe and whether it runs.
type Probe struct {
	Name    string
	Running bool
}

// ProbeReadings are the probes' maps, read at scrape time.
type ProbeReadings struct {
	Latency   bpf.LatencyHistogram
	LatencyOK bool
	Drops     map[string]uint64
	XDP       bpf.XDPEvents
	XDPOK     bool
	Errs      []error
}

// Collector reads everything at scrape time — the Source's Stats, the
// workers' own counters, the AF_XDP sockets' statistics and the BPF maps
// (per-CPU values summed) — and turns it into const metrics, as
// ebpf_exporter does: the hot path keeps no counter for Prometheus's
// sake. Log2 histograms are made cumulative here; their last bucket also
// holds everything slower, so it only shows in the +Inf bucket.
//
// Label "queue" is the worker's index (Queue.ID).
type Collector struct {
	src Source
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns the collector of src's own metrics (without the Go
// runtime and process collectors).
func NewCollector(src Source) *Collector { return &Collector{src: src} }

// allDescs and metricNames collect every description desc makes, in order.
var (
	allDescs    []*prometheus.Desc
	metricNames []string
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc("xgate_"+name, help, labels, nil)
	allDescs = append(allDescs, d)
	metricNames = append(metricNames, "xgate_"+name)
	return d
}

// The metric descriptions; Names lists them for tests and docs.
var (
	descInfo = desc("info", "Constant 1, labelled with what the gateway runs as.",
		"version", "mode", "xdp_mode", "interface")
	descBuild = desc("build_info", "Constant 1, labelled with the build: version, VCS revision and Go version.",
		"version", "revision", "goversion")
	descRules = desc("rules", "Rules of the program in force.")

	descXDPPackets = desc("xdp_packets_total", "Packets the XDP program decided, by terminal reason (each packet counted once).", "reason")
	descXDPBytes   = desc("xdp_bytes_total", "Bytes of the packets the XDP program decided, by terminal reason.", "reason")
	descXDPEvents  = desc("xdp_events_total", "Events the XDP program counted on the way (not packet fates), by kind.", "event")
	descCost       = desc("xdp_program_cost_seconds", "Sampled run time of the XDP program per packet (one packet in xdp.cost_sample per CPU).")
	descCIDRHits   = desc("xdp_cidr_packets_total", "Packets from a source in one of the XDP program's CIDR lists (xdp.never_block, xdp.drop), by list.", "list")
	descBlocklist  = desc("xdp_blocklist_entries", "Entries in the XDP blocklist map, live or expired (ignored by the program until the LRU reuses them).", "state")

	descDatagrams   = desc("datagrams_total", "Datagrams received by a worker.", "mode", "queue")
	descWorkerBusy  = desc("worker_busy_seconds_total", "Time a worker spent on batches of datagrams (from a batch in hand to done with it; not waiting, spinning or sleeping).", "mode", "queue")
	descSocketDrops = desc("socket_drops_total", "Datagrams the kernel dropped at a socket of ours (receive buffer full).", "mode", "queue")
	descRingDrops   = desc("afxdp_ring_drops_total", "Packets lost at an AF_XDP socket's rings (rx_dropped + rx_ring_full): the accounting term.", "mode", "queue")
	// The AF_XDP socket's statistics, one metric per meaning: the kernel's
	// XDP_STATISTICS, then the ring code's own counts (xdp.Stats).
	descXSKRxDropped    = desc("afxdp_rx_dropped_total", "Packets the kernel dropped at an AF_XDP socket for want of a fill-ring frame or because they did not fit one (XDP_STATISTICS rx_dropped; part of afxdp_ring_drops_total).", "mode", "queue")
	descXSKRxRingFull   = desc("afxdp_rx_ring_full_total", "Packets the kernel dropped because the RX ring was full: the worker did not keep up (XDP_STATISTICS rx_ring_full; part of afxdp_ring_drops_total).", "mode", "queue")
	descXSKFillEmpty    = desc("afxdp_fill_ring_empty_total", "Times the kernel found the fill ring empty (XDP_STATISTICS rx_fill_ring_empty_descs).", "mode", "queue")
	descXSKInvalidDescs = desc("afxdp_invalid_descriptors_total", "Bad descriptors given to the kernel, by ring (XDP_STATISTICS rx/tx_invalid_descs; should stay 0).", "mode", "queue", "ring")
	descXSKTxRingEmpty  = desc("afxdp_tx_ring_empty_total", "Times the kernel found the TX ring empty (XDP_STATISTICS tx_ring_empty_descs).", "mode", "queue")
	descXSKReceived     = desc("afxdp_received_frames_total", "Frames the worker took from the RX ring.", "mode", "queue")
	descXSKReleased     = desc("afxdp_released_frames_total", "Frames the worker gave back to the fill ring (received minus released: held now).", "mode", "queue")
	descXSKPolls        = desc("afxdp_polls_total", "poll(2) sleeps of a worker on an empty RX ring.", "mode", "queue")
	descXSKWakeups      = desc("afxdp_wakeups_total", "recvfrom(2) kicks because the kernel asked for one (XDP_RING_NEED_WAKEUP).", "mode", "queue")
	descXSKBadReleases  = desc("afxdp_bad_releases_total", "Frames given back that the worker did not hold (ignored; should stay 0).", "mode", "queue")
	descXSKBadDescs     = desc("afxdp_bad_rx_descriptors_total", "RX descriptors outside the RX frames or at a frame the kernel did not own (skipped; should stay 0).", "mode", "queue")
	descBadFrames       = desc("afxdp_bad_frames_total", "Redirected frames that were not UDP as the worker parses it.", "mode", "queue")
	descNoMeta          = desc("afxdp_frames_without_timestamp_total", "Frames without the XDP program's receive timestamp (not in the latency histogram).", "mode", "queue")
	descLatency         = desc("receive_to_verdict_seconds", "Time from receive to verdict: on the afxdp path every frame, from the XDP program's timestamp; on the socket and plain paths one datagram in probes.sample per socket, from the kernel's receive stamp (probes.rx_timestamps). Log2 buckets; the sum is exact.", "mode", "queue")

	descFrames       = desc("engine_frames_total", "Datagrams handed to the rule engine.")
	descEvents       = desc("events_total", "Events decoded and decided, by verdict.", "verdict")
	descDecodeErrors = desc("decode_errors_total", "Objects that did not become events, by kind.", "kind")

	descRuleFired        = desc("rule_fired_total", "Times a rule matched (its action applied or, for alerts, considered).", "rule", "action")
	descRuleMissingKey   = desc("rule_missing_key_total", "Events a keyed rule applied to that had no usable key.", "rule")
	descRuleMissingValue = desc("rule_missing_value_total", "Window events without a usable aggregated field.", "rule")
	descRLKeys           = desc("rule_ratelimit_keys", "Live keys of a rule's rate limiter.", "rule")
	descRLCapacity       = desc("rule_ratelimit_capacity_keys", "Key slots of a rule's rate limiter.", "rule")
	descRLEvictions      = desc("rule_ratelimit_evictions_total", "Idle keys replaced by new ones in a rule's rate limiter.", "rule")
	descRLDecisions      = desc("rule_ratelimit_decisions_total", "Rate-limit decisions, by result (allowed includes full).", "rule", "result")
	descRLFull           = desc("rule_ratelimit_full_total", "Events whose key found no slot (table full): limited with on_full: deny (the default), let through with allow.", "rule")
	descRLBytes          = desc("rule_ratelimit_memory_bytes", "Memory held by a rule's rate-limit table.", "rule")
	descWinKeys          = desc("rule_window_keys", "Live keys of a rule's sliding window.", "rule")
	descWinCapacity      = desc("rule_window_capacity_keys", "Key slots of a rule's sliding window.", "rule")
	descWinEvictions     = desc("rule_window_evictions_total", "Expired keys replaced by new ones in a rule's window.", "rule")
	descWinFull          = desc("rule_window_full_total", "Observations whose key found no slot (table full, not stored): the rule fires with on_full: deny (the default).", "rule")
	descWinLate          = desc("rule_window_late_total", "Observations that arrived after their segment moved on (not stored).", "rule")
	descWinBytes         = desc("rule_window_memory_bytes", "Memory held by a rule's window.", "rule")
	// Aggregate outputs (the gateway's emitter.go).
	descWinEmitted      = desc("window_emitted_total", "Window aggregates a rule emitted to the sinks of what: aggregates (on_alert and every_slide).", "rule")
	descWinEmitTrunc    = desc("window_emit_truncated_total", "Live keys of an every_slide window left out of a slide's report by emit_max_keys.", "rule")
	descWinEmitWalks    = desc("window_emit_walks_total", "Slides an every_slide window reported (walks of its key table).", "rule")
	descWinKeyTruncated = desc("window_key_truncated_total", "Keys of an every_slide window whose text was cut to max_key_bytes.", "rule")

	descFBRequests = desc("feedback_block_requests_total", "Block verdicts with a source address.")
	descFBBlocks   = desc("feedback_blocks_total", "What happened to block requests, by result.", "result")
	descFBSwept    = desc("blocklist_expired_removed_total", "Expired blocks removed from the XDP blocklist and its prefilter.")

	descSinkRecords   = desc("sink_records_total", "Records written or sent by a sink (Kafka, NATS: acknowledged by the broker).", "sink")
	descSinkBytes     = desc("sink_bytes_total", "Bytes written or sent by a sink.", "sink")
	descSinkDropped   = desc("sink_dropped_records_total", "Records a sink lost, by reason (no_buffer: writer or broker behind; too_big; failed: write or send error, or for Kafka and NATS not acknowledged within delivery_timeout).", "sink", "reason")
	descSinkErrors    = desc("sink_errors_total", "Failed write, send, fsync or rotate calls of a sink.", "sink")
	descSinkRotations = desc("sink_rotations_total", "File rotations of a sink.", "sink")
	descSinkFsyncs    = desc("sink_fsyncs_total", "fsync calls of a sink.", "sink")
	descSinkReplaced  = desc("sink_replaced_fields_total", "Members an event carried under a name the gateway writes (a meta field, an added field): cut from the record, so the gateway's value is the only one.", "sink")
	descSinkUp        = desc("sink_up", "0 while a sink is known to reach no destination (NATS: no server connected; its records wait, then fail after delivery_timeout), else 1.", "sink")
	descSinkInFlight  = desc("sink_in_flight_records", "Records a Kafka or NATS sink has handed to its client and not yet seen acknowledged or failed (0 for other sinks).", "sink")
	// The disk spool of a Kafka or NATS sink (only sinks with spool:).
	descSpoolRecords   = desc("sink_spool_records", "Records in a sink's disk spool not yet replayed to the broker.", "sink")
	descSpoolBytes     = desc("sink_spool_bytes", "Bytes of a sink's disk spool files.", "sink")
	descSpoolAge       = desc("sink_spool_oldest_age_seconds", "Age of the oldest record in a sink's disk spool not yet replayed (0 when none).", "sink")
	descSpoolReplayed  = desc("sink_spool_replayed_total", "Records a sink read back from its disk spool and sent to the broker.", "sink")
	descSpoolDropped   = desc("sink_spool_dropped_total", "Records a sink's full disk spool could not take (also in sink_dropped_records_total: no_buffer, or failed for records the broker failed).", "sink")
	descSpoolRecovered = desc("sink_spool_recovered_total", "Records a sink's disk spool held at start, left by an earlier run.", "sink")

	descKernelDrops    = desc("kernel_drops_total", "Packets to our ports the kernel freed as dropped (tracepoint kfree_skb), by the kernel's drop reason.", "reason")
	descKernelLatency  = desc("kernel_queue_latency_seconds", "Socket path: time from the skb's receive timestamp to our socket (socket filter probe, one packet in probes.sample per CPU); log2 buckets.")
	descXDPRedirectErr = desc("xdp_redirect_errors_total", "Failed redirects of our XDP program (tracepoint xdp_redirect_err), by errno.", "errno")
	descXDPExceptions  = desc("xdp_exceptions_total", "Exceptions of our XDP program (tracepoint xdp_exception), by XDP action.", "action")
	descProbeUp        = desc("probe_up", "1 if the kernel probe runs, 0 if it is missing (disabled, unsupported or not permitted).", "probe")

	descAccounting  = desc("accounting_total", "The terms of the accounting identity, by datagrams: seen = xdp_dropped + not_for_us + no_socket + kernel_dropped + socket_dropped + ring_dropped + bad_frames + rejected + decided - reassembled.", "term")
	descUnaccounted = desc("accounting_unaccounted", "Seen minus the accounting terms: 0 when every frame is in exactly one term (a batch per worker may be in flight while it runs).", "identity")
	descTapDropped  = desc("tap_dropped_total", "Decided events the tap (GET /tap) lost: its sampling ring or a client's buffer was full.")
	descSeen        = desc("xdp_seen_packets_total", "Every packet the XDP program saw: the left-hand side of the accounting identity.")

	// Enrichment lists (gateway/lists).
	descListEntries  = desc("list_entries", "Entries of an enrichment list in force (networks, keys or key/value pairs).", "list", "type")
	descListReloads  = desc("list_reloads_total", "Loads of an enrichment list's file, by result (ok: swapped in; failed: the old contents stay).", "list", "result")
	descListReloadS  = desc("list_reload_seconds", "How long the last successful load of an enrichment list took (read and parse).", "list")
	descListLoadedAt = desc("list_loaded_timestamp_seconds", "Unix time of the last successful load of an enrichment list.", "list")
	descEnrichKept   = desc("enrich_present_total", "Added fields whose name the event carried itself: the added value is written, the event's member cut from the record (xgate_sink_replaced_fields_total).")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Log2Histogram turns per-bucket counts (bucket i: <= 2^i units, the last
// one also everything slower) into cumulative buckets in seconds; unit is
// one unit in seconds. The last bucket only reaches +Inf.
func Log2Histogram(counts []uint64, unit float64) (count uint64, upperSum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(counts))
	for i, n := range counts {
		bound := math.Ldexp(unit, i)
		count += n
		upperSum += float64(n) * bound
		if i < len(counts)-1 {
			buckets[bound] = count
		}
	}
	return count, upperSum, buckets
}

// RuleLabels gives every rule a distinct label value: a name used twice
// gets "#2", "#3"…, an empty one "rule_<index>".
func RuleLabels(rules []engine.RuleStats) []string {
	out := make([]string, len(rules))
	seen := make(map[string]int, len(rules))
	for i, r := range rules {
		n := r.Name
		if n == "" {
			n = "rule_" + strconv.Itoa(i)
		}
		seen[n]++
		if k := seen[n]; k > 1 {
			n += "#" + strconv.Itoa(k)
		}
		out[i] = n
	}
	return out
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	src := c.src
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	s, err := src.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descXDPPackets, err)
		return
	}
	info := src.Info()
	mode := s.Path.String()
	gauge(descInfo, 1, info.Version, mode, s.XDPMode.String(), info.Interface)
	gauge(descBuild, 1, info.Version, info.Revision, runtime.Version())
	gauge(descRules, float64(len(s.Engine.Rules)))
	if n, ok := src.TapDropped(); ok {
		counter(descTapDropped, n)
	}

	if src.HasXDP() {
		for r := bpf.Reason(0); r < bpf.ReasonMax; r++ {
			if r.Terminal() {
				counter(descXDPPackets, s.XDP[r].Packets, r.String())
				counter(descXDPBytes, s.XDP[r].Bytes, r.String())
			} else {
				counter(descXDPEvents, s.XDP[r].Packets, r.String())
			}
		}
		if cost, ok, err := src.XDPCost(); err != nil {
			ch <- prometheus.NewInvalidMetric(descCost, err)
		} else if ok {
			n, _, b := Log2Histogram(cost.Hist[:], 1e-9)
			ch <- prometheus.MustNewConstHistogram(descCost, n, float64(cost.SumNs)/1e9, b)
		}
		if hits, ok, err := src.CIDRHits(); err != nil {
			ch <- prometheus.NewInvalidMetric(descCIDRHits, err)
		} else if ok {
			for _, h := range hits {
				counter(descCIDRHits, h.Packets, h.List)
			}
		}
		if live, expired, ok, err := src.Blocklist(); err != nil {
			ch <- prometheus.NewInvalidMetric(descBlocklist, err)
		} else if ok {
			gauge(descBlocklist, float64(live), "live")
			gauge(descBlocklist, float64(expired), "expired")
		}
	}

	for _, q := range src.Queues() {
		id := strconv.Itoa(q.ID)
		counter(descDatagrams, q.Datagrams, mode, id)
		ch <- prometheus.MustNewConstMetric(descWorkerBusy, prometheus.CounterValue, q.Busy.Seconds(), mode, id)
		if q.HasSocket {
			counter(descSocketDrops, q.SocketDrops, mode, id)
		}
		if q.XSK || q.HasSocket {
			n, _, b := Log2Histogram(q.Latency, 1e-6)
			ch <- prometheus.MustNewConstHistogram(descLatency, n, q.LatencySum.Seconds(), b, mode, id)
		}
		if !q.XSK {
			continue
		}
		if q.RingErr != nil {
			ch <- prometheus.NewInvalidMetric(descRingDrops, q.RingErr)
		} else {
			counter(descRingDrops, q.RingDropped, mode, id)
			r := &q.Ring
			counter(descXSKRxDropped, r.RxDropped, mode, id)
			counter(descXSKRxRingFull, r.RxRingFull, mode, id)
			counter(descXSKFillEmpty, r.RxFillRingEmptyDescs, mode, id)
			counter(descXSKInvalidDescs, r.RxInvalidDescs, mode, id, "rx")
			counter(descXSKInvalidDescs, r.TxInvalidDescs, mode, id, "tx")
			counter(descXSKTxRingEmpty, r.TxRingEmptyDescs, mode, id)
			counter(descXSKReceived, r.Received, mode, id)
			counter(descXSKReleased, r.Released, mode, id)
			counter(descXSKPolls, r.Polls, mode, id)
			counter(descXSKWakeups, r.Wakeups, mode, id)
			counter(descXSKBadReleases, r.BadReleases, mode, id)
			counter(descXSKBadDescs, r.BadDescs, mode, id)
		}
		counter(descBadFrames, q.BadFrames, mode, id)
		counter(descNoMeta, q.NoMeta, mode, id)
	}

	e := &s.Engine
	counter(descFrames, e.Frames)
	for a := engine.Action(0); a < engine.NumActions; a++ {
		counter(descEvents, e.Verdicts[a], a.String())
	}
	for k := engine.DecodeError(1); k < engine.NumDecodeErrors; k++ {
		counter(descDecodeErrors, e.DecodeErrors[k], k.String())
	}
	for i, name := range RuleLabels(e.Rules) {
		r := &e.Rules[i]
		counter(descRuleFired, r.Fired, name, r.Action.String())
		if l := r.Limiter; l != nil {
			counter(descRuleMissingKey, r.MissingKey, name)
			gauge(descRLKeys, float64(l.Keys), name)
			gauge(descRLCapacity, float64(l.Capacity), name)
			counter(descRLEvictions, l.Evictions, name)
			counter(descRLDecisions, l.Allowed, name, "allowed")
			counter(descRLDecisions, l.Limited, name, "limited")
			counter(descRLFull, l.Full, name)
			gauge(descRLBytes, float64(l.Bytes), name)
		}
		if w := r.Window; w != nil {
			counter(descRuleMissingKey, r.MissingKey, name)
			counter(descRuleMissingValue, r.MissingValue, name)
			gauge(descWinKeys, float64(w.Keys), name)
			gauge(descWinCapacity, float64(w.Capacity), name)
			counter(descWinEvictions, w.Evictions, name)
			counter(descWinFull, w.Full, name)
			counter(descWinLate, w.Late, name)
			gauge(descWinBytes, float64(w.Bytes), name)
			var m engine.EmitStats // zero for a window without emit
			if r.Emit != nil {
				m = *r.Emit
			}
			counter(descWinEmitted, m.Emitted, name)
			counter(descWinEmitTrunc, m.Truncated, name)
			counter(descWinEmitWalks, m.Walks, name)
			counter(descWinKeyTruncated, w.KeyTruncated, name)
		}
	}

	f := &s.Feedback
	counter(descFBRequests, f.Requested)
	counter(descFBBlocks, f.Applied, "applied")
	counter(descFBBlocks, f.Deduped, "deduped")
	counter(descFBBlocks, f.RingFull, "ring_full")
	counter(descFBBlocks, f.OverLimit, "over_limit")
	counter(descFBBlocks, f.Failed, "failed")
	counter(descFBBlocks, f.Unenforced, "unenforced")
	counter(descFBBlocks, f.Refused, "refused_never_block")
	counter(descFBSwept, f.Swept)

	for i, sk := range s.Sinks {
		name := sk.Name
		for j := 0; j < i; j++ { // two sinks of the same name stay apart
			if s.Sinks[j].Name == sk.Name {
				name = sk.Name + "#" + strconv.Itoa(i)
				break
			}
		}
		counter(descSinkRecords, sk.Records, name)
		counter(descSinkBytes, sk.Bytes, name)
		counter(descSinkDropped, sk.Dropped, name, "no_buffer")
		counter(descSinkDropped, sk.TooBig, name, "too_big")
		counter(descSinkDropped, sk.Failed, name, "failed")
		counter(descSinkErrors, sk.Errors, name)
		counter(descSinkRotations, sk.Rotations, name)
		counter(descSinkFsyncs, sk.Fsyncs, name)
		gauge(descSinkInFlight, float64(sk.InFlight), name)
		up := 1.0
		if sk.Down {
			up = 0
		}
		gauge(descSinkUp, up, name)
		counter(descSinkReplaced, sk.Replaced, name)
		if sk.Spool {
			gauge(descSpoolRecords, float64(sk.Spooled), name)
			gauge(descSpoolBytes, float64(sk.SpoolBytes), name)
			age := 0.0
			if !sk.SpoolOldest.IsZero() {
				age = max(0, time.Since(sk.SpoolOldest).Seconds())
			}
			gauge(descSpoolAge, age, name)
			counter(descSpoolReplayed, sk.SpoolReplayed, name)
			counter(descSpoolDropped, sk.SpoolDropped, name)
			counter(descSpoolRecovered, sk.SpoolRecovered, name)
		}
	}

	for _, l := range src.Lists() {
		gauge(descListEntries, float64(l.Entries), l.Name, l.Type)
		counter(descListReloads, l.Reloads, l.Name, "ok")
		counter(descListReloads, l.ReloadsFailed, l.Name, "failed")
		gauge(descListReloadS, l.LoadTime.Seconds(), l.Name)
		gauge(descListLoadedAt, float64(l.LoadedAt.UnixNano())/1e9, l.Name)
	}
	counter(descEnrichKept, e.EnrichPresent)

	c.collectProbes(ch)

	counter(descSeen, s.XDPSeen)
	for _, t := range AccountingOf(&s).Terms() {
		counter(descAccounting, t.V, t.Name)
	}
	gauge(descUnaccounted, float64(s.Unaccounted()), s.Identity.String())
}

// Names lists the names of the collector's metric families (a histogram
// by its base name), as documented and as tests check them.
func Names() []string { return slices.Clone(metricNames) }

// collectProbes exports the kernel probes' maps and which probes run.
func (c *Collector) collectProbes(ch chan<- prometheus.Metric) {
	for _, p := range c.src.Probes() {
		v := 0.0
		if p.Running {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descProbeUp, prometheus.GaugeValue, v, p.Name)
	}
	r, ok := c.src.ProbeReadings()
	if !ok {
		return
	}
	for _, err := range r.Errs {
		ch <- prometheus.NewInvalidMetric(descProbeUp, err)
	}
	if r.LatencyOK {
		h := r.Latency
		ch <- prometheus.MustNewConstHistogram(descKernelLatency, h.Count, h.Sum.Seconds(), h.Cumulative())
	}
	for reason, n := range r.Drops {
		ch <- prometheus.MustNewConstMetric(descKernelDrops, prometheus.CounterValue, float64(n), reason)
	}
	if r.XDPOK {
		for errno, n := range r.XDP.RedirectErr {
			ch <- prometheus.MustNewConstMetric(descXDPRedirectErr, prometheus.CounterValue, float64(n), errno)
		}
		for action, n := range r.XDP.Exception {
			ch <- prometheus.MustNewConstMetric(descXDPExceptions, prometheus.CounterValue, float64(n), action)
		}
	}
}
