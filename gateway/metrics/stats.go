package metrics

import (
	"time"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/sink"
)

// Stats is a snapshot of everything the gateway counts. The accounting
// identity counts datagrams (frames at the XDP program), never events:
//
//	frames seen by XDP = XDPDrops + NotForUs + Survivors
//	Survivors + Reassembled = NoSocket + KernelDrops + SocketDrops + RingDrops
//	                          + BadFrames + Rejected + Decided
//
// so Seen = Accounted() and Unaccounted() = 0 on any traffic. Which terms a
// path has (Identity): afxdp — survivors are redirected frames; NoSocket
// the ones on a queue without an AF_XDP socket (passed to a stack where
// nothing of ours listens); RingDrops and BadFrames the AF_XDP losses.
// socket — survivors pass to our socket group; Reassembled are datagrams
// the kernel rebuilt from fragments (which XDP counted as not ours);
// KernelDrops the kernel's drops of datagrams to our ports in our
// namespace after XDP (the kfree_skb probe; receive-buffer drops are
// SocketDrops); KernelDropsKnown says whether the probe runs. plain — no
// XDP: what arrived at our sockets = SocketDrops + Rejected + Decided.
// Events (and their decode errors) are reported beside the identity.
type Stats struct {
	Path     config.Mode
	Identity config.Mode    // the identity's form: afxdp | socket | plain
	XDPMode  bpf.AttachMode // native | generic | "" without XDP
	Uptime   time.Duration

	XDP       bpf.Counters // by reason; zero without XDP
	XDPSeen   uint64       // every packet the XDP program saw
	XDPDrops  uint64       // dropped in XDP: malformed, blocked, over the bucket, not JSON, not served
	NotForUs  uint64       // passed to the stack: not IP/UDP, other ports, fragments, v6 extension headers, other groups and addresses
	Survivors uint64       // passed to our sockets or redirected to AF_XDP

	NoSocket         uint64 // afxdp: survivors on a queue without an AF_XDP socket
	Reassembled      uint64 // socket paths: datagrams reassembled from fragments
	KernelDrops      uint64 // socket: datagrams to our ports the stack dropped after XDP
	KernelDropsKnown bool   // the kfree_skb probe runs (socket path)
	SocketDrops      uint64 // dropped by the kernel at our sockets (receive buffer full)
	RingDrops        uint64 // dropped at the AF_XDP rings (rx ring full, no fill frames)
	BadFrames        uint64 // afxdp: redirected frames the worker could not parse

	// WorkerBusy is each worker's busy time (index: worker id, the
	// queue or socket it serves): from a batch in hand to done with it,
	// not waiting. Events over busy time is the capacity of the workers.
	WorkerBusy []time.Duration
	// WorkerBusyCPU is each worker thread's CPU time on those batches
	// (estimated per datagram from every 64th batch, see the gateway's
	// busyMeter): unlike WorkerBusy it leaves out the time the thread
	// waited preempted, so events over it is the capacity whatever else
	// ran on the CPU. It only grows and never passes WorkerBusy.
	WorkerBusyCPU []time.Duration

	Datagrams uint64 // received by the workers = BadFrames + Rejected + Decided
	Rejected  uint64 // datagrams none of whose events decoded
	Decided   uint64 // datagrams with at least one event decided

	Engine   engine.Stats // events, their verdicts and decode errors: beside the identity
	Feedback FeedbackStats
	Sinks    []sink.Stats
}

// FeedbackStats counts what happened to block verdicts.
type FeedbackStats struct {
	Requested  uint64 // block verdicts with a source address
	Applied    uint64 // written into the XDP blocklist
	Deduped    uint64 // the source was blocked long enough already
	RingFull   uint64 // dropped: the feedback ring was full
	OverLimit  uint64 // dropped: block_max sources are blocked already
	Failed     uint64 // the map update failed
	Unenforced uint64 // no XDP program (plain mode): the event was dropped, the source not blocked
	Refused    uint64 // the source is in a never_block list: not blocked
	Swept      uint64 // expired blocks removed from the blocklist
}

// Accounted is the right-hand side of the identity, in frames: what the
// XDP program dropped or passed as not ours, and where every survivor
// went (a reassembled datagram stands for fragments XDP passed as not
// ours, so it is taken off once).
func (s *Stats) Accounted() uint64 {
	return s.XDPDrops + s.NotForUs + s.NoSocket + s.KernelDrops + s.SocketDrops + s.RingDrops + s.BadFrames +
		s.Rejected + s.Decided - s.Reassembled
}

