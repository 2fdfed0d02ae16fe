// Package window computes exact per-key sliding-window sums over one
// partition of a keyed log (a Kafka partition holding every event of its
// keys, in the order they were appended), with bounded lateness, event-ID
// deduplication and a checkpoint from which a new owner of the partition
// rebuilds the same state and goes on with the same results.
//
// # Semantics
//
// Every record has a time t (nanoseconds; which time is the caller's choice)
// and an offset. The watermark of a partition is wm = max t seen − Lateness.
// A record with t < wm is late: it is counted and ignored. Every other
// windowed record is accepted (unless it duplicates one, below) and gets one
// Result: the exact sum and count of the accepted records of its key with
// time in (t − Window, t] — all of them, including records appended after
// it with an earlier or equal time. A Result is therefore only final, and
// only emitted, once the watermark has passed t (wm > t): from then on no
// record at or before t can be accepted. Results are a function of the set
// of accepted records, not of their order in the log.
//
// Alert is Sum > Threshold.
//
// # Duplicates
//
// A windowed record with a non-empty ID is a duplicate when an earlier
// accepted record of the partition has the same ID and a time no older than
// t − Dedup (0 ≤ Dedup ≤ Window). With Dedup 0 only records of the same ID
// and at least the same time are duplicates (a producer retry re-sends the
// same record); with Dedup = Window, a client re-sending an event through a
// gateway (a new receive time) within a window is caught too.
//
// # Checkpoints and replay
//
// Checkpoint returns where a new owner must start reading (Offset, the
// group's committed offset) and what it must know (Next, MaxTime: the
// commit's metadata). Offset is at most the offset of every accepted record
// with t > wm − Window − Dedup, so replaying from it rebuilds every window a
// later record can still fall in and every ID a later record can still
// duplicate; MaxTime is the largest time of the records before Offset, so the
// replayed watermark is the original one at every record, and each replayed
// record is decided (late, duplicate, accepted) as it was the first time.
// Results finalized while the replay is before Next were emitted by the
// previous owner and are suppressed; the state at Next is the state the
// previous owner had there, so every later Result is what it would have
// emitted. Offset is rounded down to a multiple of Config.Block (MaxTime is
// tracked per block of offsets, not per record).
//
// # Cost
//
// Per accepted record: O(log n) to insert (n: the key's records in the
// window; a record out of time order shifts the ones after it), O(1)
// amortised to finalize and evict, plus a heap operation over the keys with
// pending work. Memory: the accepted records of the last Window + Lateness
// per key (time, offset, amount, ID), the IDs of the last Dedup, and one
// 16-byte entry per Config.Block offsets back to the checkpoint.
//
// A Partition is not safe for concurrent use.
package window

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultBlock is the default granularity of checkpoint offsets.
const DefaultBlock = 256

// Config configures a Partition.
type Config struct {
	Window    time.Duration // > 0
	Lateness  time.Duration // >= 0
	Dedup     time.Duration // 0..Window
	Threshold int64         // in amount units; Alert is Sum > Threshold
	// Block is the granularity of checkpoint offsets (default DefaultBlock):
	// a replay reads up to Block−1 more records, and the partition keeps one
	// 16-byte maximum per Block offsets instead of one per record.
	Block int64
}

func (c Config) validate() error {
	switch {
	case c.Window <= 0:
		return fmt.Errorf("window %v: want a positive duration", c.Window)
	case c.Lateness < 0:
		return fmt.Errorf("lateness %v: want 0 or a positive duration", c.Lateness)
	case c.Dedup < 0 || c.Dedup > c.Window:
		return fmt.Errorf("dedup horizon %v: want 0 .. the window (%v)", c.Dedup, c.Window)
	case c.Block < 0:
		return fmt.Errorf("block %d: want a positive number of offsets (0: %d)", c.Block, DefaultBlock)
	}
	return nil
}

