//go:build ignore

/* probes.c — latency and drop probes for the socket path and the XDP program.
 *
 *   probe_sock_latency      socket filter (SO_ATTACH_BPF on each socket of the
 *                           group): skb receive timestamp → now, log2 µs
 *                           histogram, for one packet in sock_sample_n per
 *                           CPU. Never drops or trims: returns skb->len.
 *   probe_kfree_skb         tp_btf/kfree_skb: drops of packets to our UDP
 *                           ports (and our address, when one is set), by
 *                           enum skb_drop_reason.
 *   probe_xdp_redirect_err  tp_btf/xdp_redirect_err and
 *   probe_xdp_exception     tp_btf/xdp_exception, for our XDP program id
 *                           (a full AF_XDP rx ring makes the redirect fail).
 *
 * All counters are per-CPU, plain increments (each program runs at most once
 * at a time per CPU); Go sums them at scrape time.
 */

#include "xgate_kern.h"
#include <bpf_helpers.h>
#include <bpf_endian.h>
#include <bpf_core_read.h>
#include <bpf_tracing.h>
#include "probes.h"

char __license[] SEC("license") = "Dual MIT/GPL";


#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP_ 17
#define HDR_UNSET ((__u16)~0U)
/* Realtime timestamps are past 2001-09-09 (1e18 ns); anything smaller is a
 * monotonic delivery time or garbage, not a receive stamp. */
#define REALTIME_MIN_NS 1000000000000000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct probe_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_cfg SEC(".maps");

/* The socket filter times one packet in sock_sample_n per CPU (1: every
 * packet). Set by the loader before load (ProbeOptions.SockSample), so the
 * verifier sees a constant; never 0.
 *
 * Why sample: timing a packet costs a clock read and four map lookups.
 * Timing every packet puts a measurable share of the softirq receive path
 * into the filter; sampled (1 in 256 by default), what remains is the
 * filter call itself and one per-CPU increment and compare per packet
 * (figures: BENCHMARKS.md, "Why the defaults"). The histogram counts the
 * samples: its shape and mean are the packets', its counts 1/N of
 * theirs.
 *
 * Where the start comes from: skb->tstamp, which the kernel sets only while
 * host-wide software receive timestamping is on (a static key that any
 * SO_TIMESTAMP* socket turns on: a clock read per received skb, every
 * device). That is ProbeOptions.RxTimestamps;
 * without it the samples count PROBE_STAT_SOCK_NO_TSTAMP. There is no
 * cheaper start at this point: bpf_ktime here is only the end, the XDP
 * metadata stamp is not visible to a socket filter, and __sk_buff hides
 * tstamp (read through bpf_cast_to_kern_ctx). The sk_reuseport program
 * runs at the same point (socket lookup, just before this filter) and
 * could read the same stamp without the filter call, but plain mode has no
 * reuseport program and the call costs little once sampled. */
volatile const __u32 sock_sample_n = 256;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct probe_sock_tick);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_sock_ticks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROBE_LAT_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_latency SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROBE_STAT__MAX);
	__type(key, enum probe_stat);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_stats SEC(".maps");

/* Our UDP destination ports, host byte order; the value is unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_ports SEC(".maps");

/* Drops of packets to our ports by enum skb_drop_reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, struct probe_xdp_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_xdp_events SEC(".maps");

/* The socket filter's __sk_buff has no readable tstamp: read the real
 * sk_buff's through this kfunc (common to all program types, Linux >= 6.2). */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

static __always_inline void stat_add(enum probe_stat idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&probe_stats, &idx);
	if (v)
		*v += n;
}

/* Increment a per-CPU hash counter, creating it on first use. Another CPU
 * may create the key between lookup and update: then look up again. */
static __always_inline void hash_inc(void *map, const void *key)
{
	__u64 one = 1, *v = bpf_map_lookup_elem(map, key);

	if (v) {
		*v += 1;
		return;
	}
	if (bpf_map_update_elem(map, key, &one, BPF_NOEXIST) == 0)
		return;
	v = bpf_map_lookup_elem(map, key);
	if (v)
		*v += 1;
}

/* floor(log2(v)) for v > 0, branch-free. */
static __always_inline __u32 log2_floor(__u64 v)
{
	__u32 r, s;

	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	s = (v > 0xFFFF) << 4;
	v >>= s;
	r |= s;
	s = (v > 0xFF) << 3;
	v >>= s;
	r |= s;
	s = (v > 0xF) << 2;
	v >>= s;
	r |= s;
	s = (v > 0x3) << 1;
	v >>= s;
	r |= s;
	return r | (__u32)(v >> 1);
}

