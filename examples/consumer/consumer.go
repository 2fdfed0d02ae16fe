package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xgate/xgate/examples/consumer/window"
)

// Config configures a Consumer. main fills it from flags; tests directly.
type Config struct {
	Brokers []string
	Topic   string
	Group   string

	Window   time.Duration
	Lateness time.Duration
	Dedup    time.Duration // the ID dedup horizon, 0..Window
	// Threshold is a decimal number; an exact window alerts when its sum is
	// greater (as the gateway's `when: value > …`).
	Threshold string
	Decimals  int // fixed-point decimals of amounts and sums

	// Time: "rx" (the gateway's receive time, header rx_ns) or "ts" (the
	// event's own TSField, milliseconds since the Unix epoch).
	Time    string
	TSField string

	KeyField    string
	AmountField string
	IDField     string   // "" = no deduplication
	TypeField   string   // with Types: which events enter the window
	Types       []string // empty = every type
	Verdicts    []string // gateway verdicts that enter the window (default pass, alert)
	Rule        string   // the gateway's window rule to compare with

	CommitEvery time.Duration // default 1s
	// ExitIdle, when > 0, ends Run once no record has come for that long
	// (a bounded run: check a topic, print the report, exit).
	ExitIdle time.Duration
	// Flush, with ExitIdle: before exiting, emit the results still waiting
	// for the watermark, as if the topic ended there.
	Flush bool
	Block int64 // checkpoint granularity in offsets (0: window.DefaultBlock)

	Alerts   io.Writer // one JSON line per exact alert; nil = none
	Log      *slog.Logger
	OnResult func(partition int32, r window.Result) // every result (tests)
	KgoOpts  []kgo.Opt                              // more client options (TLS, SASL, …)
}

// Gateway verdict marks carried through the window as Result.Tag.
const (
	markNone   uint8 = iota // the gateway did not alert with Rule
	markAlert               // verdict alert by Rule
	markMasked              // verdict alert by another rule: whether Rule fired too is unknown
)

// Consumer reads the gateway's events topic in a consumer group and keeps
// exact per-key windows per assigned partition.
//
// Concurrency: the poll loop and franz-go's group callbacks share parts,
// cks and the report under mu. With BlockRebalanceOnPoll the assign,
// revoke and lose callbacks never run between a poll and AllowRebalance,
// so a partition cannot change owner while its records are processed or
// its checkpoint committed.
type Consumer struct {
	cfg       Config
	wcfg      window.Config
	threshold int64
	types     map[string]bool
	verdicts  map[string]bool
	log       *slog.Logger

	cl *kgo.Client

	mu         sync.Mutex
	assignedAt time.Time // the last offset fetch of an assignment (ExitIdle counts from it too)
	parts      map[int32]*part
	cks        map[int32]*window.Checkpoint // fetched commits of assigned partitions not yet started
	rep        Report
}

type part struct {
	w         *window.Partition
	committed window.Checkpoint
	hasCommit bool
}

