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
#include "xgate_uapi.h"
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

/* Prefilter of the blocklist (struct xgate_bfilter_word, see xgate.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XGATE_BFILTER_WORDS);
	__type(key, __u32);
	__type(value, struct xgate_bfilter_word);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_bfilter SEC(".maps");

/* Token buckets, direct-mapped by source hash (struct xgate_bucket).
 * max_entries is a power of two, resized by the loader (cfg.bucket_mask). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
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

/* CIDR lists (struct xgate_cidr_key/value); max_entries resized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__type(key, struct xgate_cidr_key);
	__type(value, struct xgate_cidr_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_cidrs SEC(".maps");

/* The multicast groups the gateway joined (listen.groups), v4-mapped like
 * a source: a datagram to our port and to a group not in here is not for
 * us (the stack would drop it: no socket of ours joined the group). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XGATE_MAX_GROUPS);
	__type(key, struct xgate_src_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_groups SEC(".maps");

/* Packets per CIDR list that matched (by list id). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XGATE_CIDR_LISTS);
	__type(key, __u32);
	__type(value, struct xgate_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xgate_cidr_hits SEC(".maps");

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
const enum xgate_stamp xgate_stamp_layout __attribute__((unused)) = XGATE_STAMP_META;
const enum xgate_cidr_action xgate_cidr_action_layout __attribute__((unused)) = XGATE_CIDR_DROP;

/* How survivors carry their receive timestamp (enum xgate_stamp): set by
 * the loader before load, from the probe of bpf_xdp_adjust_meta. */
volatile const __u32 xgate_stamp = XGATE_STAMP_META;
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

/* Keyed hash of the source address, for the blocklist prefilter and the
 * bucket slots (Go mirrors it: srcHash in xdp.go). NH, the universal hash
 * of UMAC, over the four 32-bit words with the random key from the config,
 * then the murmur3 64-bit finalizer so that every output bit depends on
 * every input bit. Cost: two 64-bit multiplies plus two in the finalizer,
 * a few ns. It is not a PRF (SipHash would be, at several times the cost):
 * an attacker who does not know the key cannot pick colliding addresses,
 * but one who can observe many drop/pass outcomes might learn some.
 * Who gains what from a collision is said at bucket_admit.
 *
 * The words are those of struct xgate_src_key as little-endian u32s; the
 * parser calls this with the values it has in registers, so the v4-mapped
 * form's constant words cost nothing (cheaper than reading the key back
 * from the stack; a one-multiply finalizer gained nothing measurable:
 * BENCHMARKS.md, "Why the defaults"). */