/* Bucket of a latency in ns: µs rounded up, then ceil(log2). */
static __always_inline __u32 latency_bucket(__u64 ns)
{
	__u64 us = (ns + 999) / 1000;
	__u32 b;

	if (us <= 1)
		return 0;
	b = log2_floor(us - 1) + 1;
	return b < PROBE_LAT_INF ? b : PROBE_LAT_INF;
}

/* Times one packet: skb receive timestamp → now, into the histogram. */
static __always_inline void sock_sample(struct __sk_buff *skb)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	__u32 zero = 0, b;
	__u64 ts = kskb->tstamp;
	__s64 now, d;
	struct probe_config *cfg;
	__u64 *cnt;

	stat_add(PROBE_STAT_SOCK_SAMPLED, 1);
	if (!ts) {
		stat_add(PROBE_STAT_SOCK_NO_TSTAMP, 1);
		return;
	}
	cfg = bpf_map_lookup_elem(&probe_cfg, &zero);
	if (!cfg) {
		stat_add(PROBE_STAT_NO_CONFIG, 1);
		return;
	}
	now = (__s64)bpf_ktime_get_tai_ns() - cfg->tai_offset_ns;
	d = now - (__s64)ts;
	if (ts < REALTIME_MIN_NS || d < 0) {
		stat_add(PROBE_STAT_SOCK_CLOCK_SKEW, 1);
		return;
	}
	b = latency_bucket(d);
	cnt = bpf_map_lookup_elem(&probe_latency, &b);
	if (cnt)
		*cnt += 1;
	stat_add(PROBE_STAT_SOCK_LAT_SUM_NS, d);
}

SEC("socket")
int probe_sock_latency(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct probe_sock_tick *t = bpf_map_lookup_elem(&probe_sock_ticks, &zero);

	if (!t)
		return skb->len; /* cannot happen: an array of one */
	t->packets++;
	if (++t->tick < sock_sample_n)
		return skb->len;
	t->tick = 0;
	sock_sample(skb);
	return skb->len;
}

/* Bytes of headers read from the network header in one go: an IPv6 header
 * and a UDP header (an IPv4 one and a UDP header fit as well). */
#define HDR_READ 48

/* The UDP destination port of skb in host order, or 0 when skb is not a
 * UDP packet whose headers have been set (network header at least). buf
 * (HDR_READ bytes) gets the headers from the network header on: the IP
 * header's addresses are in it whatever the port's layout.
 *
 * It runs for every skb the kernel drops, anywhere on the host, so the
 * cheap exits come first: the skb's fields are direct loads (tp_btf gives
 * a trusted pointer; no helper call), and the headers are one
 * bpf_probe_read_kernel in the common case (a second only when the UDP
 * header is not right after a plain IPv4 or IPv6 header). */
static __always_inline __u16 udp_dport(struct sk_buff *skb, __u8 *buf)
{
	__u16 nh = skb->network_header, th = skb->transport_header, off;
	__be16 proto = skb->protocol;
	unsigned char *head = skb->head;
	__be16 dport;

	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
		return 0;
	if (!head || nh == HDR_UNSET)
		return 0;
	/* Past the packet's end this reads the rest of its buffer (the head
	 * is followed by its shared info), never unmapped memory; the bytes
	 * used are checked against the headers. */
	if (bpf_probe_read_kernel(buf, HDR_READ, head + nh))
		return 0;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)buf;

		if (ip->protocol != IPPROTO_UDP_ || ip->ihl < 5)
			return 0;
		/* A fragment is no datagram of ours yet (a non-first one has no
		 * UDP header at all): the XDP program counted it as not ours,
		 * so its drop (reassembly timeout, …) is not one of ours. A
		 * reassembled datagram has MF and the offset clear again. */
		if (ip->frag_off & bpf_htons(0x3FFF))
			return 0;
		off = ip->ihl * 4;
	} else {
		struct ipv6hdr *ip6 = (void *)buf;

		/* Extension headers are not walked: the XDP program passes
		 * such packets to the stack uncounted as ours anyway. */
		if (ip6->nexthdr != IPPROTO_UDP_)
			return 0;
		off = sizeof(*ip6);
	}
	if (th != HDR_UNSET && th > nh)
		off = th - nh;
	/* The two common layouts are read from buf at a constant offset (the
	 * verifier refuses a variable one into the stack); any other (IPv4
	 * options) takes a second read. Network order: high byte first. */
	off += offsetof(struct udphdr, dest);
	if (off == sizeof(struct iphdr) + offsetof(struct udphdr, dest))
		return (__u16)buf[sizeof(struct iphdr) + 2] << 8 | buf[sizeof(struct iphdr) + 3];
	if (off == sizeof(struct ipv6hdr) + offsetof(struct udphdr, dest))
		return (__u16)buf[sizeof(struct ipv6hdr) + 2] << 8 | buf[sizeof(struct ipv6hdr) + 3];
	if (bpf_probe_read_kernel(&dport, sizeof(dport), head + nh + off))
		return 0;
	return bpf_ntohs(dport);
}