// Seen is the left-hand side: frames the XDP program saw, or in plain
// mode what arrived at our sockets (received or dropped there).
func (s *Stats) Seen() uint64 {
	if s.Identity == config.ModePlain {
		return s.Datagrams + s.SocketDrops
	}
	return s.XDPSeen
}

// Unaccounted is Seen − Accounted: 0 when every frame is in exactly one
// term. Between two readings of a running gateway it may be off by what
// is in flight (a batch per worker); after Stop it is exact.
func (s *Stats) Unaccounted() int64 { return int64(s.Seen()) - int64(s.Accounted()) }

// EventsPerDatagram is the mean events (decided or rejected) per decided or
// rejected datagram.
func (s *Stats) EventsPerDatagram() float64 {
	if s.Datagrams == 0 {
		return 0
	}
	return float64(s.Engine.Events+s.Engine.DecodeErrorTotal()) / float64(s.Datagrams)
}

// Accounting holds the terms of the identity
// seen = xdp_dropped + not_for_us + socket_dropped + ring_dropped + decode_errors + events.
type Accounting struct {
	// Identity names the form of the identity (afxdp, socket or plain):
	// which terms the path has (see Stats).
	Identity config.Mode `json:"identity"`
	// Seen: frames the XDP program saw; plain: datagrams that arrived at
	// our sockets (received or dropped there).
	Seen          uint64 `json:"seen"`
	XDPDropped    uint64 `json:"xdp_dropped"`
	NotForUs      uint64 `json:"not_for_us"`
	NoSocket      uint64 `json:"no_socket"`      // afxdp: survivors on a queue without an AF_XDP socket
	KernelDropped uint64 `json:"kernel_dropped"` // socket: the stack's drops after XDP (kfree_skb probe)
	SocketDropped uint64 `json:"socket_dropped"`
	RingDropped   uint64 `json:"ring_dropped"`
	BadFrames     uint64 `json:"bad_frames"`
	Rejected      uint64 `json:"rejected"` // datagrams none of whose events decoded
	Decided       uint64 `json:"decided"`  // datagrams with an event decided
	Reassembled   uint64 `json:"reassembled"`
	Accounted     uint64 `json:"accounted"`   // the sum of the terms, less reassembled
	Unaccounted   int64  `json:"unaccounted"` // seen − accounted: 0
	// KernelDropsKnown: the kfree_skb probe runs (socket path); without it
	// the stack's drops after XDP are not seen and show as unaccounted.
	KernelDropsKnown bool `json:"kernel_drops_known"`
	// Beside the identity: events (and their decode errors) in the
	// datagrams decided or rejected.
	Events            uint64  `json:"events"`
	DecodeErrors      uint64  `json:"decode_errors"`
	EventsPerDatagram float64 `json:"events_per_datagram"`
}

// Term is one term of the accounting identity.
type Term struct {
	Name string
	V    uint64
}

// Terms lists the identity's right-hand side, in order (reassembled is
// taken off, the others added).
func (a Accounting) Terms() []Term {
	return []Term{{"xdp_dropped", a.XDPDropped}, {"not_for_us", a.NotForUs}, {"no_socket", a.NoSocket},
		{"kernel_dropped", a.KernelDropped}, {"socket_dropped", a.SocketDropped}, {"ring_dropped", a.RingDropped},
		{"bad_frames", a.BadFrames}, {"rejected", a.Rejected}, {"decided", a.Decided}, {"reassembled", a.Reassembled}}
}

// AccountingOf arranges s as /status and xgate stats show it.
func AccountingOf(s *Stats) Accounting {
	return Accounting{Identity: s.Identity, Seen: s.Seen(), XDPDropped: s.XDPDrops, NotForUs: s.NotForUs,
		NoSocket: s.NoSocket, KernelDropped: s.KernelDrops, SocketDropped: s.SocketDrops, RingDropped: s.RingDrops,
		BadFrames: s.BadFrames, Rejected: s.Rejected, Decided: s.Decided, Reassembled: s.Reassembled,
		Accounted: s.Accounted(), Unaccounted: s.Unaccounted(), KernelDropsKnown: s.KernelDropsKnown,
		Events: s.Engine.Events, DecodeErrors: s.Engine.DecodeErrorTotal(), EventsPerDatagram: s.EventsPerDatagram()}
}
