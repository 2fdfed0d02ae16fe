//go:build ignore

/* xdp.c — the xgate ingest program (one XDP program, every branch counted).
 *
 * Per packet: parse Ethernet, up to two VLAN tags, IPv4 (with options) or
 * IPv6, UDP; not for us → XDP_PASS; source blocked → XDP_DROP; source over
 * its token bucket → XDP_DROP; payload not JSON (optional) → XDP_DROP;
 * survivors are stamped and redirected to the queue's AF_XDP socket (AF_XDP
 * mode) or passed to the stack (socket mode). Each packet increments exactly
 * one terminal reason of enum xgate_reason in the per-CPU counters.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include <bpf_endian.h>
#include "xgate.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define ETH_P_IP     0x0800
#define ETH_P_IPV6   0x86DD
#define ETH_P_8021Q  0x8100
#define ETH_P_8021AD 0x88A8
#define IP_MF        0x2000
#define IP_OFFSET    0x1FFF
#define XGATE_MAX_VLANS 2
#define XGATE_CAS_TRIES 4
#define XGATE_BLANKS_MAX 16

/* ---- maps (names ≤ 15 chars; pinned by name when the loader has a pin path) ---- */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XGATE_R__MAX);
	__type(key, __u32); /* enum xgate_reason; array keys must be plain ints */
	__type(value, struct xgate_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xgate_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_cfg SEC(".maps");

/* Listen set: a bitmap of UDP destination ports (struct xgate_port_set). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xgate_port_set);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct xgate_src_key);
	__type(value, struct xgate_block);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_blocklist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct xgate_src_key);
	__type(value, struct xgate_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_buckets SEC(".maps");

/* AF_XDP sockets by RX queue index; max_entries is resized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xgate_cost);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_cost_ns SEC(".maps");

/* BTF anchors: types that are no map's key or value but that Go needs
 * (bpf2go -type): the metadata layout and the reason enum. Unused .rodata
 * constants keep them in the object's BTF; the loader does not load them. */
const struct xgate_meta xgate_meta_layout __attribute__((unused)) = {};
const enum xgate_reason xgate_reason_layout __attribute__((unused)) = XGATE_R__MAX;

/* ---- helpers ---- */

static __always_inline void count(__u32 reason, __u64 bytes)
{
	struct xgate_counter *c = bpf_map_lookup_elem(&xgate_counters, &reason);

	/* Per-CPU slot and XDP runs with preemption (softirq) off: plain ++. */
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* Blocklisted and not expired? An expired entry is left in place (the
 * userspace owner renews or removes it, LRU ages it out) and counted. */
static __always_inline int is_blocked(const struct xgate_src_key *src, __u64 now, __u64 len)
{
	struct xgate_block *b = bpf_map_lookup_elem(&xgate_blocklist, src);

	if (!b)
		return 0;
	if (now < b->expires_ns)
		return 1;
	count(XGATE_EV_BLOCK_EXPIRED, len);
	return 0;
}

/* Token bucket as GCRA (generic cell rate algorithm), shared by all CPUs.
 *
 * State is one u64 per source, the theoretical arrival time (TAT). A packet
 * at `now` conforms if max(TAT, now) + interval - now <= limit (= burst *
 * interval); then TAT advances by one interval. The whole state is one word,
 * so a compare-and-swap makes admission exact across CPUs: a source hitting
 * several RX queues cannot be admitted twice for one token, and no token is
 * lost (a CPU that loses the CAS re-reads the TAT the winner wrote and
 * decides again). We chose CAS over bpf_spin_lock in the value because the
 * lock needs a separate lock word, is not allowed in every map/program
 * combination on older kernels, and costs a lock+unlock even uncontended,
 * while the CAS is one locked instruction on the common path.
 *
 * Retries are bounded (XGATE_CAS_TRIES). Every lost CAS means another CPU
 * just admitted a packet of the same source, so running out of retries means
 * the source is being admitted at line rate on several queues at once: we
 * fail closed — XDP_DROP counted as XGATE_R_BUCKET_CONTENDED, never admitted
 * without a token. Each retry is counted (XGATE_EV_BUCKET_CAS_RETRY).
 *
 * Returns the terminal reason on drop, or XGATE_R__TERMINAL to admit.
 */
static __always_inline __u32 bucket_admit(const struct xgate_src_key *src,
					  const struct xgate_config *cfg, __u64 now)
{
	__u64 interval = cfg->bucket_interval_ns;
	__u64 limit = cfg->bucket_limit_ns;
	struct xgate_bucket *b;

	if (!interval)
		return XGATE_R__TERMINAL;

	b = bpf_map_lookup_elem(&xgate_buckets, src);
	if (!b) {
		/* First packet of the source: a full bucket minus this packet. */
		struct xgate_bucket fresh = { .tat_ns = now + interval };

		if (bpf_map_update_elem(&xgate_buckets, src, &fresh, BPF_NOEXIST) == 0)
			return XGATE_R__TERMINAL;
		/* Another CPU created it first (or the LRU could not allocate):
		 * decide against the entry that is there now. */
		b = bpf_map_lookup_elem(&xgate_buckets, src);
		if (!b)
			return XGATE_R_BUCKET_CONTENDED;
	}

	for (int i = 0; i < XGATE_CAS_TRIES; i++) {
		__u64 old = *(volatile __u64 *)&b->tat_ns;
		__u64 tat = old > now ? old : now;
		__u64 next = tat + interval;

		if (next - now > limit)
			return XGATE_R_RATE_LIMITED;
		if (__sync_val_compare_and_swap(&b->tat_ns, old, next) == old)
			return XGATE_R__TERMINAL;
		count(XGATE_EV_BUCKET_CAS_RETRY, 0);
	}
	return XGATE_R_BUCKET_CONTENDED;
}

static __always_inline int port_listened(__u16 port)
{
	__u32 zero = 0;
	struct xgate_port_set *ps = bpf_map_lookup_elem(&xgate_ports, &zero);

	return ps && (ps->bits[(port >> 6) & 1023] >> (port & 63)) & 1;
}

/* First non-blank byte of the payload must be '{'. */
static __always_inline int payload_is_json(void *p, void *data_end)
{
	for (int i = 0; i < XGATE_BLANKS_MAX; i++) {
		__u8 *c = p + i;

		if ((void *)(c + 1) > data_end)
			return 0; /* empty or all blank */
		if (*c == '{')
			return 1;
		if (*c != ' ' && *c != '\t' && *c != '\r' && *c != '\n')
			return 0;
	}
	return 0;
}

/* Survivor in AF_XDP mode: stamp, then redirect to the queue's socket. */
static __always_inline int redirect(struct xdp_md *ctx, __u64 now, __u32 *reason, __u64 len)
{
	__u32 q = ctx->rx_queue_index;

	/* bpf_redirect_map returns XDP_REDIRECT for any slot in range, so look
	 * the slot up first: an empty slot means no socket on this queue. */
	if (!bpf_map_lookup_elem(&xgate_xsks, &q)) {
		*reason = XGATE_R_PASS_NO_XSK;
		return XDP_PASS;
	}

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct xgate_meta)) == 0) {
		void *data = (void *)(long)ctx->data;
		struct xgate_meta *m = (void *)(long)ctx->data_meta;

		if ((void *)(m + 1) <= data) {
			m->rx_ns = now;
			m->magic = XGATE_META_MAGIC;
			m->_pad = 0;
		}
	} else {
		count(XGATE_EV_META_FAILED, len);
	}

	/* The socket may leave between the lookup and here: then XDP_PASS. */
	if (bpf_redirect_map(&xgate_xsks, q, XDP_PASS) == XDP_REDIRECT) {
		*reason = XGATE_R_REDIRECT;
		return XDP_REDIRECT;
	}
	*reason = XGATE_R_PASS_NO_XSK;
	return XDP_PASS;
}

