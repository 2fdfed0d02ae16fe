package engine

import (
	"net/netip"
	"unsafe"
)

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
type Value struct {
	Kind Kind
	Bool bool    // KindBool
	Num  float64 // KindNumber
	// Str is the unescaped text for KindString, the raw literal text for
	// KindNumber (so that numeric ids can be keys), and the raw JSON text for
	// KindObject and KindArray.
	Str string
}

// Event is the decoded view of one JSON object in a datagram.
type Event struct {
	// Raw is the object's bytes, a sub-slice of the frame (same lifetime as
	// Value.Str).
	Raw []byte
	// Src is the packet's source address as the gateway saw it; the zero
	// Addr when unknown (then "src_ip" falls back to the schema's src field).
	Src netip.Addr
	// values holds one Value per field slot of the compiled program.
	values []Value
}

// Field returns the value of slot i (slots are assigned by Compile).
func (e *Event) Field(i int) Value { return e.values[i] }

// bytesView returns a string that shares memory with b.
//
// Invariant: the caller must not keep the string beyond the lifetime of b's
// backing array (see Value); b is never written while views exist because
// the engine only reads frames.
func bytesView(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
