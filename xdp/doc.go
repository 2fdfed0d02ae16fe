// Package xdp is AF_XDP in pure Go (golang.org/x/sys/unix): a UMEM, the
// fill, completion, RX and TX rings, bind flags, need-wakeup, statistics.
// It knows nothing about JSON, rules or the BPF objects: the gateway loads
// the XDP program (package bpf), opens one Socket per RX queue here, and
// registers each Socket's FD in the program's XSKMAP.
//
// # Memory
//
// Each Socket has its own UMEM: an anonymous, page-aligned mmap of
// Config.Frames RX frames followed by Config.TxFrames TX frames, each
// FrameSize bytes (aligned mode). The two pools never mix: an RX frame is
// only ever in the fill ring, the kernel, the RX ring, the caller's hands
// or our free stack; a TX frame only on the TX free stack, the TX ring or
// the kernel (until the completion ring gives it back). See the frame*
// states in socket_linux.go for why an address is never handed out twice.
//
// The XDP program writes struct xgate_meta (16 bytes: rx_ns, magic) with
// bpf_xdp_adjust_meta right in front of the packet. The kernel keeps
// XDP_PACKET_HEADROOM (256 bytes) plus Config.Headroom in front of the
// packet in every frame and copies the metadata along in copy mode, so the
// metadata is found at descriptor address - MetaSize, inside the frame.
// Where the kernel refuses that helper the program writes the same 16
// bytes as a prefix header that is part of the frame (Config.PrefixStamp):
// the descriptor starts at the header and Receive strips it, so Frame.Data
// is the packet from its Ethernet header on either way.
//
// # Rings
//
// See ring: single producer, single consumer, indices shared with the
// kernel read and written only through sync/atomic, cached copies of the
// other side's index, batches published with one atomic store.
//
// # Receiving
//
// A worker calls Receive for a batch of Frames (views into the UMEM, never
// copies), works on them, and calls Release when nothing refers to them any
// more. Release puts them back into the fill ring in one batch. Receive
// sleeps in poll(2) only when the RX ring is empty (after spinning for
// Config.Spin, or never: it spins with Config.BusyPoll), and kicks the
// kernel for the fill ring only when the ring's need-wakeup flag asks
// (zero-copy drivers; in copy mode it never does).
//
// # Closing
//
// Close may run while the worker sleeps in poll: an eventfd in the poll set
// wakes it, and an in-flight reference count makes Close wait for every
// call to leave before it unmaps anything. Frames the caller still holds
// keep the UMEM mapped until they are Released.
//
// # Errors
//
// No errno panics. EINTR is retried; EAGAIN, EBUSY, ENOBUFS and ENETDOWN on
// kicks are transient; EBUSY at Open (a socket that was just closed still
// holds the queue) is retried with backoff.
package xdp
