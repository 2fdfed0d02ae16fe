package xdp

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/xgate/xgate/bpf"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string // "" = valid
	}{
		{"zero value", Config{}, ""},
		{"2048 frames", Config{FrameSize: 2048}, ""},
		{"small rings", Config{FrameSize: 2048, FillSize: 64, RxSize: 64, Frames: 64}, ""},
		{"tx", Config{TxSize: 256}, ""},
		{"tx frames below ring", Config{TxSize: 256, TxFrames: 100}, ""},
		{"headroom", Config{Headroom: 256}, ""},
		{"busy poll with timeout", Config{BusyPoll: true, PollTimeout: time.Millisecond}, ""},
		{"frame size 1024", Config{FrameSize: 1024}, "FrameSize"},
		{"frame size 3000", Config{FrameSize: 3000}, "FrameSize"},
		{"frame size 8192", Config{FrameSize: 8192}, "FrameSize"},
		{"fill not power of two", Config{FillSize: 1000}, "FillSize"},
		{"rx not power of two", Config{RxSize: 3}, "RxSize"},
		{"tx not power of two", Config{TxSize: 100}, "TxSize"},
		{"completion not power of two", Config{CompletionSize: 65}, "CompletionSize"},
		{"ring too large", Config{RxSize: 1 << 21}, "RxSize"},
		{"frames below fill", Config{FillSize: 4096, Frames: 4095}, "Frames"},
		{"tx frames without ring", Config{TxFrames: 16}, "TxFrames"},
		{"completion below tx frames", Config{TxSize: 256, CompletionSize: 128}, "CompletionSize"},
		{"headroom unaligned", Config{Headroom: 12}, "Headroom"},
		{"headroom too big", Config{FrameSize: 2048, Headroom: 2048 - 256 - 32}, "Headroom"},
		{"umem too big", Config{FillSize: 1 << 20, Frames: 1 << 23}, "Frames"},
		{"bind mode", Config{Bind: 7}, "Bind"},
		{"negative timeout", Config{PollTimeout: -time.Second}, "PollTimeout"},
		{"spin", Config{Spin: 50 * time.Microsecond, PollTimeout: time.Second}, ""},
		{"negative spin", Config{Spin: -time.Microsecond}, "Spin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("valid config rejected: %v", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("want a ConfigError for %s, got %v", tc.field, err)
			}
			if ce.Field != tc.field {
				t.Fatalf("error names %s, want %s: %v", ce.Field, tc.field, err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	if c.FrameSize != 4096 || c.FillSize != 4096 || c.RxSize != 4096 || c.Frames != 8192 ||
		c.TxSize != 0 || c.TxFrames != 0 || c.CompletionSize != DefaultCompletionSize || c.BusyRetry != DefaultBusyRetry {
		t.Errorf("defaults: %+v", c)
	}
	c = Config{TxSize: 512, TxFrames: 300}.WithDefaults()
	if c.CompletionSize != 512 {
		t.Errorf("completion for 300 TX frames: %d, want 512", c.CompletionSize)
	}
	if got := (Config{FrameSize: 2048, Headroom: 64}).MaxPacket(); got != 2048-256-64 {
		t.Errorf("MaxPacket = %d", got)
	}
}

// TestMetaLayout ties MetaSize to the Go mirror of struct xgate_meta that
// bpf2go generates from bpf/xgate.h (the magic is checked on live frames
// by TestReceiveQueues).
func TestMetaLayout(t *testing.T) {
	if n := binary.Size(bpf.XdpXgateMeta{}); n != MetaSize {
		t.Fatalf("struct xgate_meta is %d bytes, MetaSize %d", n, MetaSize)
	}
}