// Record is one record of the partition as the window sees it.
type Record struct {
	Offset int64
	// HasTime is false when the record carries no usable time: it only
	// moves the partition's position.
	HasTime bool
	Time    int64 // ns
	// Windowed is false for records that do not enter the window (another
	// event type, no key, no amount): their time still moves the watermark.
	Windowed bool
	Key      string
	Amount   int64  // units
	ID       string // dedup key; "" = never a duplicate
	Tag      uint8  // opaque to the window, handed back in the Result
}

// Outcome is what Add did with a record.
type Outcome uint8

// Outcomes of Add.
const (
	Accepted  Outcome = iota // windowed, in time: it will get a Result
	Skipped                  // not windowed (its time counted)
	NoTime                   // no usable time: ignored
	Late                     // windowed, older than the watermark: ignored
	Duplicate                // windowed, duplicates an accepted record: ignored
	Stale                    // an offset at or before one already seen: ignored
	Closed                   // after Flush: ignored
)

var outcomeNames = [...]string{"accepted", "skipped", "no_time", "late", "duplicate", "stale", "closed"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Result is the final window of one accepted record.
type Result struct {
	Offset int64
	Time   int64
	Key    string
	Sum    Int128 // of the key's accepted amounts with time in (Time − Window, Time]
	Count  int    // how many records that is (the record itself included)
	Alert  bool   // Sum > Threshold
	Tag    uint8
	// Flushed: emitted by Flush, before the watermark passed Time. Final
	// only if the log really ended there.
	Flushed bool
}

// Stats are a Partition's counters.
type Stats struct {
	Records    uint64 // Add calls with a new offset
	Outcomes   [Closed + 1]uint64
	Results    uint64 // emitted
	Suppressed uint64 // finalized during a replay before Next: emitted by the previous owner
	Alerts     uint64 // emitted results with Alert
	Keys       int    // live keys
	Entries    int    // records held in windows
	Pending    int    // accepted records whose result is not final yet
	IDs        int    // IDs held for deduplication
}

// Checkpoint is the state a new owner of the partition needs.
type Checkpoint struct {
	Offset  int64 // where to start reading: the offset to commit
	Next    int64 // the first offset not processed; results before it were emitted
	MaxTime int64 // the largest record time before Offset, if HasMax
	HasMax  bool
}

const metaPrefix = "xgate-window/1"

// Metadata encodes Next and MaxTime for a commit's metadata string.
func (c Checkpoint) Metadata() string {
	s := metaPrefix + " next=" + strconv.FormatInt(c.Next, 10)
	if c.HasMax {
		s += " max=" + strconv.FormatInt(c.MaxTime, 10)
	}
	return s
}

// ErrMetadata is matched by ParseCheckpoint's errors.
var ErrMetadata = errors.New("not a window checkpoint")

// ParseCheckpoint rebuilds the checkpoint committed at offset with meta.
// Metadata that is not a window checkpoint (a commit by another tool, or
// none) is ErrMetadata: the caller then starts without history.
func ParseCheckpoint(offset int64, meta string) (Checkpoint, error) {
	f := strings.Fields(meta)
	if len(f) < 2 || f[0] != metaPrefix {
		return Checkpoint{}, fmt.Errorf("%w: metadata %q", ErrMetadata, meta)
	}
	c := Checkpoint{Offset: offset}
	seen := false
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return Checkpoint{}, fmt.Errorf("%w: metadata %q: %s: %v", ErrMetadata, meta, k, err)
		}
		switch k {
		case "next":
			c.Next, seen = n, true
		case "max":
			c.MaxTime, c.HasMax = n, true
		default:
			return Checkpoint{}, fmt.Errorf("%w: metadata %q: unknown field %q", ErrMetadata, meta, k)
		}
	}
	if !seen || c.Next < offset {
		return Checkpoint{}, fmt.Errorf("%w: metadata %q at offset %d: want next >= offset", ErrMetadata, meta, offset)
	}
	return c, nil
}

type entry struct {
	time, offset, amount int64
	id                   string
	tag                  uint8
}