static __always_inline __u64 src_hash(__u32 w0, __u32 w1, __u32 w2, __u32 w3,
				      const struct xgate_config *cfg)
{
	__u64 h;

	h = (__u64)(__u32)(w0 + cfg->hash_key[0]) * (__u32)(w1 + cfg->hash_key[1]) +
	    (__u64)(__u32)(w2 + cfg->hash_key[2]) * (__u32)(w3 + cfg->hash_key[3]);
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* Blocklisted and not expired?
 *
 * The LRU hash lookup is a helper call (dear with the SRSO "Safe RET"
 * mitigation), so a counting filter in an ARRAY map (inlined lookup) is
 * asked first: a zero counter means no blocklist entry can have this
 * source's hash, and almost every packet stops there. A non-zero counter
 * (a blocked source, or another one sharing the counter: a false positive,
 * counted as XGATE_EV_BLOCK_FILTER_FP) goes on to the LRU, which stays the
 * source of truth. Userspace keeps the filter a superset of the LRU's keys
 * (Block sets before it inserts; Unblock clears after it deletes; LRU
 * evictions only leave stale counts, i.e. false positives). An entry put
 * into the LRU behind userspace's back (bpftool map update) is not seen
 * until the filter is rebuilt (SyncBlockFilter in Go).
 *
 * The clock is read only for an entry with an expiry: a permanent block
 * (U64_MAX) needs none. *now caches bpf_ktime_get_ns for the packet (0 =
 * not read yet). An expired entry is left in place (the userspace owner
 * renews or removes it, LRU ages it out) and counted. */
static __always_inline int is_blocked(const struct xgate_src_key *src, __u64 h,
				      __u64 *now, __u64 len)
{
	__u32 ci = (h >> XGATE_BFILTER_SHIFT) & (XGATE_BFILTER_COUNTERS - 1);
	__u32 word = ci / 8;
	struct xgate_bfilter_word *f = bpf_map_lookup_elem(&xgate_bfilter, &word);
	struct xgate_block *b;
	__u64 exp;

	if (f && f->n[ci & 7] == 0)
		return 0;
	/* No filter word cannot happen (word < max_entries): ask the LRU. */
	b = bpf_map_lookup_elem(&xgate_blocklist, src);
	if (!b) {
		count(XGATE_EV_BLOCK_FILTER_FP, len);
		return 0;
	}
	exp = b->expires_ns;
	if (exp == ~0ULL)
		return 1;
	if (!*now)
		*now = bpf_ktime_get_ns();
	if (*now < exp)
		return 1;
	count(XGATE_EV_BLOCK_EXPIRED, len);
	return 0;
}

/* Sign-extended difference a - b of two 48-bit times. */
static __always_inline __s64 tat_diff(__u64 a, __u64 b)
{
	return ((__s64)((a - b) << (64 - XGATE_BUCKET_TAT_BITS))) >> (64 - XGATE_BUCKET_TAT_BITS);
}

/* Token bucket as GCRA (generic cell rate algorithm), shared by all CPUs.
 *
 * State is one u64 per slot (struct xgate_bucket): the owner (used bit,
 * clock bit, 14-bit hash tag) and the theoretical arrival time (TAT) of the
 * next conforming packet. A packet at `now` conforms if max(TAT, now) +
 * interval - now <= limit (= burst * interval); then TAT advances by one
 * interval. The whole state is one word, so a compare-and-swap makes
 * admission exact across CPUs: a source hitting several RX queues cannot be
 * admitted twice for one token, and no token is lost (a CPU that loses the
 * CAS re-reads what the winner wrote and decides again). CAS rather than
 * bpf_spin_lock: the lock needs its own word, is not allowed in every
 * map/program combination on older kernels, and costs a lock+unlock even
 * uncontended, while the CAS is one locked instruction.
 *
 * Slots instead of an LRU hash: the slot is buckets[hash & mask], an ARRAY
 * lookup the verifier inlines, where the LRU lookup (and its insert for a
 * new source) were helper calls. The price is collisions.
 * A source whose slot holds another owner takes the slot over as a fresh,
 * full bucket. When the previous owner's bucket was full anyway (TAT <=
 * now), nothing is lost — a full bucket and no bucket are the same state.
 * When it was not, that source restarts full: counted as
 * XGATE_EV_BUCKET_TAKEOVER. With M sources active within one burst window
 * and N slots, a given source shares its slot with another active one with
 * probability ≈ (M-1)/N (about 1.5% for M = 1000, N = 65536); two sources
 * sharing a slot each get up to a fresh burst per takeover, i.e. they are
 * limited less, never more. Two sources with the same slot *and* tag share
 * one bucket (limited together): probability ≈ (M-1)/(N * 2^14) per source.
 * The key is secret, so an attacker cannot aim a collision at a victim or
 * pick two own addresses that alternate in one slot.
 *
 * TAT is kept modulo 2^48 ns (≈ 78 h) and read as a signed difference to
 * now; a difference above the limit can only be a stale wrapped value and
 * counts as a full bucket (limit < 2^47 ns is enforced by the loader). A
 * source idle for a multiple of 78 h (± burst time) may find its slot
 * looking non-full: at worst one burst window of limiting too early.
 *
 * Clock: cfg->tick_ns != 0 means now = jiffies * tick (inlined, no helper
 * call) — up to one tick late, which for a source sending exactly at its
 * rate looks like up to rate*tick extra tokens spent; the loader only
 * chooses it when the burst covers >= 2 ticks, so such a source keeps at
 * least half its burst. Otherwise bpf_ktime_get_ns (*now caches it for the
 * packet). Slots carry their clock: after a clock change a slot of the
 * other clock counts as empty (a fresh bucket, not a takeover).
 *
 * Retries are bounded (XGATE_CAS_TRIES). Every lost CAS means another CPU
 * just changed the slot, so running out of retries means the slot is being
 * hammered on several queues at once: we fail closed — XDP_DROP counted as
 * XGATE_R_BUCKET_CONTENDED, never admitted without a token. Each retry is
 * counted (XGATE_EV_BUCKET_CAS_RETRY).
 *
 * Returns the terminal reason on drop, or XGATE_R__TERMINAL to admit.
 */
static __always_inline __u32 bucket_admit(const struct xgate_config *cfg, __u64 h,
					  __u64 *now, __u64 len)
{
	__u64 interval = cfg->bucket_interval_ns;
	__u64 limit = cfg->bucket_limit_ns;
	__u64 tick = cfg->tick_ns;
	__u64 owner, t;
	__u32 idx = (__u32)h & cfg->bucket_mask;
	struct xgate_bucket *b;

	if (!interval)
		return XGATE_R__TERMINAL;

	if (tick) {
		t = bpf_jiffies64() * tick;
		owner = XGATE_BUCKET_USED | XGATE_BUCKET_COARSE;
	} else {
		if (!*now)
			*now = bpf_ktime_get_ns();
		t = *now;
		owner = XGATE_BUCKET_USED;
	}
	owner |= (h >> XGATE_BUCKET_TAG_SHIFT) << XGATE_BUCKET_TAT_BITS;

	b = bpf_map_lookup_elem(&xgate_buckets, &idx);
	if (!b) /* cannot happen: the loader sizes the map to bucket_mask + 1 */
		return XGATE_R_BUCKET_CONTENDED;

	for (int i = 0; i < XGATE_CAS_TRIES; i++) {
		__u64 old = *(volatile __u64 *)&b->owner_tat;
		__s64 d = tat_diff(old, t); /* TAT - now */
		int takeover = 0;

		if ((old & ~XGATE_BUCKET_TAT_MASK) != owner) {
			/* Another source (or empty, or the other clock): fresh.
			 * Lossy only if its bucket was not full. */
			takeover = ((old ^ owner) & (XGATE_BUCKET_USED | XGATE_BUCKET_COARSE)) == 0 &&
				   d > 0 && (__u64)d <= limit;
			d = 0;
		} else if (d < 0 || (__u64)d > limit) {
			d = 0; /* full: TAT in the past (or stale and wrapped) */
		}
		if ((__u64)d + interval > limit)
			return XGATE_R_RATE_LIMITED;
		if (__sync_val_compare_and_swap(&b->owner_tat, old,
						owner | ((t + d + interval) & XGATE_BUCKET_TAT_MASK)) == old) {
			if (takeover)
				count(XGATE_EV_BUCKET_TAKEOVER, len);
			return XGATE_R__TERMINAL;
		}
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

/* First non-blank byte of the payload must be '{'. The payload is the
 * datagram's, len bytes (the UDP length less its header): what follows it
 * in the frame (bytes the IP length holds and the UDP length does not,
 * Ethernet padding) is not the datagram, and the stack trims it. */
static __always_inline int payload_is_json(void *p, void *data_end, __u32 len)
{
	for (int i = 0; i < XGATE_BLANKS_MAX; i++) {
		__u8 *c = p + i;

		if ((__u32)i >= len || (void *)(c + 1) > data_end)
			return 0; /* empty or all blank */
		if (*c == '{')
			return 1;
		if (*c != ' ' && *c != '\t' && *c != '\r' && *c != '\n')
			return 0;
	}
	return 0;
}

/* The parse results a stamp hands over (struct xgate_meta). */
struct handoff {
	__u16 payload_off;
	__u8 src_off;
	__u8 flags;
};

static __always_inline void write_stamp(struct xgate_meta *m, __u64 now, const struct handoff *ho)
{
	m->rx_ns = now ? now : bpf_ktime_get_ns();
	m->magic = XGATE_META_MAGIC;
	m->payload_off = ho->payload_off;
	m->src_off = ho->src_off;
	m->flags = ho->flags;
}

/* Put struct xgate_meta in front of the packet, as metadata or as a
 * prefix header (enum xgate_stamp in xgate.h has the frame layouts).
 * Returns 0 when stamped, -1 when not. Each branch reads its own context
 * fields: a shared tail would let the compiler pick the field offset at
 * run time, and the verifier refuses a ctx pointer with a variable offset. */
static __always_inline int stamp(struct xdp_md *ctx, __u64 now, const struct handoff *ho)
{
	struct xgate_meta *m;

	if (xgate_stamp == XGATE_STAMP_PREFIX) {
		if (bpf_xdp_adjust_head(ctx, -(int)sizeof(*m)))
			return -1;
		m = (void *)(long)ctx->data;
		if ((void *)(m + 1) > (void *)(long)ctx->data_end)
			return -1; /* cannot happen: the helper made the room */
		write_stamp(m, now, ho);
		return 0;
	}
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*m)))
		return -1;
	m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return -1;
	write_stamp(m, now, ho);
	return 0;
}

