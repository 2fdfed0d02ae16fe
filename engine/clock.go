package engine

import "github.com/xgate/xgate/engine/state"

// The engine's time (see engine/state, whose tables read it): nanoseconds
// on a monotonic scale, injected so that rate-limit and window tests are
// exact and fast.
type (
	Clock       = state.Clock       // what the engine reads; never goes backwards
	SystemClock = state.SystemClock // the runtime's monotonic clock (the gateway's)
	ManualClock = state.ManualClock // moves only when told to (tests)
)

// Errors of bad rate-limit and window configs, matched with errors.Is.
var (
	ErrInvalidRateLimit = state.ErrInvalidRateLimit
	ErrInvalidWindow    = state.ErrInvalidWindow
)