// keyState holds one key's accepted records in (time, offset) order:
// ents[:left] are out of every window still to be finalized (kept until the
// next compaction), ents[left:fin] are finalized and inside the window of
// the last finalized time, ents[fin:] are pending. sum is the sum of
// ents[left:fin].
type keyState struct {
	key       string
	ents      []entry
	left, fin int
	sum       Int128
	deadline  int64 // process the key once the watermark is past this
	hidx      int   // index in the heap
}

// setDeadline sets the deadline: the time of the first pending record
// (finalize it when wm > it) or, with nothing pending, newest + Window
// (expire the key when wm > newest + Window). Entries leave only when their
// time is < wm − Window, so an evicted ID could not have been a duplicate
// of a record in time (t >= wm, duplicate if the ID's time >= t − Dedup).
func (k *keyState) setDeadline(w int64) {
	if k.fin < len(k.ents) {
		k.deadline = k.ents[k.fin].time
	} else {
		k.deadline = satAdd(k.ents[len(k.ents)-1].time, w)
	}
}

type keyHeap []*keyState

func (h keyHeap) Len() int           { return len(h) }
func (h keyHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h keyHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].hidx = i; h[j].hidx = j }
func (h *keyHeap) Push(x any)        { k := x.(*keyState); k.hidx = len(*h); *h = append(*h, k) }
func (h *keyHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	k.hidx = -1
	return k
}

type accRec struct{ offset, time int64 }

type block struct {
	idx, max int64
}

type idRef struct{ time, offset int64 }

// Partition is the window state of one partition.
type Partition struct {
	cfg            Config
	win, late, dup int64
	block          int64
	emit           func(Result)

	start    int64 // first offset seen; -1 before
	next     int64 // the offset after the last seen; -1 before
	emitFrom int64 // results finalized while next <= emitFrom are suppressed
	maxTime  int64
	hasMax   bool
	closed   bool

	keys map[string]*keyState
	heap keyHeap
	ids  map[string]idRef

	// acc: accepted records in offset order from the oldest one that may
	// still matter (time > wm − Window − Dedup); accHead is its first live
	// element.
	acc     []accRec
	accHead int
	// blocks: the largest time per block of offsets, from the
	// block of start; baseMax is the largest time before the first of them.
	blocks     []block
	blocksHead int
	baseMax    int64
	baseHas    bool

	st Stats
}

// NewPartition returns an empty partition state. With a checkpoint (from
// ParseCheckpoint) it expects to be fed from ck.Offset on and suppresses
// the results the previous owner emitted. emit receives every Result, in
// the order they become final; it must not call back into the Partition.
func NewPartition(cfg Config, ck *Checkpoint, emit func(Result)) (*Partition, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("window: %w", err)
	}
	p := &Partition{
		cfg:   cfg,
		win:   int64(cfg.Window),
		late:  int64(cfg.Lateness),
		dup:   int64(cfg.Dedup),
		block: cmp.Or(cfg.Block, DefaultBlock),
		emit:  emit,
		start: -1,
		next:  -1,
		keys:  map[string]*keyState{},
		ids:   map[string]idRef{},
	}
	if ck != nil {
		p.emitFrom = ck.Next
		p.maxTime, p.hasMax = ck.MaxTime, ck.HasMax
		p.baseMax, p.baseHas = ck.MaxTime, ck.HasMax
	}
	return p, nil
}

// Watermark returns the partition's watermark and whether it has one.
func (p *Partition) Watermark() (int64, bool) {
	if !p.hasMax {
		return 0, false
	}
	return satAdd(p.maxTime, -p.late), true
}

// Add feeds the next record of the partition.
func (p *Partition) Add(r Record) Outcome {
	o := p.add(r)
	p.st.Outcomes[o]++
	return o
}