/* The policy path, with one exit per terminal reason written to *reason. */
static __always_inline int process(struct xdp_md *ctx, const struct xgate_config *cfg,
				   __u32 *reason, __u64 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *cur = data;
	struct xgate_src_key src = {};
	struct udphdr *udp;
	__u16 proto, port;
	__u64 now;
	__u32 r;

	/* L2: Ethernet and up to two VLAN tags (802.1ad outer, 802.1Q inner). */
	struct ethhdr *eth = cur;
	if ((void *)(eth + 1) > data_end) {
		*reason = XGATE_R_MALFORMED_ETH;
		return XDP_DROP;
	}
	cur = eth + 1;
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < XGATE_MAX_VLANS; i++) {
		struct vlan_hdr *vh = cur;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end) {
			*reason = XGATE_R_MALFORMED_VLAN;
			return XDP_DROP;
		}
		proto = vh->h_vlan_encapsulated_proto;
		cur = vh + 1;
	}

	/* L3: collect the source address and find the UDP header. */
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		__u32 hlen;

		if ((void *)(ip + 1) > data_end) {
			*reason = XGATE_R_MALFORMED_IPV4;
			return XDP_DROP;
		}
		hlen = ip->ihl * 4;
		if (ip->version != 4 || hlen < sizeof(*ip)) {
			*reason = XGATE_R_MALFORMED_IPV4;
			return XDP_DROP;
		}
		/* Options: the variable header must be in the packet too. */
		if (cur + hlen > data_end) {
			*reason = XGATE_R_MALFORMED_IPV4;
			return XDP_DROP;
		}
		/* Fragments (first or later) go to the stack to be reassembled:
		 * a later fragment has no UDP header to police. */
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) {
			*reason = XGATE_R_IPV4_FRAGMENT;
			return XDP_PASS;
		}
		if (ip->protocol != IPPROTO_UDP) {
			*reason = XGATE_R_NOT_UDP;
			return XDP_PASS;
		}
		src.addr[10] = 0xff;
		src.addr[11] = 0xff;
		__builtin_memcpy(&src.addr[12], &ip->saddr, 4);
		cur += hlen;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6) {
			*reason = XGATE_R_MALFORMED_IPV6;
			return XDP_DROP;
		}
		switch (ip6->nexthdr) {
		case IPPROTO_UDP:
			break;
		case 0:   /* hop-by-hop */
		case 43:  /* routing */
		case 44:  /* fragment */
		case 51:  /* AH */
		case 60:  /* destination options */
		case 135: /* mobility */
		case 139: /* HIP */
		case 140: /* shim6 */
			*reason = XGATE_R_IPV6_EXT_HDR;
			return XDP_PASS;
		default:
			*reason = XGATE_R_NOT_UDP;
			return XDP_PASS;
		}
		__builtin_memcpy(src.addr, &ip6->saddr, 16);
		cur = ip6 + 1;
	} else if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		*reason = XGATE_R_VLAN_TOO_DEEP;
		return XDP_PASS;
	} else {
		*reason = XGATE_R_NOT_IP;
		return XDP_PASS;
	}

	/* L4: UDP to a port of the listen set. */
	udp = cur;
	if ((void *)(udp + 1) > data_end || bpf_ntohs(udp->len) < sizeof(*udp)) {
		*reason = XGATE_R_MALFORMED_UDP;
		return XDP_DROP;
	}
	port = bpf_ntohs(udp->dest);
	if (!port_listened(port)) {
		*reason = XGATE_R_PORT_NOT_LISTENED;
		return XDP_PASS;
	}

	/* Policy: blocklist, bucket, payload. */
	now = bpf_ktime_get_ns();
	if (is_blocked(&src, now, len)) {
		*reason = XGATE_R_BLOCKED;
		return XDP_DROP;
	}
	r = bucket_admit(&src, cfg, now);
	if (r != XGATE_R__TERMINAL) {
		*reason = r;
		return XDP_DROP;
	}
	if ((cfg->flags & XGATE_F_PAYLOAD_CHECK) && !payload_is_json(udp + 1, data_end)) {
		*reason = XGATE_R_PAYLOAD_NOT_JSON;
		return XDP_DROP;
	}

	if (cfg->mode == XGATE_MODE_AFXDP)
		return redirect(ctx, now, reason, len);
	*reason = XGATE_R_PASS_SOCKET;
	return XDP_PASS;
}