// NewConsumer checks cfg and connects a client (nothing is fetched before Run).
func NewConsumer(cfg Config) (*Consumer, error) {
	if len(cfg.Brokers) == 0 || cfg.Topic == "" || cfg.Group == "" {
		return nil, errors.New("consumer: brokers, topic and group are required")
	}
	if cfg.Time != "rx" && cfg.Time != "ts" {
		return nil, fmt.Errorf("consumer: time %q: want rx (the gateway's receive time) or ts (the event's own)", cfg.Time)
	}
	if cfg.KeyField == "" || cfg.AmountField == "" || (cfg.Time == "ts" && cfg.TSField == "") {
		return nil, errors.New("consumer: the key and amount fields (and the ts field with --time ts) are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.CommitEvery <= 0 {
		cfg.CommitEvery = time.Second
	}
	if len(cfg.Verdicts) == 0 {
		cfg.Verdicts = []string{"pass", "alert"}
	}
	thr, err := window.ParseDecimal(cfg.Threshold, cfg.Decimals)
	if err != nil {
		return nil, fmt.Errorf("consumer: threshold: %w", err)
	}
	c := &Consumer{
		cfg:       cfg,
		wcfg:      window.Config{Window: cfg.Window, Lateness: cfg.Lateness, Dedup: cfg.Dedup, Threshold: thr, Block: cfg.Block},
		threshold: thr,
		types:     set(cfg.Types),
		verdicts:  set(cfg.Verdicts),
		log:       cfg.Log,
		parts:     map[int32]*part{},
		cks:       map[int32]*window.Checkpoint{},
		rep:       newReport(),
	}
	if _, err := window.NewPartition(c.wcfg, nil, nil); err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnOffsetsFetched(c.onFetched),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
	}
	c.cl, err = kgo.NewClient(append(opts, cfg.KgoOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("consumer: kafka client: %w", err)
	}
	return c, nil
}

func set(xs []string) map[string]bool {
	if len(xs) == 0 {
		return nil
	}
	m := map[string]bool{}
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// Run consumes until ctx ends (or, with ExitIdle, the topic is idle),
// commits, leaves the group and returns the report.
func (c *Consumer) Run(ctx context.Context) (Report, error) {
	defer c.cl.CloseAllowingRebalance()
	if err := c.checkTopic(ctx); err != nil {
		return c.Report(), err
	}
	lastCommit := time.Now()
	lastRecord := time.Now()
	for {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if c.cfg.ExitIdle > 0 {
			pctx, cancel = context.WithTimeout(ctx, c.cfg.ExitIdle)
		}
		fs := c.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil || fs.IsClientClosed() {
			break
		}
		var fatal error
		fs.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			c.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
			if errors.Is(err, kerr.GroupAuthorizationFailed) || errors.Is(err, kerr.TopicAuthorizationFailed) {
				fatal = fmt.Errorf("consumer: topic %s partition %d: %w", topic, p, err)
			}
		})
		if fatal != nil {
			c.cl.AllowRebalance()
			return c.Report(), fatal
		}
		n := 0
		c.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			c.handle(r)
			n++
		})
		if time.Since(lastCommit) >= c.cfg.CommitEvery {
			c.commitLocked(ctx, nil)
			lastCommit = time.Now()
		}
		c.mu.Unlock()
		c.cl.AllowRebalance()
		c.mu.Lock()
		since := lastRecord
		if c.assignedAt.After(since) {
			since = c.assignedAt
		}
		c.mu.Unlock()
		if n > 0 {
			lastRecord = time.Now()
		} else if c.cfg.ExitIdle > 0 && time.Since(since) >= c.cfg.ExitIdle {
			break
		}
	}
	// Commit what was processed (also when ctx ended: a fresh context,
	// bounded), then the flush of a bounded run.
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.mu.Lock()
	c.commitLocked(cctx, nil)
	if c.cfg.Flush {
		for _, p := range c.parts {
			p.w.Flush()
		}
	}
	c.mu.Unlock()
	return c.Report(), nil
}

// handle decodes one record and feeds it to its partition's window. mu held.
func (c *Consumer) handle(r *kgo.Record) {
	p := c.parts[r.Partition]
	if p == nil {
		var err error
		p = &part{}
		ck := c.cks[r.Partition]
		delete(c.cks, r.Partition)
		if ck != nil && r.Offset > ck.Offset {
			// The log no longer holds the start of the replay (retention):
			// the windows of the first records may miss older events.
			c.rep.ReplayGaps++
			c.log.Warn("replay starts after the checkpoint", "partition", r.Partition, "checkpoint", ck.Offset, "first", r.Offset)
		}
		partition := r.Partition
		p.w, err = window.NewPartition(c.wcfg, ck, func(res window.Result) { c.result(partition, res) })
		if err != nil { // cannot happen: NewConsumer checked the config
			c.log.Error("window", "partition", r.Partition, "err", err)
			c.rep.Skipped["internal_error"]++
			return
		}
		if ck != nil {
			p.committed, p.hasCommit = *ck, true
		}
		c.parts[r.Partition] = p
	}
	c.rep.Records++
	wr, mark, ok := c.decode(r)
	out := p.w.Add(wr)
	if ok {
		c.rep.Outcomes[out.String()]++
	}
	if mark == markAlert && (out == window.Late || out == window.Duplicate) {
		c.rep.Compare.GatewayAlertIgnored++ // the gateway's window had it, the exact one does not
	}
}