func (p *Partition) add(r Record) Outcome {
	if p.closed {
		return Closed
	}
	if p.next >= 0 && r.Offset < p.next {
		return Stale
	}
	p.st.Records++
	if p.start < 0 {
		p.start = r.Offset
	}
	p.next = r.Offset + 1
	if !r.HasTime {
		return NoTime
	}
	p.noteBlock(r.Offset, r.Time)
	wm, has := p.Watermark()
	if has && r.Time < wm {
		if r.Windowed {
			return Late
		}
		return Skipped
	}
	if !p.hasMax || r.Time > p.maxTime {
		p.maxTime, p.hasMax = r.Time, true
	}
	out := Skipped
	if r.Windowed {
		out = p.accept(r)
	}
	wm, _ = p.Watermark()
	p.advance(wm)
	return out
}

func (p *Partition) accept(r Record) Outcome {
	if r.ID != "" {
		if o, ok := p.ids[r.ID]; ok && o.time >= satAdd(r.Time, -p.dup) {
			return Duplicate
		}
		p.ids[r.ID] = idRef{r.Time, r.Offset}
	}
	k := p.keys[r.Key]
	if k == nil {
		k = &keyState{key: r.Key, hidx: -1}
		p.keys[r.Key] = k
	}
	// Insert after every entry with time <= r.Time. Finalized entries have
	// time < wm <= r.Time, so the place is in the pending part.
	pend := k.ents[k.fin:]
	i := k.fin + sort.Search(len(pend), func(j int) bool { return pend[j].time > r.Time })
	k.ents = append(k.ents, entry{})
	copy(k.ents[i+1:], k.ents[i:])
	k.ents[i] = entry{time: r.Time, offset: r.Offset, amount: r.Amount, id: r.ID, tag: r.Tag}
	k.setDeadline(p.win)
	if k.hidx < 0 {
		heap.Push(&p.heap, k)
	} else {
		heap.Fix(&p.heap, k.hidx)
	}
	p.acc = append(p.acc, accRec{r.Offset, r.Time})
	p.st.Entries++
	p.st.Pending++
	return Accepted
}

// advance finalizes and evicts what the watermark wm allows.
func (p *Partition) advance(wm int64) {
	for len(p.heap) > 0 && p.heap[0].deadline < wm {
		p.process(p.heap[0], wm, false)
	}
	// The oldest accepted records a replay no longer needs.
	cut := satAdd(wm, -p.win-p.dup)
	for p.accHead < len(p.acc) && p.acc[p.accHead].time <= cut {
		p.accHead++
	}
	if p.accHead > 1024 && p.accHead*2 >= len(p.acc) {
		n := copy(p.acc, p.acc[p.accHead:])
		p.acc, p.accHead = p.acc[:n], 0
	}
}

// process finalizes k's pending records with time < wm (all of them if
// all), evicts what no later window needs, and re-files k in the heap or
// deletes it.
func (p *Partition) process(k *keyState, wm int64, all bool) {
	e := k.ents
	for k.fin < len(e) && (all || e[k.fin].time < wm) {
		t := e[k.fin].time
		r := k.fin
		for r < len(e) && e[r].time == t {
			k.sum = k.sum.Add(e[r].amount)
			r++
		}
		lo := satAdd(t, -p.win)
		for e[k.left].time <= lo { // the entries at t stop it
			k.sum = k.sum.Sub(e[k.left].amount)
			k.left++
		}
		alert := k.sum.Cmp(I128(p.cfg.Threshold)) > 0
		for j := k.fin; j < r; j++ {
			res := Result{Offset: e[j].offset, Time: t, Key: k.key, Sum: k.sum,
				Count: r - k.left, Alert: alert, Tag: e[j].tag, Flushed: all}
			p.st.Pending--
			if !all && p.next <= p.emitFrom {
				p.st.Suppressed++
				continue
			}
			p.st.Results++
			if alert {
				p.st.Alerts++
			}
			if p.emit != nil {
				p.emit(res)
			}
		}
		k.fin = r
	}
	// ents[:left] are at or before (last finalized time) − Window < wm − Window.
	if k.fin == len(e) && e[len(e)-1].time < satAdd(wm, -p.win) {
		p.drop(e)
		p.st.Entries -= len(e)
		delete(p.keys, k.key)
		heap.Remove(&p.heap, k.hidx)
		return
	}
	if k.left > 0 && (k.left >= 32 || k.left*2 >= len(e)) {
		p.drop(e[:k.left])
		p.st.Entries -= k.left
		n := copy(e, e[k.left:])
		clear(e[n:])
		k.ents, k.fin, k.left = e[:n], k.fin-k.left, 0
	}
	k.setDeadline(p.win)
	heap.Fix(&p.heap, k.hidx)
}

