// Package lists holds the engine's enrichment lists: CIDR, set and map
// tables parsed from files, swapped atomically while workers read them
// (lists.go).
package lists

import "github.com/xgate/xgate/engine/value"

// What the engine shares with its lists: map values are the engine's field
// values (so rules compare a lookup like a field), and the names and texts
// its condition compiler and added fields need. These are kept apart from
// lists.go so that it reads as the lists themselves.

// Value is a map list's value, the engine's field value type.
type Value = value.Value

// The kinds of Value a map list holds.
const (
	KindBool   = value.KindBool
	KindNumber = value.KindNumber
	KindString = value.KindString
)

// Func returns the function that names a list of kind k in conditions:
// cidrs, set or lookup.
func (k ListKind) Func() string { return k.listFunc() }

// LookupJSON returns the value of key in a map list as JSON text, as an
// added field writes it.
func (d *ListData) LookupJSON(key string) (string, bool) { return d.lookupJSON(key) }
