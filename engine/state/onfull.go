package state

import (
	"fmt"
	"strings"
)

// OnFull says what a rule does with an event whose key finds its state
// table full (MaxKeys live keys in the key's probe range, none idle).
type OnFull uint8

const (
	// OnFullDeny, the default, fails closed. A rate limit denies the event
	// (the rule fires: its action applies). A window cannot count the
	// event, so it cannot vouch for it: the rule fires as if its condition
	// held, with Decision.Value the aggregate of the event alone.
	OnFullDeny OnFull = iota
	// OnFullAllow fails open: the key is treated as new, unremembered. A
	// rate limit allows the event; a window evaluates its condition on the
	// event alone.
	OnFullAllow
	numOnFull
)

var onFullNames = [numOnFull]string{"deny", "allow"}

func (o OnFull) String() string {
	if o < numOnFull {
		return onFullNames[o]
	}
	return fmt.Sprintf("on_full(%d)", o)
}

// ParseOnFull reads "deny" or "allow"; "" is the default, deny.
func ParseOnFull(s string) (OnFull, error) {
	switch strings.TrimSpace(s) {
	case "", "deny":
		return OnFullDeny, nil
	case "allow":
		return OnFullAllow, nil
	}
	return 0, fmt.Errorf("on_full %q: want allow or deny", s)
}