/* Survivor in AF_XDP mode: stamp, then redirect to the queue's socket.
 * now is the packet's bpf_ktime_get_ns if a policy step read it, else 0. */
static __always_inline int redirect(struct xdp_md *ctx, __u64 now, __u32 *reason, __u64 len,
				    const struct handoff *ho)
{
	__u32 q = ctx->rx_queue_index;

	/* bpf_redirect_map returns XDP_REDIRECT for any slot in range, so look
	 * the slot up first: an empty slot means no socket on this queue. */
	if (!bpf_map_lookup_elem(&xgate_xsks, &q)) {
		*reason = XGATE_R_PASS_NO_XSK;
		return XDP_PASS;
	}

	if (stamp(ctx, now, ho)) {
		if (xgate_stamp == XGATE_STAMP_PREFIX) {
			/* The worker expects the header on every frame. */
			*reason = XGATE_R_STAMP_FAILED;
			return XDP_DROP;
		}
		count(XGATE_EV_META_FAILED, len);
	}

	/* The socket may leave between the lookup and here: then XDP_PASS,
	 * without our prefix header (the stack must see the packet as sent). */
	if (bpf_redirect_map(&xgate_xsks, q, XDP_PASS) == XDP_REDIRECT) {
		*reason = XGATE_R_REDIRECT;
		return XDP_REDIRECT;
	}
	if (xgate_stamp == XGATE_STAMP_PREFIX)
		bpf_xdp_adjust_head(ctx, (int)sizeof(struct xgate_meta));
	*reason = XGATE_R_PASS_NO_XSK;
	return XDP_PASS;
}

