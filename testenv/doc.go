// Package testenv builds throw-away test hosts for integration tests, the
// demo and the benchmark harness: network namespaces joined by veth pairs
// with several RX queues and addresses from the benchmarking ranges
// 198.18.0.0/15 and 2001:2::/48.
//
// Lifetimes. A [Pair] owns its namespaces and its veth pair. [New] registers
// Close with t.Cleanup, so a test that fails or calls t.Fatal still removes
// everything; [NewPair] is for programs (xgate demo, xgate bench) and
// hands Close to the caller. Close deletes the veth explicitly (a socket
// left open in a namespace would otherwise keep the namespace, and with it
// the link, alive) and then unmounts the named namespaces.
//
// Names. Namespaces are named xgate-test-<pid>-<counter>-<random>-<side> and
// show up in `ip netns list`; link names are short (IFNAMSIZ) and carry the
// same xgate-test-… tag in their alias (`ip -d link` shows it). [Sweep]
// removes namespaces and root-namespace links whose creating process is
// gone, which is what a test needs after a crashed run; NewPair runs it once
// per process.
//
// Concurrency. A Pair's methods may be used from several goroutines, except
// Close, which must not race with anything else on the Pair. Code passed to
// [Host.Do] runs on a dedicated, locked OS thread that is switched into the
// host's namespace; it must not call runtime.LockOSThread or
// runtime.UnlockOSThread itself, and goroutines it starts run in the
// namespace of whatever thread the scheduler gives them, not the host's.
// File descriptors created inside Do keep their namespace after Do returns.
//
// Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for mount).
package testenv