// decode turns a record into the window's view. ok is false when the
// record was not a candidate (counted by reason in the report).
func (c *Consumer) decode(r *kgo.Record) (window.Record, uint8, bool) {
	wr := window.Record{Offset: r.Offset}
	var verdict, rule, rx string
	for _, h := range r.Headers {
		switch h.Key {
		case "verdict":
			verdict = string(h.Value)
		case "rule":
			rule = string(h.Value)
		case "rx_ns":
			rx = string(h.Value)
		}
	}
	mark := markNone
	if verdict == "alert" {
		mark = markMasked
		if rule == c.cfg.Rule {
			mark = markAlert
		}
	}
	wr.Tag = mark
	bad := func(reason string) (window.Record, uint8, bool) {
		c.rep.Skipped[reason]++
		return wr, mark, false
	}
	// Time first: every record with a time moves the watermark.
	if c.cfg.Time == "rx" {
		ns, err := strconv.ParseInt(rx, 10, 64)
		if err != nil {
			return bad("no_rx_ns")
		}
		wr.HasTime, wr.Time = true, ns
	} else {
		ts := gjson.GetBytes(r.Value, c.cfg.TSField)
		ms, err := strconv.ParseInt(ts.Raw, 10, 64)
		if ts.Type != gjson.Number || err != nil || ms > math.MaxInt64/1_000_000 || ms < math.MinInt64/1_000_000 {
			return bad("no_ts")
		}
		wr.HasTime, wr.Time = true, ms*1e6
	}
	if !gjson.ValidBytes(r.Value) {
		return bad("invalid_json")
	}
	if !c.verdicts[verdict] {
		return bad("verdict")
	}
	if c.types != nil && !c.types[gjson.GetBytes(r.Value, c.cfg.TypeField).String()] {
		return bad("type")
	}
	key := gjson.GetBytes(r.Value, c.cfg.KeyField)
	switch key.Type {
	case gjson.String:
		wr.Key = key.Str
	case gjson.Number:
		wr.Key = key.Raw
	default:
		return bad("no_key")
	}
	if string(r.Key) != wr.Key {
		// Records not keyed by this field are not partition-affine: a key's
		// events may be in several partitions, each with part of its window.
		c.rep.KeyMismatch++
	}
	amt := gjson.GetBytes(r.Value, c.cfg.AmountField)
	if amt.Type != gjson.Number {
		return bad("no_amount")
	}
	v, err := window.ParseDecimal(amt.Raw, c.cfg.Decimals)
	if err != nil {
		return bad("bad_amount")
	}
	wr.Amount = v
	if c.cfg.IDField != "" {
		if id := gjson.GetBytes(r.Value, c.cfg.IDField); id.Exists() {
			wr.ID = id.String()
		}
	}
	wr.Windowed = true
	return wr, mark, true
}

// result compares one final exact window with the gateway's verdict on the
// same event. mu held (results come out of Add and Flush).
func (c *Consumer) result(partition int32, r window.Result) {
	c.rep.add(r)
	if r.Alert && c.cfg.Alerts != nil {
		gw := [...]string{"none", "alert", "masked"}[r.Tag]
		line, _ := json.Marshal(alertLine{
			ID:      fmt.Sprintf("%s/%d/%d", c.cfg.Topic, partition, r.Offset),
			Key:     r.Key,
			Sum:     json.Number(window.FormatDecimal(r.Sum, c.cfg.Decimals)),
			Count:   r.Count,
			EndNs:   r.Time,
			Gateway: gw,
			Flushed: r.Flushed,
		})
		_, _ = c.cfg.Alerts.Write(append(line, '\n'))
	}
	if c.cfg.OnResult != nil {
		c.cfg.OnResult(partition, r)
	}
}

// alertLine is one exact alert as printed. ID is the event's place in the
// log: a replay after a rebalance that re-emits an alert re-emits the same
// ID, so a downstream consumer of alerts can deduplicate on it.
type alertLine struct {
	ID      string      `json:"id"`
	Key     string      `json:"key"`
	Sum     json.Number `json:"sum"`
	Count   int         `json:"count"`
	EndNs   int64       `json:"window_end_ns"`
	Gateway string      `json:"gateway"` // the gateway's verdict on the same event: alert, none, masked
	Flushed bool        `json:"flushed,omitempty"`
}

