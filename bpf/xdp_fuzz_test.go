package bpf

import (
	"testing"

	"github.com/xgate/xgate/packet"
	"github.com/xgate/xgate/packet/packettest"
)

// FuzzXDP runs arbitrary frames through the XDP program (BPF_PROG_RUN)
// and holds it to three things: each frame moves exactly one terminal
// reason, the verdict agrees with that reason's fate, and the program and
// the Go parser (package packet, which the workers use) agree: a frame
// the program lets through as ours parses as a UDP datagram to a listened
// port, one it drops as malformed is malformed for the parser too, and
// the reverse. Run it with
//
//	go test ./bpf/ -run '^$' -fuzz FuzzXDP -fuzztime 60s
//
// (as root); the corpus under testdata/fuzz runs as ordinary cases.
func FuzzXDP(f *testing.F) {
	for _, fx := range packettest.Fixtures {
		f.Add(fx.Bytes())
	}
	x := xgLoad(f, Options{ListenPorts: []uint16{packettest.Port}, Config: Config{AnyVLAN: true}})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < packet.EthLen {
			return // BPF_PROG_RUN refuses less than an Ethernet header
		}
		if len(frame) > 4000 {
			frame = frame[:4000]
		}
		before := xgCounters(t, x)
		verdict, _, _ := xgRun(t, x.Program(), frame, xgLoIfindex, 0)
		after := xgCounters(t, x)
		var reason Reason
		moved := 0
		for r := Reason(0); r < ReasonTerminal; r++ {
			if after[r].Packets != before[r].Packets {
				moved++
				reason = r
			}
		}
		if moved != 1 {
			t.Fatalf("%d terminal reasons moved for one frame % x", moved, frame)
		}
		wantVerdict := uint32(xgPass)
		if reason.Fate() == FateDropped {
			wantVerdict = xgDrop
		}
		if verdict != wantVerdict {
			t.Fatalf("reason %v with verdict %d", reason, verdict)
		}
		d, o := packet.ParseUDP(frame)
		ours := o == packet.UDP && d.DstPort == packettest.Port
		switch {
		case reason == ReasonPassSocket && !ours:
			t.Fatalf("program passed as ours, parser says %v port %d: % x", o, d.DstPort, frame)
		case ours && reason.Fate() != FateDropped && reason != ReasonPassSocket:
			t.Fatalf("parser finds a datagram to our port, program says %v: % x", reason, frame)
		case o.Malformed() != (reason >= ReasonMalformedEth && reason <= ReasonMalformedUDP):
			t.Fatalf("parser %v, program %v: % x", o, reason, frame)
		case o.Malformed() && o.String() != reason.String():
			t.Fatalf("parser %v, program %v: % x", o, reason, frame)
		}
	})
}