/* Is the destination of skb, whose headers udp_dport read into hdr (so
 * IPv4 or IPv6), the configured address? Called only with one configured
 * (cfg->dst), after the port matched: a drop of another datagram costs
 * nothing more. The other family is not ours, as in the XDP program
 * (a socket bound to an address of one family receives none of the
 * other). */
static __always_inline int dst_is_ours(const struct sk_buff *skb, const struct probe_config *cfg,
				       const __u32 *hdr)
{
	const __u32 *a = (const __u32 *)cfg->dst_addr;
	const __u32 *d;

	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		d = hdr + offsetof(struct ipv6hdr, daddr) / 4;
		return cfg->dst == PROBE_DST_V6 &&
		       ((d[0] ^ a[0]) | (d[1] ^ a[1]) | (d[2] ^ a[2]) | (d[3] ^ a[3])) == 0;
	}
	d = hdr + offsetof(struct iphdr, daddr) / 4;
	return cfg->dst == PROBE_DST_V4 && d[0] == a[3];
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(probe_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	__u32 r = reason, zero = 0;
	__u32 hdr[HDR_READ / 4]; /* the headers, 4-aligned for the address compare */
	struct probe_config *cfg;
	__u16 port;

	/* Our namespace only: a device of another namespace (another gateway,
	 * a test host) is not ours. Without a device, it cannot be told. This
	 * costs no helper call, so it comes before the headers are read. */
	cfg = bpf_map_lookup_elem(&probe_cfg, &zero);
	if (cfg && cfg->netns_ino) {
		struct net_device *dev = skb->dev;

		if (dev && dev->nd_net.net->ns.inum != cfg->netns_ino)
			return 0;
	}
	port = udp_dport(skb, (__u8 *)hdr);
	if (!port || !bpf_map_lookup_elem(&probe_ports, &port))
		return 0;
	/* Our address only, when one is set (listen.address): the XDP
	 * program passed a datagram to another address as not_our_address,
	 * so the stack's drop of it (no socket there) is not ours to count
	 * again. */
	if (cfg && cfg->dst != PROBE_DST_ANY && !dst_is_ours(skb, cfg, hdr))
		return 0;
	hash_inc(&probe_drops, &r);
	stat_add(PROBE_STAT_DROPS, 1);
	return 0;
}

static __always_inline int ours(const struct bpf_prog *xdp)
{
	__u32 zero = 0, id;
	struct probe_config *cfg = bpf_map_lookup_elem(&probe_cfg, &zero);

	if (!cfg) {
		stat_add(PROBE_STAT_NO_CONFIG, 1);
		return 0;
	}
	if (!cfg->xdp_prog_id)
		return 0;
	id = xdp->aux->id; /* direct loads: tp_btf's pointers are trusted */
	return id == cfg->xdp_prog_id;
}

SEC("tp_btf/xdp_redirect_err")
int BPF_PROG(probe_xdp_redirect_err, const struct net_device *dev, const struct bpf_prog *xdp,
	     const void *tgt, int err)
{
	struct probe_xdp_key key = { .event = PROBE_XDP_REDIRECT_ERR, .code = err };

	if (!ours(xdp))
		return 0;
	hash_inc(&probe_xdp_events, &key);
	stat_add(PROBE_STAT_XDP_REDIRECT_ERR, 1);
	return 0;
}

SEC("tp_btf/xdp_exception")
int BPF_PROG(probe_xdp_exception, const struct net_device *dev, const struct bpf_prog *xdp, __u32 act)
{
	struct probe_xdp_key key = { .event = PROBE_XDP_EXCEPTION, .code = (__s32)act };

	if (!ours(xdp))
		return 0;
	hash_inc(&probe_xdp_events, &key);
	stat_add(PROBE_STAT_XDP_EXCEPTION, 1);
	return 0;
}