// onFetched keeps the checkpoints of newly assigned partitions: the
// committed offset (where the fetch starts) and the metadata that says how
// far results were emitted and the watermark before that offset.
func (c *Consumer) onFetched(_ context.Context, _ *kgo.Client, resp *kmsg.OffsetFetchResponse) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.assignedAt = time.Now()
	note := func(p int32, offset int64, meta *string) {
		if offset < 0 { // no commit: from the start, no history
			return
		}
		m := ""
		if meta != nil {
			m = *meta
		}
		ck, err := window.ParseCheckpoint(offset, m)
		if err != nil {
			c.rep.ForeignCommits++
			c.log.Warn("committed offset without a window checkpoint: windows start empty", "partition", p, "offset", offset, "err", err)
			return
		}
		c.cks[p] = &ck
		delete(c.parts, p)
	}
	for _, g := range resp.Groups {
		for _, t := range g.Topics {
			if t.Topic != "" && t.Topic != c.cfg.Topic {
				continue
			}
			for _, p := range t.Partitions {
				note(p.Partition, p.Offset, p.Metadata)
			}
		}
	}
	for _, t := range resp.Topics {
		if t.Topic != c.cfg.Topic {
			continue
		}
		for _, p := range t.Partitions {
			note(p.Partition, p.Offset, p.Metadata)
		}
	}
	return nil
}

// onRevoked commits the revoked partitions' checkpoints and drops their
// state: the next owner rebuilds it from the checkpoint.
func (c *Consumer) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := revoked[c.cfg.Topic]
	if len(ps) == 0 {
		return
	}
	c.commitLocked(ctx, ps)
	for _, p := range ps {
		delete(c.parts, p)
		delete(c.cks, p)
	}
}

// onLost drops state without committing: the group already moved on.
func (c *Consumer) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range lost[c.cfg.Topic] {
		delete(c.parts, p)
		delete(c.cks, p)
	}
}

// commitLocked commits the checkpoints of the given partitions (all when
// nil) that changed since their last commit: offset = where a new owner
// starts its replay, metadata = the rest of the checkpoint. mu held.
func (c *Consumer) commitLocked(ctx context.Context, only []int32) {
	offsets := map[int32]kgo.EpochOffset{}
	meta := map[int32]string{}
	cks := map[int32]window.Checkpoint{}
	for id, p := range c.parts {
		if only != nil && !slices.Contains(only, id) {
			continue
		}
		ck, ok := p.w.Checkpoint()
		if !ok || (p.hasCommit && ck == p.committed) {
			continue
		}
		offsets[id] = kgo.EpochOffset{Epoch: -1, Offset: ck.Offset}
		meta[id] = ck.Metadata()
		cks[id] = ck
	}
	if len(offsets) == 0 {
		return
	}
	// The metadata rides on franz-go's own commit request (which knows
	// the group generation, topic IDs and request versions).
	withMeta := kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			for j := range req.Topics[i].Partitions {
				rp := &req.Topics[i].Partitions[j]
				if m, ok := meta[rp.Partition]; ok {
					rp.Metadata = &m
				}
			}
		}
		return nil
	})
	var reqErr, partErr error
	c.cl.CommitOffsetsSync(withMeta, map[string]map[int32]kgo.EpochOffset{c.cfg.Topic: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				reqErr = err
				return
			}
			for _, t := range resp.Topics {
				for _, rp := range t.Partitions {
					if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
						partErr = fmt.Errorf("partition %d: %w", rp.Partition, err)
						delete(cks, rp.Partition)
					}
				}
			}
		})
	if err := cmp.Or(reqErr, partErr); err != nil {
		// Not fatal: the next commit carries a newer checkpoint; if the
		// partition moves first, its next owner replays from the last
		// commit that went through and re-emits what came after it.
		c.rep.CommitErrors++
		c.log.Warn("commit failed", "err", err)
		if reqErr != nil {
			return
		}
	}
	for id, ck := range cks {
		if p := c.parts[id]; p != nil {
			p.committed, p.hasCommit = ck, true
		}
	}
	c.rep.Commits++
}

// checkTopic fails clearly when the topic does not exist (the group would
// otherwise wait for it forever).
func (c *Consumer) checkTopic(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	t := kmsg.NewMetadataRequestTopic()
	t.Topic = kmsg.StringPtr(c.cfg.Topic)
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return fmt.Errorf("consumer: metadata of topic %s from %v: %w", c.cfg.Topic, c.cfg.Brokers, err)
	}
	if len(resp.Topics) != 1 {
		return fmt.Errorf("consumer: metadata of topic %s: %d topics in the answer", c.cfg.Topic, len(resp.Topics))
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		return fmt.Errorf("consumer: topic %s: %w", c.cfg.Topic, err)
	}
	return nil
}

// Report returns a snapshot of the counters.
func (c *Consumer) Report() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rep.clone()
	for _, p := range c.parts {
		s := p.w.Stats()
		r.Keys += s.Keys
		r.Pending += s.Pending
	}
	return r
}
