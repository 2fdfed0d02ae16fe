package xdp

import (
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// ErrInvalidConfig is matched (errors.Is) by every *ConfigError.
var ErrInvalidConfig = errors.New("invalid AF_XDP config")

// ConfigError names the Config field that is wrong and why. It is returned
// by Config.Validate and by Open before any system call is made.
type ConfigError struct {
	Field  string
	Value  any
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("xdp config: %s = %v: %s", e.Field, e.Value, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// BindMode is how a socket binds to its queue: what Config.Bind asks for
// (BindAuto: zero-copy, else copy) and what Socket.Mode says the kernel did
// (BindCopy or BindZeroCopy).
type BindMode int

const (
	// BindAuto tries XDP_ZEROCOPY first and falls back to XDP_COPY.
	BindAuto BindMode = iota
	// BindCopy binds in copy mode only (XDP_COPY).
	BindCopy
	// BindZeroCopy binds in zero-copy mode only (XDP_ZEROCOPY); Open fails
	// where the driver cannot (veth, for one).
	BindZeroCopy
)

func (m BindMode) String() string {
	switch m {
	case BindAuto:
		return "auto"
	case BindCopy:
		return "copy"
	case BindZeroCopy:
		return "zerocopy"
	}
	return fmt.Sprintf("BindMode(%d)", int(m))
}

// Sizes the kernel and this package agree on.
const (
	// MetaSize is the size of the metadata the XDP program writes right in
	// front of a redirected frame (struct xgate_meta in bpf/xgate.h).
	MetaSize = 16
	// MetaMagic marks metadata as ours and complete (XGATE_META_MAGIC).
	MetaMagic = 0x58474d31
	// metaV6 is XGATE_META_V6 of struct xgate_meta's flags.
	metaV6 = 1
	// PacketHeadroom is XDP_PACKET_HEADROOM: the kernel keeps this much room
	// in front of the packet data of every frame, in copy and zero-copy
	// mode. bpf_xdp_adjust_meta carves the metadata out of it, so the
	// metadata always lies inside the frame, at data address - MetaSize,
	// whatever Config.Headroom is.
	PacketHeadroom = 256
	// minPacket is the smallest frame that must fit behind the headrooms.
	minPacket = 64
	// maxRingSize bounds every ring (entries); the kernel only asks for a
	// power of two, the bound keeps the mappings and the UMEM sane.
	maxRingSize = 1 << 20
	// maxUmemBytes bounds the UMEM (RX and TX frames together).
	maxUmemBytes = 16 << 30
)

// Defaults filled in by Config.WithDefaults for zero fields. The ring sizes
// are what kept a poll()-sleeping reader from dropping at full rate on
// this project's hosts (BENCHMARKS.md, "Why the defaults").
const (
	DefaultFrameSize = 4096
	DefaultRingSize  = 4096
	// DefaultCompletionSize is the completion ring of an RX-only socket:
	// the kernel insists on one even when nothing is ever sent.
	DefaultCompletionSize = 64
	DefaultBusyRetry      = 2 * time.Second
)

// Config shapes one AF_XDP socket and its UMEM. The zero value is usable:
// WithDefaults fills it in (4096-byte frames, 4096-entry fill and RX rings,
// 8192 RX frames = 32 MiB of UMEM, no TX, auto bind, Receive sleeping in
// poll until a frame or Close).
type Config struct {
	// FrameSize is the UMEM chunk size: 2048 or 4096 (aligned mode). The
	// largest packet a frame holds is FrameSize - PacketHeadroom - Headroom.
	FrameSize uint32
	// Frames is the number of RX frames in the UMEM; at least FillSize.
	// Default FillSize + RxSize, so the fill ring can be full while the RX
	// ring is full and nothing is lost for want of frames.
	Frames uint32
	// FillSize and RxSize are the fill and RX ring sizes (powers of two).
	FillSize uint32
	RxSize   uint32
	// TxSize is the TX ring size (power of two); 0 means no TX ring and
	// Transmit returns ErrNoTx.
	TxSize uint32
	// TxFrames is the number of TX frames, a pool separate from the RX
	// frames; default TxSize. Must be 0 without a TX ring.
	TxFrames uint32
	// CompletionSize is the completion ring size (power of two), at least
	// TxFrames so a completion always has a slot; default TxFrames rounded
	// up to a power of two, or DefaultCompletionSize for an RX-only socket.
	CompletionSize uint32
	// Headroom is extra room XDP_UMEM_REG keeps in front of every frame's
	// data, beyond PacketHeadroom; a multiple of 8 so the metadata stays
	// 8-byte aligned. Default 0: the metadata needs none of it.
	Headroom uint32
	// Bind picks zero-copy, copy, or the first of the two that works.
	Bind BindMode
	// NoNeedWakeup binds without XDP_USE_NEED_WAKEUP: the kernel then never
	// asks for a wakeup, and TX is kicked on every Transmit. For kernels or
	// drivers that refuse the flag (bpf.FeatAFXDPNeedWakeup switched off).
	NoNeedWakeup bool
	// BusyPoll makes Receive spin on the RX ring instead of sleeping in
	// poll(2) when the ring is empty (a system call is made only when the
	// fill ring asks for a wakeup). It burns the worker's CPU.
	BusyPoll bool
	// Spin makes Receive spin on an empty RX ring for up to this long
	// before it sleeps in poll(2) (without BusyPoll): a worker that gets
	// a batch at least every Spin never pays for a wakeup (tens of µs,
	// more on a virtual CPU that halted), one that is idle still sleeps.
	// It costs up to Spin of CPU per wait. 0: sleep at once.
	Spin time.Duration
	// PollTimeout bounds how long one Receive waits for frames when the RX
	// ring is empty: 0 waits until frames arrive or the socket is closed;
	// after a positive timeout Receive returns (0, nil).
	PollTimeout time.Duration
	// PlaceNUMA binds the UMEM's pages to NUMANode (mbind, MPOL_PREFERRED,
	// before XDP_UMEM_REG faults and pins them), so the frames live next to
	// the CPU that serves the queue. Off: the kernel's default placement
	// (the node of the thread that registers the UMEM).
	PlaceNUMA bool
	NUMANode  int
	// PrefixStamp says the XDP program hands each frame over with its
	// 16-byte stamp (struct xgate_meta) as a prefix header in front of the
	// Ethernet header instead of as XDP metadata (bpf.StampPrefix; the
	// layouts are drawn in bpf/xgate.h). Receive then reads the stamp from
	// the frame's first MetaSize bytes and hands out the packet behind it.
	// It must match the program, or every frame is misread.
	PrefixStamp bool
	// BusyRetry is how long Open keeps retrying when the kernel answers
	// EBUSY (the queue still holds a socket that was just closed), with
	// exponential backoff; 0 means DefaultBusyRetry, negative no retry.
	BusyRetry time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.FrameSize == 0 {
		c.FrameSize = DefaultFrameSize
	}
	if c.FillSize == 0 {
		c.FillSize = DefaultRingSize
	}
	if c.RxSize == 0 {
		c.RxSize = DefaultRingSize
	}
	if c.Frames == 0 {
		c.Frames = c.FillSize + c.RxSize
	}
	if c.TxFrames == 0 {
		c.TxFrames = c.TxSize
	}
	if c.CompletionSize == 0 {
		c.CompletionSize = DefaultCompletionSize
		if c.TxFrames > 0 {
			c.CompletionSize = ceilPow2(c.TxFrames)
		}
	}
	if c.BusyRetry == 0 {
		c.BusyRetry = DefaultBusyRetry
	}
	return c
}

// Validate checks c as Open will use it (after WithDefaults) without any
// system call. Errors are *ConfigError and match ErrInvalidConfig.
func (c Config) Validate() error {
	c = c.WithDefaults()
	bad := func(field string, v any, why string) error {
		return &ConfigError{Field: field, Value: v, Reason: why}
	}
	if c.FrameSize != 2048 && c.FrameSize != 4096 {
		return bad("FrameSize", c.FrameSize, "must be 2048 or 4096")
	}
	if c.PlaceNUMA && (c.NUMANode < 0 || c.NUMANode >= maxNUMANodes) {
		return bad("NUMANode", c.NUMANode, fmt.Sprintf("must be 0..%d", maxNUMANodes-1))
	}
	for _, r := range []struct {
		name string
		v    uint32
	}{{"FillSize", c.FillSize}, {"RxSize", c.RxSize}, {"CompletionSize", c.CompletionSize}, {"TxSize", c.TxSize}} {
		if r.name == "TxSize" && r.v == 0 {
			continue
		}
		if r.v&(r.v-1) != 0 {
			return bad(r.name, r.v, "must be a power of two")
		}
		if r.v > maxRingSize {
			return bad(r.name, r.v, fmt.Sprintf("must be at most %d", maxRingSize))
		}
	}
	if c.Frames < c.FillSize {
		return bad("Frames", c.Frames, fmt.Sprintf("must be at least FillSize (%d)", c.FillSize))
	}
	if c.TxSize == 0 && c.TxFrames != 0 {
		return bad("TxFrames", c.TxFrames, "needs a TX ring (TxSize > 0)")
	}
	if c.TxFrames > c.CompletionSize {
		return bad("CompletionSize", c.CompletionSize, fmt.Sprintf("must be at least TxFrames (%d)", c.TxFrames))
	}
	if c.Headroom%8 != 0 {
		return bad("Headroom", c.Headroom, "must be a multiple of 8")
	}
	if uint64(c.Headroom)+PacketHeadroom+minPacket > uint64(c.FrameSize) {
		return bad("Headroom", c.Headroom, fmt.Sprintf("leaves less than %d bytes of a %d-byte frame for the packet", minPacket, c.FrameSize))
	}
	if total := (uint64(c.Frames) + uint64(c.TxFrames)) * uint64(c.FrameSize); total > maxUmemBytes {
		return bad("Frames", c.Frames, fmt.Sprintf("UMEM of %d bytes exceeds %d", total, uint64(maxUmemBytes)))
	}
	switch c.Bind {
	case BindAuto, BindCopy, BindZeroCopy:
	default:
		return bad("Bind", c.Bind, "unknown bind mode")
	}
	if c.PollTimeout < 0 {
		return bad("PollTimeout", c.PollTimeout, "must not be negative")
	}
	if c.Spin < 0 {
		return bad("Spin", c.Spin, "must not be negative")
	}
	return nil
}

// MaxPacket is the largest packet (Ethernet header included) a frame of c
// can hold; longer ones are dropped by the kernel (counted in RxDropped).
// With PrefixStamp the stamp header takes MetaSize of it.
func (c Config) MaxPacket() int {
	c = c.WithDefaults()
	n := int(c.FrameSize) - PacketHeadroom - int(c.Headroom)
	if c.PrefixStamp {
		n -= MetaSize
	}
	return n
}

func ceilPow2(v uint32) uint32 {
	if v <= 1 {
		return 1
	}
	return 1 << bits.Len32(v-1)
}
