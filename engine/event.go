package engine

import (
	"net/netip"
	"unsafe"

	"github.com/xgate/xgate/engine/value"
)

// Kind is the JSON type of a decoded field (see engine/value).
type Kind = value.Kind

const (
	KindMissing = value.KindMissing // the path is not in the event
	KindNull    = value.KindNull
	KindBool    = value.KindBool
	KindNumber  = value.KindNumber
	KindString  = value.KindString
	KindObject  = value.KindObject
	KindArray   = value.KindArray
)

// Value is one decoded field of an event: a view into the frame, never a
// copy; its lifetime is documented on value.Value.
type Value = value.Value

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