// drop forgets the IDs of evicted entries (unless a newer record holds the ID).
func (p *Partition) drop(es []entry) {
	for i := range es {
		if id := es[i].id; id != "" && p.ids[id].offset == es[i].offset {
			delete(p.ids, id)
		}
	}
}

func (p *Partition) noteBlock(offset, t int64) {
	idx := offset / p.block
	if n := len(p.blocks); n > p.blocksHead && p.blocks[n-1].idx == idx {
		p.blocks[n-1].max = max(p.blocks[n-1].max, t)
		return
	}
	p.blocks = append(p.blocks, block{idx, t})
}

// Checkpoint returns the partition's checkpoint; false before any record.
func (p *Partition) Checkpoint() (Checkpoint, bool) {
	if p.next < 0 {
		return Checkpoint{}, false
	}
	low := p.next
	if p.accHead < len(p.acc) {
		low = p.acc[p.accHead].offset
	}
	off := max(p.start, low/p.block*p.block)
	// Blocks wholly before off fold into baseMax, for good: off never
	// goes back (the oldest needed record only moves forward).
	for p.blocksHead < len(p.blocks) && (p.blocks[p.blocksHead].idx+1)*p.block <= off {
		b := p.blocks[p.blocksHead]
		if !p.baseHas || b.max > p.baseMax {
			p.baseMax, p.baseHas = b.max, true
		}
		p.blocksHead++
	}
	if p.blocksHead > 64 && p.blocksHead*2 >= len(p.blocks) {
		n := copy(p.blocks, p.blocks[p.blocksHead:])
		p.blocks, p.blocksHead = p.blocks[:n], 0
	}
	// During a replay the previous owner's Next stays the bound: the
	// results before it were emitted, whoever owns the partition next.
	return Checkpoint{Offset: off, Next: max(p.next, p.emitFrom), MaxTime: p.baseMax, HasMax: p.baseHas}, true
}

// Flush emits the results of every pending record as if the log ended
// here (Result.Flushed) and closes the partition: later Adds are Closed.
// Use it at the end of a bounded run; a partition that goes on must not be
// flushed, its next owner emits those results when they are final.
func (p *Partition) Flush() {
	if p.closed {
		return
	}
	p.closed = true
	for len(p.heap) > 0 {
		k := p.heap[0]
		if k.fin == len(k.ents) {
			heap.Pop(&p.heap)
			continue
		}
		p.process(k, math.MaxInt64, true)
		if k.hidx >= 0 && k.fin == len(k.ents) {
			heap.Remove(&p.heap, k.hidx)
		}
	}
}

// Stats returns the partition's counters.
func (p *Partition) Stats() Stats {
	s := p.st
	s.Keys = len(p.keys)
	s.IDs = len(p.ids)
	return s
}

// Sum returns the sum and count of key's accepted records with time in
// (t − Window, t] among those the partition still holds (records at or
// before wm − Window may have been evicted, so it is exact for t >= wm).
// For tests and diagnostics; O(records of the key).
func (p *Partition) Sum(key string, t int64) (Int128, int) {
	k := p.keys[key]
	if k == nil {
		return Int128{}, 0
	}
	var s Int128
	n := 0
	lo := satAdd(t, -p.win)
	for _, e := range k.ents[k.left:] {
		if e.time > lo && e.time <= t {
			s = s.Add(e.amount)
			n++
		}
	}
	return s, n
}

// satAdd returns a + b, saturated to the int64 range.
func satAdd(a, b int64) int64 {
	s := a + b
	if (s > a) != (b > 0) {
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return s
}
