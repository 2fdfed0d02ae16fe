//go:build ignore

/* trivial.c — test-only floor for BenchmarkXDP: bump one per-CPU counter
 * and pass. What it costs is the BPF_PROG_TEST_RUN machinery, not xgate. */
#include "xgate_uapi.h"
#include <bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} trivial_count SEC(".maps");

SEC("xdp")
int xgate_trivial(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&trivial_count, &zero);

	if (c)
		(*c)++;
	return XDP_PASS;
}
