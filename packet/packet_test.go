package packet_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/xgate/xgate/packet"
	"github.com/xgate/xgate/packet/packettest"
)

// TestFixtures: the Go parser's outcome for every row of the shared table
// (the XDP program is held to the same rows in package bpf).
func TestFixtures(t *testing.T) {
	for _, fx := range packettest.Fixtures {
		t.Run(fx.Name, func(t *testing.T) {
			frame := fx.Bytes()
			d, o := packet.ParseUDP(frame)
			if o != fx.Parse {
				t.Fatalf("ParseUDP = %v, want %v (frame % x)", o, fx.Parse, frame)
			}
			if o != packet.UDP {
				return
			}
			want := fx.Frame.Payload
			if fx.Frame.UDPLen > 0 {
				want = want[:fx.Frame.UDPLen-packet.UDPLen]
			}
			if !bytes.Equal(d.Payload, want) || !bytes.Equal(frame[d.PayloadOff:d.PayloadOff+len(d.Payload)], d.Payload) {
				t.Errorf("payload %q at %d, want %q", d.Payload, d.PayloadOff, want)
			}
			if cap(d.Payload) != len(d.Payload) {
				t.Errorf("payload cap %d > len %d: an append would write into the frame", cap(d.Payload), len(d.Payload))
			}
			if d.Src != fx.Frame.Src.Unmap() || d.Dst != fx.Frame.Dst.Unmap() {
				t.Errorf("addresses %v → %v, want %v → %v", d.Src, d.Dst, fx.Frame.Src, fx.Frame.Dst)
			}
			if d.VLANs != len(fx.Frame.VLANs) || (d.VLANs > 0 && d.OuterVID != fx.Frame.VLANs[0].VID) {
				t.Errorf("vlans %d outer %d, want %v", d.VLANs, d.OuterVID, fx.Frame.VLANs)
			}
			if d.DstPort != fx.Frame.DstPort || d.SrcPort != 40000 {
				t.Errorf("ports %d → %d", d.SrcPort, d.DstPort)
			}
		})
	}
}

func TestChecksums(t *testing.T) {
	f := packet.Frame{Src: packettest.Src4, Dst: packettest.Dst4, Payload: []byte("x"), Checksum: true}
	b := f.Bytes()
	if c := packet.Checksum(b[packet.EthLen : packet.EthLen+packet.IPv4Len]); c != 0 {
		t.Errorf("IPv4 header checksum does not verify: %#x", c)
	}
	// IPv6 UDP: the checksum over pseudo-header and datagram verifies to 0.
	f6 := packet.Frame{Src: packettest.Src6, Dst: packettest.Dst6, Payload: []byte(`{"a":1}`), UDPChecksum6: true}
	b = f6.Bytes()
	udp := b[packet.EthLen+packet.IPv6Len:]
	var pseudo []byte
	pseudo = append(pseudo, b[packet.EthLen+8:packet.EthLen+40]...)
	pseudo = append(pseudo, 0, 0, byte(len(udp)>>8), byte(len(udp)), 0, 0, 0, packet.ProtoUDP)
	if c := packet.Checksum(append(pseudo, udp...)); c != 0 {
		t.Errorf("IPv6 UDP checksum does not verify: %#x", c)
	}
}

func TestAppendErrors(t *testing.T) {
	for name, f := range map[string]packet.Frame{
		"v6 addresses in v4": {EtherType: packet.EtherTypeIPv4, Src: packettest.Src6, Dst: packettest.Dst6},
		"v4 addresses in v6": {EtherType: packet.EtherTypeIPv6, Src: packettest.Src4, Dst: packettest.Dst4},
		"short MAC":          {SrcMAC: []byte{1, 2}, Src: packettest.Src4, Dst: packettest.Dst4},
		"payload too long":   {Src: packettest.Src4, Dst: packettest.Dst4, Payload: make([]byte, 70000)},
	} {
		if b, err := f.Append([]byte("keep")); err == nil || string(b) != "keep" {
			t.Errorf("%s: err %v, buf %q: want an error and the buffer unchanged", name, err, b)
		}
	}
}

func TestParseAllocs(t *testing.T) {
	frame := packettest.Fixtures[0].Bytes()
	if n := testing.AllocsPerRun(100, func() { packet.ParseUDP(frame) }); n != 0 {
		t.Errorf("ParseUDP allocates %v per frame", n)
	}
}

func BenchmarkParseUDP(b *testing.B) {
	frame := packettest.Fixtures[0].Bytes()
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		packet.ParseUDP(frame)
	}
}

// FuzzParseUDP: any bytes parse without panic, a datagram's payload lies
// inside the frame behind its headers, and what the builder makes of the
// parsed datagram parses back to the same payload.
func FuzzParseUDP(f *testing.F) {
	for _, fx := range packettest.Fixtures {
		f.Add(fx.Bytes())
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		d, o := packet.ParseUDP(frame)
		if o != packet.UDP {
			return
		}
		if d.PayloadOff < packet.EthLen+packet.IPv4Len+packet.UDPLen || d.PayloadOff+len(d.Payload) > len(frame) {
			t.Fatalf("payload [%d:+%d] outside frame of %d", d.PayloadOff, len(d.Payload), len(frame))
		}
		if d.Src.Is4() != d.Dst.Is4() {
			return // an IPv6 frame with one v4-mapped address: no frame of one family holds both
		}
		re, err := packet.Frame{Src: d.Src, Dst: d.Dst, SrcPort: d.SrcPort, DstPort: d.DstPort,
			Payload: d.Payload}.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		d2, o2 := packet.ParseUDP(re)
		// A zero port rebuilds as the builder's default.
		if o2 != packet.UDP || !bytes.Equal(d2.Payload, d.Payload) || d2.Src != d.Src || (d.DstPort != 0 && d2.DstPort != d.DstPort) {
			t.Fatalf("rebuilt frame parses as %v %+v", o2, d2)
		}
		if d.Src != (netip.Addr{}) && d.Src.Is4In6() {
			t.Fatalf("v4-mapped source %v", d.Src)
		}
	})
}
