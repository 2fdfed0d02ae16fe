package gateway

import (
	"bytes"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/bpf"
)

// TestReadPins: with pin.keep, the pins outlive the gateway, and reading
// them (what `xgate stats --pins` does) gives the gateway's final XDP
// counts and its blocklist entry. The pins are removed afterwards.
func TestReadPins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	mnt := mountBPFFS(t)
	pinPath := filepath.Join(mnt, "xgate")
	if _, err := ReadPins(pinPath); err == nil {
		t.Fatal("ReadPins of an empty bpffs: no error")
	}
	pair, g, stop := runIT(t, 2, "socket", func(cfg *Config) { cfg.Pin.Path, cfg.Pin.Keep = pinPath, true })

	dst := netip.AddrPortFrom(pair.B.Addr, itPort)
	sent := sendEventsAndOther(t, pair, 200, 30)
	if _, err := pair.A.SendUDP(dst, []byte(`{"user_id":"b1","event_type":"bot"}`), 1); err != nil {
		t.Fatal(err)
	}
	sent++
	deadline := time.Now().Add(3 * time.Second)
	for {
		if s, _ := g.Stats(); s.Feedback.Applied > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("block verdict not applied within 3s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	quiesce(t, g, sent)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	final, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := os.RemoveAll(pinPath); err != nil {
			t.Errorf("remove pins: %v", err)
		}
		if _, err := os.Stat(pinPath); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("pins left at %s: %v", pinPath, err)
		}
	}()

	ps, err := ReadPins(pinPath)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Seen != final.XDPSeen || ps.Dropped != final.XDPDrops || ps.NotForUs != final.NotForUs ||
		ps.Survivors != final.Survivors || ps.Seen != sent {
		t.Errorf("pins: seen %d dropped %d not_for_us %d survivors %d; gateway: %d %d %d %d; sent %d",
			ps.Seen, ps.Dropped, ps.NotForUs, ps.Survivors, final.XDPSeen, final.XDPDrops, final.NotForUs, final.Survivors, sent)
	}
	for r := bpf.Reason(0); r < bpf.ReasonMax; r++ {
		want := final.XDP[r]
		if r.Terminal() {
			if got := ps.Packets[r.String()]; got.Packets != want.Packets || got.Bytes != want.Bytes {
				t.Errorf("reason %v: pins %+v, gateway %+v", r, got, want)
			}
		} else if got := ps.Events[r.String()]; got != want.Packets {
			t.Errorf("event %v: pins %d, gateway %d", r, got, want.Packets)
		}
	}
	if ps.Blocklist.Live != 1 {
		t.Errorf("blocklist %+v, want 1 live entry", ps.Blocklist)
	}
	var text bytes.Buffer
	if err := ps.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"seen " + strconv.FormatUint(sent, 10) + " = xdp_dropped", "blocklist: 1 live", "by reason:"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
	t.Logf("\n%s", text.String())
}
