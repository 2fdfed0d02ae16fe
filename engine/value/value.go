// Package value holds the type of a decoded JSON field, Value, shared by
// the engine's decoder and rules and by the enrichment lists (engine/lists),
// whose map values the rules compare like fields.
package value

// Kind is the JSON type of a decoded field.
type Kind uint8

const (
	KindMissing Kind = iota // the path is not in the event
	KindNull
	KindBool
	KindNumber
	KindString
	KindObject
	KindArray
)

var kindNames = [...]string{"missing", "null", "bool", "number", "string", "object", "array"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "invalid"
}

// Value is one decoded field of an event: a view, never a copy.
//
// Lifetime: Str points into the frame the event was decoded from, or, for a
// string that contained escape sequences, into the worker's scratch buffer.
// It is valid until the worker decodes its next frame or the frame is handed
// back to its owner (the AF_XDP fill ring, the socket buffer pool), whichever
// comes first. Code that needs a field longer must copy it (strings.Clone).
// A map list's value (engine/lists) lives as long as the list's data.
type Value struct {
	Kind Kind
	Bool bool    // KindBool
	Num  float64 // KindNumber
	// Str is the unescaped text for KindString, the raw literal text for
	// KindNumber (so that numeric ids can be keys), and the raw JSON text for
	// KindObject and KindArray.
	Str string
}
