//go:build ignore

/* loadgen.c — the load generator's programs (tools/loadgen).
 *
 * loadgen_tx runs in BPF_PROG_RUN live-frames mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES) with ingress_ifindex = the sending veth:
 * every repetition returns XDP_TX, which the test runner turns into a
 * redirect out of that veth, so the frame reaches the peer through
 * ndo_xdp_xmit. It counts each frame it hands over, per CPU, so the
 * generator knows exactly how many went out even when a test run stops
 * part-way (EINTR, an error).
 *
 * loadgen_pass is a pass-through program for a receiving veth that has no
 * XDP program of its own (plain mode): veth drops frames sent to it with
 * ndo_xdp_xmit unless its end has one. It counts what it sees.
 *
 * loadgen_drop counts (in the same map) and drops: a receiver that costs
 * next to nothing, to measure the generator itself. */
#include "vmlinux.h"
#include <bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} loadgen_tx_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} loadgen_rx_count SEC(".maps");

static __always_inline void bump(void *map)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(map, &zero);

	if (c)
		(*c)++;
}

SEC("xdp")
int loadgen_tx(struct xdp_md *ctx)
{
	bump(&loadgen_tx_count);
	return XDP_TX;
}

SEC("xdp")
int loadgen_pass(struct xdp_md *ctx)
{
	bump(&loadgen_rx_count);
	return XDP_PASS;
}

SEC("xdp")
int loadgen_drop(struct xdp_md *ctx)
{
	bump(&loadgen_rx_count);
	return XDP_DROP;
}
