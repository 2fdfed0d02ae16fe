/* probes.h — types shared by the latency and drop probes (probes.c) and, through
 * bpf2go -type, by the Go side (bpf/probes.go). No implicit padding anywhere,
 * so the Go mirrors and `bpftool map dump` agree byte for byte.
 */
#ifndef XGATE_PROBES_H
#define XGATE_PROBES_H

/* Socket-path latency histogram (probe_latency, PERCPU_ARRAY of __u64).
 * Bucket i < PROBE_LAT_INF counts latencies L with 2^(i-1) < L <= 2^i µs, L
 * rounded up to whole µs (bucket 0: L <= 1 µs); bucket PROBE_LAT_INF counts
 * L > 2^(PROBE_LAT_INF-1) µs. So bucket i's Prometheus `le` is 2^i µs and
 * the cumulative histogram is built at scrape time. Go takes the bucket
 * count from the map's max_entries, so these stay C-only. */
enum probe_lat {
	PROBE_LAT_INF = 31,     /* the +Inf bucket: > 2^30 µs (~18 min) */
	PROBE_LAT_BUCKETS = 32, /* map size */
};

/* Per-CPU statistics of the probes themselves (probe_stats, PERCPU_ARRAY of
 * __u64 indexed by this enum). Append only before the sentinel. */
enum probe_stat {
	PROBE_STAT_SOCK_SAMPLED = 0, /* packets the socket filter sampled (read the clock for) */
	PROBE_STAT_SOCK_NO_TSTAMP,   /* …without a receive timestamp (not in the histogram) */
	PROBE_STAT_SOCK_CLOCK_SKEW,  /* …stamped in the future or not realtime (not in the histogram) */
	PROBE_STAT_SOCK_LAT_SUM_NS,  /* sum of the latencies in the histogram, ns */
	PROBE_STAT_DROPS,            /* kfree_skb drops of packets to our ports */
	PROBE_STAT_XDP_REDIRECT_ERR, /* xdp_redirect_err of our XDP program */
	PROBE_STAT_XDP_EXCEPTION,    /* xdp_exception of our XDP program */
	PROBE_STAT_NO_CONFIG,        /* config lookup failed (cannot happen) */
	PROBE_STAT__MAX,
};

/* Per-CPU state of the socket filter (probe_sock_ticks, PERCPU_ARRAY of one):
 * every packet costs an increment of both fields and one compare; only the
 * packet that brings tick to the sampling period reads the clock. */
struct probe_sock_tick {
	__u64 packets; /* packets the filter saw on this CPU */
	__u64 tick;    /* packets since the last sample, 0..period-1 */
};

/* Which destinations kfree_skb counts (probe_config.dst). */
enum probe_dst {
	PROBE_DST_ANY = 0, /* any address (listen.address unset or unspecified) */
	PROBE_DST_V4 = 1,  /* IPv4 to the address in dst_addr[12..15] only */
	PROBE_DST_V6 = 2,  /* IPv6 to the address in dst_addr only */
};

/* Written by userspace (map probe_cfg, ARRAY of one). */
struct probe_config {
	/* CLOCK_TAI - CLOCK_REALTIME in ns: realtime = bpf_ktime_get_tai_ns()
	 * - tai_offset_ns. Refreshed by the loader. */
	__s64 tai_offset_ns;
	/* Our XDP program's id (bpf_prog_info.id); 0 counts no XDP events. */
	__u32 xdp_prog_id;
	/* Inode of our network namespace (its /proc/self/ns/net): kfree_skb
	 * counts only drops on devices of this namespace; 0 counts all. */
	__u32 netns_ino;
	/* The destination address that is ours (listen.address), in network
	 * byte order, an IPv4 one v4-mapped (::ffff:a.b.c.d) as in
	 * xgate_config.dst_addr; read only as dst says. With an address,
	 * kfree_skb counts a drop to our port only when it is to this address
	 * (so of its family): the XDP program passed a datagram to another one
	 * as not_our_address, not for us, and its drop is not ours. */
	__u8 dst_addr[16];
	enum probe_dst dst; /* 4 bytes */
	__u32 _pad;
};

/* Which XDP tracepoint fired, part of struct probe_xdp_key. */
enum probe_xdp_event {
	PROBE_XDP_REDIRECT_ERR = 0, /* code: the negative errno of the redirect */
	PROBE_XDP_EXCEPTION = 1,    /* code: the XDP action (XDP_ABORTED, or an invalid one) */
};

/* Key of probe_xdp_events (PERCPU_HASH of __u64). */
struct probe_xdp_key {
	enum probe_xdp_event event;
	__s32 code;
};

#endif /* XGATE_PROBES_H */
