package engine

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
// first use in this process, so values are small and positive.
type SystemClock struct{}

var clockBase = time.Now()

// Nanotime returns monotonic nanoseconds since the process first used the
// engine clock.
func (SystemClock) Nanotime() int64 { return int64(time.Since(clockBase)) }

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
