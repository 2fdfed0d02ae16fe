package sink

import (
	"log/slog"
	"time"
)

// sinkWatchEvery is how often the Watch compares the sinks' counters,
// and sinkLogEvery how often at most it logs one sink's trouble.
const (
	sinkWatchEvery = time.Second
	sinkLogEvery   = 10 * time.Second
)

// Watch makes sink faults loud: a sink that drops, fails or errs is
// logged (at most once per sinkLogEvery per sink, with what it lost since
// the last line), and its recovery once it writes again without losing.
// A sink that loses its server (NATS) is logged as down when it happens,
// before any record is lost (at most once per sinkLogEvery per sink), and
// as connected again when it is back.
// Counters stay the record; the log says when it started and stopped.
type Watch struct {
	log      *slog.Logger
	sinks    *Sinks
	prev     []Stats
	lastLog  []time.Time
	failing  []bool
	logged   []Stats     // the counts as of the last trouble line
	lastDown []time.Time // when a down line was logged last
	downLog  []bool      // a down line was logged, its "connected again" not yet
	spooling []bool      // a spooling line was logged, its "replayed" not yet
}

// NewWatch watches the sinks of s, logging to log.
func NewWatch(log *slog.Logger, s *Sinks) *Watch {
	st := s.Stats()
	return &Watch{log: log, sinks: s, prev: st, lastLog: make([]time.Time, len(st)),
		failing: make([]bool, len(st)), logged: append([]Stats(nil), st...),
		lastDown: make([]time.Time, len(st)), downLog: make([]bool, len(st)), spooling: make([]bool, len(st))}
}

// lost is what a sink's counters say it did not deliver.
func lost(s Stats) uint64 { return s.Dropped + s.TooBig + s.Failed + s.Errors }

// Check compares the counters with the last reading and logs the changes.
func (w *Watch) Check(now time.Time) {
	cur := w.sinks.Stats()
	for i, s := range cur {
		p := w.prev[i]
		switch {
		case s.Down && !p.Down && now.Sub(w.lastDown[i]) >= sinkLogEvery:
			w.log.Warn("sink down: no server reachable; records wait in its buffer and are retried until delivery_timeout",
				"sink", s.Name, "in_flight", s.InFlight, "last_error", s.LastError)
			w.lastDown[i], w.downLog[i] = now, true
		case !s.Down && w.downLog[i]:
			w.log.Info("sink connected again", "sink", s.Name, "in_flight", s.InFlight)
			w.downLog[i] = false
		}
		// A sink with a disk spool: when it starts spooling and when the
		// spool is replayed (once per episode; drops are logged below).
		switch {
		case s.Spooled > 0 && !w.spooling[i]:
			w.log.Warn("sink spooling to disk: the broker does not take records now; they are replayed in order when it does",
				"sink", s.Name, "spooled", s.Spooled, "spool_bytes", s.SpoolBytes, "recovered_at_start", s.SpoolRecovered, "last_error", s.LastError)
			w.spooling[i] = true
		case s.Spooled == 0 && w.spooling[i]:
			w.log.Info("sink spool replayed", "sink", s.Name, "replayed_in_all", s.SpoolReplayed, "spool_dropped_in_all", s.SpoolDropped)
			w.spooling[i] = false
		}
		switch {
		case lost(s) > lost(p):
			if !w.failing[i] || now.Sub(w.lastLog[i]) >= sinkLogEvery {
				l := w.logged[i]
				w.log.Warn("sink losing records", "sink", s.Name,
					"dropped", s.Dropped-l.Dropped, "spool_full", s.SpoolDropped-l.SpoolDropped, "too_big", s.TooBig-l.TooBig, "failed", s.Failed-l.Failed,
					"errors", s.Errors-l.Errors, "last_error", s.LastError, "since", now.Sub(w.lastLog[i]).Round(time.Second))
				w.lastLog[i], w.logged[i] = now, s
			}
			w.failing[i] = true
		case w.failing[i] && s.Records > p.Records:
			w.log.Info("sink recovered: writing again without losing records", "sink", s.Name,
				"lost_in_all", lost(s), "in_flight", s.InFlight)
			w.failing[i] = false
		}
	}
	w.prev = cur
}

// Run checks every sinkWatchEvery until stop is closed.
func (w *Watch) Run(stop <-chan struct{}) {
	t := time.NewTicker(sinkWatchEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			w.Check(now)
		}
	}
}

// Final logs, after the sinks closed, every sink that did not deliver all
// its records, with the counts by kind.
func (w *Watch) Final() {
	for _, s := range w.sinks.Stats() {
		if s.Spooled > 0 {
			w.log.Info("sink left records in its spool: the next start replays them", "sink", s.Name, "spooled", s.Spooled, "spool_bytes", s.SpoolBytes)
		}
		if n := lost(s) + s.InFlight; n > 0 {
			w.log.Warn("sink did not deliver every record", "sink", s.Name, "dropped", s.Dropped, "too_big", s.TooBig,
				"failed", s.Failed, "errors", s.Errors, "in_flight_at_stop", s.InFlight, "last_error", s.LastError)
		}
	}
}
