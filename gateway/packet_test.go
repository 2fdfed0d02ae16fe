package gateway

import (
	"bytes"
	"testing"
	"unsafe"

	"github.com/xgate/xgate/packet"
	"github.com/xgate/xgate/packet/packettest"
	"github.com/xgate/xgate/xdp"
)

// handoffOf is the stamp the XDP program writes for a frame the parser
// accepts: the payload's offset and the source address's (found in the
// IP header, before the UDP header).
func handoffOf(t testing.TB, frame []byte) xdp.Meta {
	t.Helper()
	d, o := packet.ParseUDP(frame)
	if o != packet.UDP {
		t.Fatalf("fixture does not parse: %v", o)
	}
	off := offsetIn(frame, d.Payload)
	src := d.Src.AsSlice()
	so := bytes.Index(frame[:off-8], src)
	if so < 0 {
		t.Fatalf("source %v not in the headers", d.Src)
	}
	return xdp.Meta{OK: true, PayloadOff: uint16(off), SrcOff: uint8(so), V6: len(src) == 16}
}

// offsetIn is where view starts in frame (a view into it), or -1.
func offsetIn(frame, view []byte) int {
	if len(view) == 0 || len(frame) == 0 {
		return -1
	}
	d := uintptr(unsafe.Pointer(unsafe.SliceData(view))) - uintptr(unsafe.Pointer(unsafe.SliceData(frame)))
	if d > uintptr(len(frame)) {
		return -1
	}
	return int(d)
}

// TestHandedPayload: with the program's handoff the worker finds the same
// payload and source as the parser; without one, or with offsets that do
// not fit the frame, it parses.
func TestHandedPayload(t *testing.T) {
	n := 0
	for _, fx := range packettest.Fixtures {
		frame := fx.Bytes()
		wantP, wantS, wantOK := udpPayload(frame)
		if !wantOK {
			continue
		}
		n++
		m := handoffOf(t, frame)
		for _, c := range []struct {
			name string
			m    xdp.Meta
		}{
			{"handed", m},
			{"no stamp", xdp.Meta{}},
			{"stamp without handoff", xdp.Meta{OK: true}},
			{"payload past the frame", xdp.Meta{OK: true, PayloadOff: uint16(len(frame) + 1)}},
			{"UDP length past the frame", xdp.Meta{OK: true, PayloadOff: 8}},
			{"source inside the UDP header", xdp.Meta{OK: true, PayloadOff: m.PayloadOff, SrcOff: uint8(m.PayloadOff - 6), V6: m.V6}},
		} {
			p, s, ok := handedPayload(frame, &c.m)
			if !ok || !bytes.Equal(p, wantP) || s != wantS {
				t.Errorf("%s, %s: %q %v %v; want %q %v", fx.Name, c.name, p, s, ok, wantP, wantS)
			}
		}
	}
	if n < 5 {
		t.Fatalf("only %d fixtures parse", n)
	}
	// The handoff is used, not a parse: with the IP header's version
	// spoilt after the program ran, the parser gives up and the handoff
	// still finds the payload.
	for _, name := range []string{"v4", "v6"} {
		frame := packettest.ByName(name).Bytes()
		wantP, wantS, _ := udpPayload(frame)
		m := handoffOf(t, frame)
		frame[packet.EthLen] = 0
		if _, _, ok := udpPayload(frame); ok {
			t.Fatalf("%s: the spoilt frame still parses", name)
		}
		if p, s, ok := handedPayload(frame, &m); !ok || !bytes.Equal(p, wantP) || s != wantS {
			t.Errorf("%s: handoff of a frame the parser refuses: %q %v %v; want %q %v", name, p, s, ok, wantP, wantS)
		}
	}
}

// FuzzHandedPayload: whatever the stamp says, the worker never reads
// outside the frame, and a payload it returns lies inside it.
func FuzzHandedPayload(f *testing.F) {
	for _, fx := range packettest.Fixtures {
		if _, _, ok := udpPayload(fx.Bytes()); ok {
			m := handoffOf(f, fx.Bytes())
			f.Add(fx.Bytes(), m.PayloadOff, m.SrcOff, m.V6)
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte, off uint16, so uint8, v6 bool) {
		m := xdp.Meta{OK: true, PayloadOff: off, SrcOff: so, V6: v6}
		p, _, ok := handedPayload(frame, &m)
		if ok && len(p) > 0 && (offsetIn(frame, p) < 0 || offsetIn(frame, p)+len(p) > len(frame)) {
			t.Fatalf("payload outside the frame")
		}
	})
}

// BenchmarkFramePayload: finding the payload of a redirected frame by
// parsing it, and from the program's handoff.
func BenchmarkFramePayload(b *testing.B) {
	for _, name := range []string{"v4", "v6"} {
		frame := packettest.ByName(name).Bytes()
		m := handoffOf(b, frame)
		b.Run(name+"/parse", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, ok := udpPayload(frame); !ok {
					b.Fatal("no payload")
				}
			}
		})
		b.Run(name+"/handoff", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, ok := handedPayload(frame, &m); !ok {
					b.Fatal("no payload")
				}
			}
		})
	}
}
