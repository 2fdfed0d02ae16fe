package engine

import (
	"net/netip"
	"testing"
	"unsafe"
)

var netipZero netip.Addr

func mustEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func errsOf(ds []Decision) []DecodeError {
	var out []DecodeError
	for _, d := range ds {
		out = append(out, d.Err)
	}
	return out
}

func rawsOf(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		out = append(out, string(d.Raw))
	}
	return out
}

// isSubslice reports whether sub lies within frame's memory.
func isSubslice(frame, sub []byte) bool {
	if len(sub) == 0 || len(frame) == 0 {
		return false
	}
	f0 := uintptr(unsafe.Pointer(unsafe.SliceData(frame)))
	s0 := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	return s0 >= f0 && s0+uintptr(len(sub)) <= f0+uintptr(len(frame))
}