/* Is the datagram's destination the configured address (cfg->dst_addr)?
 * Called only when one is configured, so the survivor path without one
 * pays nothing here: the destination is found again from the handoff (it
 * follows the source in both IP headers) rather than kept live through
 * the parse, and the bound checks cannot fail (the parse checked the whole
 * IP header) but the verifier needs them. A datagram of the other family
 * is not ours: a socket bound to an IPv4 address receives no IPv6, one
 * bound to an IPv6 address no IPv4 (the loader unmaps a v4-mapped
 * address, so that is IPv4 here). A multicast group that got this far
 * (joined, which listen.groups allows only with no address) is not the
 * address either: a socket bound to a unicast address receives no group. */
static __always_inline int dst_is_ours(struct xdp_md *ctx, const struct xgate_config *cfg,
				       const struct handoff *ho)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const __u32 *a = (const __u32 *)cfg->dst_addr;
	__u32 *d;

	if (ho->flags & XGATE_META_V6) {
		d = data + ho->src_off + 16;
		if (!(cfg->flags & XGATE_F_DST_V6) || (void *)(d + 4) > data_end)
			return 0;
		return ((d[0] ^ a[0]) | (d[1] ^ a[1]) | (d[2] ^ a[2]) | (d[3] ^ a[3])) == 0;
	}
	d = data + ho->src_off + 4;
	if (!(cfg->flags & XGATE_F_DST_V4) || (void *)(d + 1) > data_end)
		return 0;
	return d[0] == a[3];
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
	void *ip_end;
	__u16 proto, port, vid = 0;
	__u32 ulen;
	int tagged = 0, v6 = 0;
	struct handoff ho = {};
	struct xgate_src_key grp; /* the destination, when it is a multicast group */
	int mcast = 0;
	__u64 now = 0, h;
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
		if (i == 0) {
			tagged = 1;
			vid = bpf_ntohs(vh->h_vlan_TCI) & 0x0fff;
		}
		proto = vh->h_vlan_encapsulated_proto;
		cur = vh + 1;
	}

	/* L3: collect the source address, find the UDP header and the end of
	 * the IP datagram (its length fields must lie inside the frame, which
	 * may be longer: Ethernet padding). The stack drops what fails these
	 * checks, so they decide here too, and both paths agree. */
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		__u32 hlen, tot;

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
		tot = bpf_ntohs(ip->tot_len);
		if (tot < hlen || cur + tot > data_end) {
			*reason = XGATE_R_MALFORMED_IPV4;
			return XDP_DROP;
		}
		ip_end = cur + tot;
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
		ho.src_off = (void *)&ip->saddr - data;
		if ((ip->daddr & bpf_htonl(0xf0000000)) == bpf_htonl(0xe0000000)) { /* 224.0.0.0/4 */
			__builtin_memset(grp.addr, 0, 10);
			grp.addr[10] = 0xff;
			grp.addr[11] = 0xff;
			__builtin_memcpy(&grp.addr[12], &ip->daddr, 4);
			mcast = 1;
		}
		/* The hash of the v4-mapped key, its constant words folded in. */
		h = src_hash(0, 0, 0xffff0000, ip->saddr, cfg);
		cur += hlen;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6) {
			*reason = XGATE_R_MALFORMED_IPV6;
			return XDP_DROP;
		}
		ip_end = (void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len);
		if (ip_end > data_end) {
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
		ho.src_off = (void *)&ip6->saddr - data;
		ho.flags = XGATE_META_V6;
		if (ip6->daddr.in6_u.u6_addr8[0] == 0xff) { /* ff00::/8 */
			__builtin_memcpy(grp.addr, &ip6->daddr, 16);
			mcast = 1;
		}
		h = src_hash(ip6->saddr.in6_u.u6_addr32[0], ip6->saddr.in6_u.u6_addr32[1],
			     ip6->saddr.in6_u.u6_addr32[2], ip6->saddr.in6_u.u6_addr32[3], cfg);
		cur = ip6 + 1;
		v6 = 1;
	} else if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		*reason = XGATE_R_VLAN_TOO_DEEP;
		return XDP_PASS;
	} else {
		*reason = XGATE_R_NOT_IP;
		return XDP_PASS;
	}

	/* L4: a whole UDP header inside the IP datagram, and the UDP length
	 * inside it too (shorter is allowed: the stack trims the rest). */
	udp = cur;
	if ((void *)(udp + 1) > data_end || (void *)(udp + 1) > ip_end) {
		*reason = XGATE_R_MALFORMED_UDP;
		return XDP_DROP;
	}
	ulen = bpf_ntohs(udp->len);
	if (ulen < sizeof(*udp) || cur + ulen > ip_end) {
		*reason = XGATE_R_MALFORMED_UDP;
		return XDP_DROP;
	}
	ho.payload_off = (void *)(udp + 1) - data;
	port = bpf_ntohs(udp->dest);
	if (!port_listened(port)) {
		*reason = XGATE_R_PORT_NOT_LISTENED;
		return XDP_PASS;
	}
	if (mcast && !bpf_map_lookup_elem(&xgate_groups, &grp)) {
		*reason = XGATE_R_GROUP_NOT_JOINED;
		return XDP_PASS;
	}
	/* Served? A datagram to our port that no receive path of ours would
	 * see is dropped and named here, rather than lost unnamed later. */
	if (tagged && !(cfg->flags & XGATE_F_VLAN_ANY) && !((cfg->vlans[vid / 64] >> (vid % 64)) & 1)) {
		*reason = XGATE_R_VLAN_NOT_SERVED;
		return XDP_DROP;
	}
	if (v6 && (cfg->flags & XGATE_F_NO_IPV6)) {
		*reason = XGATE_R_IPV6_NOT_SERVED;
		return XDP_DROP;
	}
	/* Ours by address? Only with an address configured (listen.address,
	 * afxdp and socket paths): one flag test otherwise. After the served
	 * checks, so that an IPv6 datagram stays ipv6_not_served where no
	 * socket serves IPv6. */
	if ((cfg->flags & (XGATE_F_DST_V4 | XGATE_F_DST_V6)) && !dst_is_ours(ctx, cfg, &ho)) {
		*reason = XGATE_R_NOT_OUR_ADDRESS;
		return XDP_PASS;
	}

	/* Policy: blocklist, bucket, payload. The clock (a helper call) is
	 * read at most once, and only by the steps
	 * that need it: a block with an expiry, the fine-clock bucket, the
	 * AF_XDP metadata stamp. */
	/* CIDR lists: a helper call (the LPM trie), only when there are lists. */
	if (cfg->flags & XGATE_F_CIDRS) {
		struct xgate_cidr_key ck = { .prefixlen = 128 };
		struct xgate_cidr_value *cv;

		__builtin_memcpy(ck.addr, src.addr, 16);
		cv = bpf_map_lookup_elem(&xgate_cidrs, &ck);
		if (cv) {
			__u32 list = cv->list;
			struct xgate_counter *c;

			if (list < XGATE_CIDR_LISTS) {
				c = bpf_map_lookup_elem(&xgate_cidr_hits, &list);
				if (c) {
					c->packets++;
					c->bytes += len;
				}
			}
			if (cv->action == XGATE_CIDR_DROP) {
				*reason = XGATE_R_CIDR_DROP;
				return XDP_DROP;
			}
			if (cv->action == XGATE_CIDR_NEVER_BLOCK) {
				count(XGATE_EV_NEVER_BLOCK, len);
				goto admitted;
			}
		}
	}
	if (is_blocked(&src, h, &now, len)) {
		*reason = XGATE_R_BLOCKED;
		return XDP_DROP;
	}
	r = bucket_admit(cfg, h, &now, len);
	if (r != XGATE_R__TERMINAL) {
		*reason = r;
		return XDP_DROP;
	}
admitted:
	if ((cfg->flags & XGATE_F_PAYLOAD_CHECK) && !payload_is_json(udp + 1, data_end, ulen - sizeof(*udp))) {
		*reason = XGATE_R_PAYLOAD_NOT_JSON;
		return XDP_DROP;
	}

	if (cfg->mode == XGATE_MODE_AFXDP)
		return redirect(ctx, now, reason, len, &ho);
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
