//go:build ignore

/* reuseport.c — keep a datagram on the NUMA node that received it.
 *
 * Attached to the SO_REUSEPORT group of the socket path. The sockets live in
 * a REUSEPORT_SOCKARRAY laid out by node: node n owns slots
 * [n*per_node, n*per_node + count[n]), and within the node the flow hash
 * picks the socket, so one flow always lands on the same socket. Anything
 * that cannot be placed falls back to the kernel's own choice (SK_PASS
 * without a selection) and is counted by reason.
 */
#include "xgate_uapi.h"
#include <bpf_helpers.h>
#include "xgate.h"

char __license[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, 256); /* resized by the loader: nodes * per_node */
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_rp_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xgate_rp_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_rp_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XGATE_RP__MAX);
	__type(key, __u32); /* enum xgate_rp_reason; array keys must be plain ints */
	__type(value, struct xgate_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_rp_stats SEC(".maps");

/* BTF anchor for the reason enum (bpf2go -type); never loaded. */
const enum xgate_rp_reason xgate_rp_reason_layout __attribute__((unused)) = XGATE_RP__MAX;

static __always_inline int done(__u32 reason, __u32 len)
{
	struct xgate_counter *c = bpf_map_lookup_elem(&xgate_rp_stats, &reason);

	if (c) {
		c->packets++;
		c->bytes += len;
	}
	return SK_PASS;
}

SEC("sk_reuseport")
int xgate_reuseport(struct sk_reuseport_md *md)
{
	__u32 zero = 0, node, n, slot;
	struct xgate_rp_config *cfg;

	cfg = bpf_map_lookup_elem(&xgate_rp_cfg, &zero);
	if (!cfg)
		return done(XGATE_RP_NO_CONFIG, md->len);

	node = bpf_get_numa_node_id();
	if (node >= XGATE_RP_MAX_NODES)
		return done(XGATE_RP_NODE_UNKNOWN, md->len);

	n = cfg->count[node];
	if (n == 0 || n > cfg->per_node)
		return done(XGATE_RP_NODE_EMPTY, md->len);

	slot = node * cfg->per_node + md->hash % n;
	/* -ENOENT when the slot is empty (a socket closed): kernel's choice. */
	if (bpf_sk_select_reuseport(md, &xgate_rp_socks, &slot, 0) != 0)
		return done(XGATE_RP_SLOT_EMPTY, md->len);
	return done(XGATE_RP_SELECTED, md->len);
}
