// Package bpf holds xgate's eBPF programs, their bpf2go bindings and typed
// helpers around their maps.
//
// Programs (C in this directory, compiled by `make generate`):
//
//   - xdp.c: the XDP ingest program (load with [LoadXDP]); parses Ethernet,
//     VLAN, IPv4/IPv6 and UDP, keeps what is for our listen ports, drops
//     blocked and over-rate sources, stamps survivors and redirects them to
//     the queue's AF_XDP socket or passes them to the stack. Every packet is
//     counted under exactly one terminal [Reason].
//   - reuseport.c: the sk_reuseport program for the socket path (load with
//     [LoadReuseport]); keeps a datagram on the NUMA node that received it.
//   - probes*.c: latency and drop probes (their own loader).
//
// Shared C types live in xgate.h and reach Go through bpf2go -type
// (XdpXgate*, ReuseportXgate*), so the two sides cannot drift.
//
// Lifetimes and concurrency: an [XDP] or [Reuseport] owns its program and
// map file descriptors until Close. Its methods may be called from several
// goroutines: map updates are single syscalls and the kernel serialises
// them; methods that read-modify-write shared state (SetNodeSockets) take
// a mutex. Close does not unpin: call Unpin on a clean stop when the pins
// should go too (DESIGN invariant 4), skip it to keep state across restarts.
//
// The blocklist map is the source of truth, but the XDP program asks a
// prefilter (xgate_bfilter) first, which only [XDP.Block] and [XDP.Unblock]
// keep in step: after writing the pinned blocklist with other tools, call
// [XDP.SyncBlockFilter]. One process at a time should write the blocklist.
//
// Clock: the programs use bpf_ktime_get_ns (CLOCK_MONOTONIC; the token
// bucket may run on jiffies instead, see [Config].FineClock); use [Ktime]
// for userspace timestamps that are compared with theirs.
package bpf
