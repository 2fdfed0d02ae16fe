package state

import (
	"sync/atomic"
	"time"
)

// Clock gives the engine its notion of time in nanoseconds on a monotonic
// scale. It is injected so that rate-limit and window tests are exact and
// fast: tests drive a ManualClock, the gateway uses SystemClock.
//
// Implementations must be safe for concurrent use and must never go
// backwards.
type Clock interface {
	Nanotime() int64
}

// SystemClock reads the runtime's monotonic clock. Its zero point is the
// start of the wall-clock hour in which the process first used it, so
// values are small and positive, and window slides that divide an hour
// (5s, 1m) fall on round wall-clock times (as the wall clock read at that
// first use; a later step of the wall clock does not move them).
type SystemClock struct{}

// clockBase keeps the monotonic reading of time.Now (Add keeps it, where
// Truncate would strip it); clockBaseWall is the same instant in ns since
// the Unix epoch.
var clockBase, clockBaseWall = func() (time.Time, int64) {
	now := time.Now()
	b := now.Add(-time.Duration(now.UnixNano() % int64(time.Hour)))
	return b, b.UnixNano()
}()

// Nanotime returns monotonic nanoseconds since clockBase.
func (SystemClock) Nanotime() int64 { return int64(time.Since(clockBase)) }

// WallNs converts a Nanotime reading to ns since the Unix epoch.
func (SystemClock) WallNs(ns int64) int64 { return clockBaseWall + ns }

// ManualClock is a Clock that only moves when told to. The zero value reads 0.
type ManualClock struct{ ns atomic.Int64 }

// Nanotime returns the current manual time.
func (c *ManualClock) Nanotime() int64 { return c.ns.Load() }

// Set moves the clock to ns. Moving it backwards is the caller's bug; Set
// does not guard against it so tests can model any schedule they need.
func (c *ManualClock) Set(ns int64) { c.ns.Store(ns) }

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

var _ Clock = SystemClock{}
var _ Clock = (*ManualClock)(nil)