/* log2 bucket rounding up: smallest i with v <= 2^i, capped. */
static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 r = 0;

	if (v <= 1)
		return 0;
	v--;
	if (v >> 32) { r += 32; v >>= 32; }
	if (v >> 16) { r += 16; v >>= 16; }
	if (v >> 8)  { r += 8;  v >>= 8; }
	if (v >> 4)  { r += 4;  v >>= 4; }
	if (v >> 2)  { r += 2;  v >>= 2; }
	if (v >> 1)  { r += 1; }
	r++;
	return r < XGATE_COST_BUCKETS ? r : XGATE_COST_BUCKETS - 1;
}

SEC("xdp")
int xgate_xdp(struct xdp_md *ctx)
{
	__u64 len = ctx->data_end - ctx->data;
	__u32 zero = 0, reason = XGATE_R_NO_CONFIG;
	struct xgate_config *cfg;
	struct xgate_cost *cost;
	__u64 t0 = 0;
	int verdict = XDP_PASS;

	cfg = bpf_map_lookup_elem(&xgate_cfg, &zero);
	cost = bpf_map_lookup_elem(&xgate_cost_ns, &zero);
	if (cfg && cost && cfg->cost_sample_n) {
		if (++cost->tick >= cfg->cost_sample_n) {
			cost->tick = 0;
			t0 = bpf_ktime_get_ns();
		}
	}

	if (cfg)
		verdict = process(ctx, cfg, &reason, len);
	count(reason, len);

	if (t0 && cost) {
		__u64 d = bpf_ktime_get_ns() - t0;
		__u32 b = log2_bucket(d);

		cost->samples++;
		cost->sum_ns += d;
		if (b < XGATE_COST_BUCKETS)
			cost->hist[b]++;
	}
	return verdict;
}
