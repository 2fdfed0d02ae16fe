// Package lists holds the engine's enrichment lists: CIDR, set and map
// tables parsed from files, swapped atomically while workers read them
// (lists.go).
package lists

import "github.com/xgate/xgate/engine/value"

// What the engine shares with its lists: map values are the engine's field
// values, so rules compare a lookup like a field.

// Value is a map list's value, the engine's field value type.
type Value = value.Value

// The kinds of Value a map list holds.
const (
	KindBool   = value.KindBool
	KindNumber = value.KindNumber
	KindString = value.KindString
)
