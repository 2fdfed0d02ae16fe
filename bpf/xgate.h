/* xgate.h — types and constants shared by the XDP and sk_reuseport programs
 * and, through bpf2go -type, by the Go side (package bpf). Change a struct
 * here and `make generate` changes the Go mirror: the two cannot drift.
 *
 * Every struct is laid out without implicit padding (explicit _pad fields),
 * so the Go mirrors and `bpftool map dump` agree byte for byte.
 */
#ifndef XGATE_H
#define XGATE_H

/* Why a packet left the XDP program, one per packet (the terminal reasons,
 * below XGATE_R__TERMINAL), and events that happen on the way and do not
 * decide the verdict (XGATE_EV_*). The counters map is indexed by this enum;
 * summing the terminal reasons gives every packet the program saw.
 * The comment after each reason is its verdict. Append only before the
 * sentinel; names reach Go (and /metrics) lower-cased without the prefix. */
enum xgate_reason {
	/* survivors */
	XGATE_R_REDIRECT = 0,       /* XDP_REDIRECT into the queue's AF_XDP socket */
	XGATE_R_PASS_SOCKET,        /* XDP_PASS: socket mode, to the reuseport group */
	XGATE_R_PASS_NO_XSK,        /* XDP_PASS: AF_XDP mode but no socket on this queue */
	/* not for us */
	XGATE_R_NOT_IP,             /* XDP_PASS: ethertype neither IPv4 nor IPv6 */
	XGATE_R_VLAN_TOO_DEEP,      /* XDP_PASS: more than two VLAN tags */
	XGATE_R_NOT_UDP,            /* XDP_PASS: IP but not UDP */
	XGATE_R_PORT_NOT_LISTENED,  /* XDP_PASS: UDP to a port outside the listen set */
	XGATE_R_IPV4_FRAGMENT,      /* XDP_PASS: IPv4 fragment, the stack reassembles */
	XGATE_R_IPV6_EXT_HDR,       /* XDP_PASS: IPv6 extension header before L4 */
	/* malformed: truncated or impossible headers, per layer */
	XGATE_R_MALFORMED_ETH,      /* XDP_DROP */
	XGATE_R_MALFORMED_VLAN,     /* XDP_DROP */
	XGATE_R_MALFORMED_IPV4,     /* XDP_DROP: truncated, version != 4, IHL < 5, or the total
				     * length below the header or beyond the frame */
	XGATE_R_MALFORMED_IPV6,     /* XDP_DROP: truncated, version != 6, or the payload length
				     * beyond the frame */
	XGATE_R_MALFORMED_UDP,      /* XDP_DROP: truncated, UDP length < 8, or beyond the IP payload */
	/* policy */
	XGATE_R_BLOCKED,            /* XDP_DROP: source in the blocklist, not expired */
	XGATE_R_RATE_LIMITED,       /* XDP_DROP: source over its token bucket */
	XGATE_R_BUCKET_CONTENDED,   /* XDP_DROP: bucket CAS lost XGATE_CAS_TRIES times */
	XGATE_R_PAYLOAD_NOT_JSON,   /* XDP_DROP: first non-blank payload byte is not '{' */
	XGATE_R_NO_CONFIG,          /* XDP_PASS: config map lookup failed (cannot happen) */
	XGATE_R_STAMP_FAILED,       /* XDP_DROP: prefix stamp: no headroom for the header */
	XGATE_R_VLAN_NOT_SERVED,    /* XDP_DROP: to our port on a VLAN the gateway does not serve */
	XGATE_R_IPV6_NOT_SERVED,    /* XDP_DROP: IPv6 to our port, and no socket serves IPv6 */
	XGATE_R_CIDR_DROP,          /* XDP_DROP: source in a CIDR list whose action is drop */
	XGATE_R_GROUP_NOT_JOINED,   /* XDP_PASS: to our port, but to a multicast group the
				     * gateway did not join (listen.groups): not for us */
	XGATE_R_NOT_OUR_ADDRESS,    /* XDP_PASS: to our port, but to an address other than
				     * the one configured (listen.address): not for us */
	XGATE_R__TERMINAL,          /* sentinel: reasons below are terminal */

	/* events, not verdicts: counted in addition to the terminal reason */
	XGATE_EV_BLOCK_EXPIRED = XGATE_R__TERMINAL, /* blocklist hit past its expiry: ignored */
	XGATE_EV_BUCKET_CAS_RETRY,  /* a bucket CAS lost to another CPU and was retried */
	XGATE_EV_META_FAILED,       /* bpf_xdp_adjust_meta failed: redirected without timestamp */
	XGATE_EV_BLOCK_FILTER_FP,   /* block filter said maybe, the blocklist had no entry */
	XGATE_EV_BUCKET_TAKEOVER,   /* bucket slot taken from another source whose bucket was
				     * not full: that source's state is lost (it restarts full) */
	XGATE_EV_NEVER_BLOCK,       /* source in a never-block CIDR list: blocklist and bucket skipped */
	XGATE_R__MAX,               /* sentinel: size of the counters map */
};

/* Packet and byte counts for one reason on one CPU (PERCPU_ARRAY value). */
struct xgate_counter {
	__u64 packets;
	__u64 bytes;
};

/* A source address: IPv6, or IPv4 as v4-mapped IPv6 (::ffff:a.b.c.d),
 * in network byte order. Key of the blocklist; hashed (with a secret key)
 * for the blocklist prefilter and the bucket slots. */
struct xgate_src_key {
	__u8 addr[16];
};

/* Blocklist value. expires_ns is CLOCK_MONOTONIC (bpf_ktime_get_ns) ns;
 * U64_MAX blocks until removed. The program reads only expires_ns; since_ns
 * (same clock) and rule (NUL-padded: the rule that blocked, or "manual")
 * are for the operator (`xgate block list`, `bpftool map dump`). */
#define XGATE_BLOCK_RULE_LEN 32
struct xgate_block {
	__u64 expires_ns;
	__u64 since_ns;
	char rule[XGATE_BLOCK_RULE_LEN];
};

/* Token bucket slot (ARRAY map xgate_buckets, direct-mapped by the keyed
 * source hash). One u64, updated by CAS:
 *
 *   bit  63     1 = slot in use (an all-zero slot is empty)
 *   bit  62     clock of the TAT: 1 = coarse (jiffies), 0 = fine (ktime)
 *   bits 61..48 tag: bits 63..50 of the source hash (14 bits)
 *   bits 47..0  GCRA theoretical arrival time, ns modulo 2^48 (≈ 78 h),
 *               compared with now as a signed 48-bit difference
 *
 * Bits 63..48 together are the slot's owner. */
struct xgate_bucket {
	__u64 owner_tat;
};

#define XGATE_BUCKET_TAT_BITS 48
#define XGATE_BUCKET_TAT_MASK ((1ULL << XGATE_BUCKET_TAT_BITS) - 1)
#define XGATE_BUCKET_USED     (1ULL << 63)
#define XGATE_BUCKET_COARSE   (1ULL << 62)
#define XGATE_BUCKET_TAG_SHIFT 50 /* hash bits 63..50 → slot bits 61..48 */

/* The blocklist prefilter: a counting filter with one (keyed) hash. Counter
 * i = hash bits 50..32 (XGATE_BFILTER_COUNTERS = 2^19 counters, 512 KiB),
 * in word i / 8, byte i % 8 of the ARRAY map xgate_bfilter. A counter is
 * the number of blocklist entries whose hash selects it (saturating at 255:
 * a saturated counter is never decremented). Written only by userspace
 * (Block, Unblock, SyncBlockFilter); the program only reads it: zero means
 * "not in the blocklist" without the LRU lookup. */
#define XGATE_BFILTER_SHIFT    32
#define XGATE_BFILTER_COUNTERS (1 << 19)
#define XGATE_BFILTER_WORDS    (XGATE_BFILTER_COUNTERS / 8)
struct xgate_bfilter_word {
	__u8 n[8];
};

enum xgate_mode {
	XGATE_MODE_SOCKET = 0, /* survivors go up the stack to the reuseport group */
	XGATE_MODE_AFXDP = 1,  /* survivors are redirected to the queue's XSK */
};

enum xgate_flags {
	XGATE_F_PAYLOAD_CHECK = 1 << 0, /* drop payloads not starting with '{' */
	XGATE_F_VLAN_ANY = 1 << 1,      /* serve datagrams on every VLAN (else: xgate_config.vlans) */
	XGATE_F_NO_IPV6 = 1 << 2,       /* no socket serves IPv6: drop IPv6 to our ports */
	XGATE_F_CIDRS = 1 << 3,         /* xgate_cidrs has entries: look the source up */
	XGATE_F_DST_V4 = 1 << 4,        /* ours only to the IPv4 address xgate_config.dst_addr */
	XGATE_F_DST_V6 = 1 << 5,        /* ours only to the IPv6 address xgate_config.dst_addr */
};

/* CIDR lists (LPM_TRIE xgate_cidrs): operator-named networks with an
 * action, looked up by source address for datagrams to our ports, after
 * the served checks and before the blocklist. The longest prefix wins.
 * IPv4 networks are stored v4-mapped (prefix length + 96), as the source
 * key is. */
#define XGATE_CIDR_LISTS 64 /* list ids 0..63: the hits map's size */
#define XGATE_MAX_GROUPS 64 /* multicast groups joined (listen.groups) */

enum xgate_cidr_action {
	XGATE_CIDR_NEVER_BLOCK = 1, /* never dropped by the blocklist or the bucket */
	XGATE_CIDR_DROP = 2,        /* dropped: XGATE_R_CIDR_DROP */
};

struct xgate_cidr_key {
	__u32 prefixlen; /* LPM_TRIE: bits of addr that count */
	__u8 addr[16];
};

struct xgate_cidr_value {
	__u32 list;   /* list id, < XGATE_CIDR_LISTS: index of the hits counter */
	__u32 action; /* enum xgate_cidr_action */
};

/* The one entry (key 0) of the config ARRAY map, written by userspace. */
struct xgate_config {
	__u64 bucket_interval_ns; /* GCRA emission interval = 1e9/rate; 0 = no bucket */
	__u64 bucket_limit_ns;    /* burst * interval: how far TAT may run ahead */
	enum xgate_mode mode;     /* 4 bytes */
	enum xgate_flags flags;   /* bit set, 4 bytes */
	__u32 cost_sample_n;      /* time 1 packet in N per CPU; 0 = off */
	__u32 bucket_mask;        /* slots of xgate_buckets - 1 (a power of two - 1) */
	/* Bucket clock. 0: bpf_ktime_get_ns. Otherwise the kernel tick in ns, and
	 * now = bpf_jiffies64() * tick_ns: inlined (no helper call) but up to a
	 * tick late, so the loader picks it only when bucket_limit_ns >= 2 ticks. */
	__u64 tick_ns;
	/* Key of the source hash (blocklist prefilter, bucket slots): random per
	 * map set, kept across loads on the same pins. */
	__u32 hash_key[4];
	/* The destination address that is ours (listen.address), in network
	 * byte order, an IPv4 one v4-mapped (::ffff:a.b.c.d) as a source key
	 * is; read only with XGATE_F_DST_V4 or XGATE_F_DST_V6, which say its
	 * family. Neither flag: any destination (listen.address unset or
	 * unspecified). A datagram to our port and another address, or of the
	 * other family, is not for us (XGATE_R_NOT_OUR_ADDRESS): the sockets of
	 * the socket paths are bound to this address and would not see it, and
	 * the kfree_skb probe (probe_config.dst_addr) counts the stack's drops
	 * to this address only. */
	__u8 dst_addr[16];
	/* Served VLANs: bit v set = datagrams to our ports whose outer VLAN tag
	 * has VID v are ours (without XGATE_F_VLAN_ANY). Untagged frames are
	 * always served. A datagram to our port on another VLAN would be lost
	 * in the stack (socket mode without that VLAN device), so it is
	 * dropped here and counted (XGATE_R_VLAN_NOT_SERVED). */
	__u64 vlans[4096 / 64];
};

/* The listen set: bit p of the bitmap is set when UDP port p (host order)
 * is ours. One entry (key 0) of an ARRAY map: an array lookup is inlined by
 * the verifier, a hash lookup is a helper call (dear on SRSO-mitigated
 * CPUs), and every packet of the host asks this question. */
struct xgate_port_set {
	__u64 bits[65536 / 64];
};

#define XGATE_COST_BUCKETS 24

/* Sampled cost of the XDP program on one CPU (PERCPU_ARRAY, key 0).
 * hist[i] counts samples with ns <= 2^i (i = 0 .. 23, the last one is
 * "everything above 2^22" too); Prometheus-style upper bounds. */
struct xgate_cost {
	__u64 tick;    /* packets since the last sample (sampling countdown) */
	__u64 samples; /* sampled packets */
	__u64 sum_ns;  /* total ns of the sampled packets */
	__u64 hist[XGATE_COST_BUCKETS];
};

/* How a redirected frame carries its receive timestamp to the AF_XDP
 * worker: the value of the program's `xgate_stamp` constant, set by the
 * loader before the program is verified (dead branches are never walked,
 * so a kernel that refuses bpf_xdp_adjust_meta never sees the call).
 *
 * XGATE_STAMP_META: struct xgate_meta as XDP metadata, right in front of
 * the packet (bpf_xdp_adjust_meta). The packet itself is unchanged; the
 * worker finds the metadata at descriptor address - sizeof(xgate_meta),
 * inside the kernel's headroom of the same UMEM frame.
 *
 *   UMEM frame: [ headroom ... | xgate_meta (16) | packet (desc.len) ]
 *                                                 ^ desc.addr
 *
 * XGATE_STAMP_PREFIX: the same 16 bytes become part of the packet, in
 * front of the Ethernet header (bpf_xdp_adjust_head(-16)), for kernels
 * that refuse the metadata helper. The descriptor then covers the header
 * too, and the worker strips it before parsing:
 *
 *   UMEM frame: [ headroom ... | xgate_meta (16) | packet ]
 *                               ^ desc.addr, desc.len = 16 + packet
 *
 * A frame the program cannot prefix (no headroom) is dropped and counted
 * (XGATE_R_STAMP_FAILED), so every frame in a prefix-mode socket has the
 * header; a redirect that falls back to XDP_PASS takes the header off
 * again before the stack sees the packet. */
enum xgate_stamp {
	XGATE_STAMP_META = 1,
	XGATE_STAMP_PREFIX = 2,
};

#define XGATE_META_MAGIC 0x58474d31 /* "XGM1" */
/* What the program already parsed, handed to the worker so it need not
 * parse the headers again: offsets from the Ethernet header (the prefix
 * header not counted). payload_off 0: nothing handed over. */
#define XGATE_META_V6 1 /* flags: the source address is IPv6 (16 bytes) */
struct xgate_meta {
	__u64 rx_ns; /* bpf_ktime_get_ns (CLOCK_MONOTONIC), read once per packet
		      * after parsing, by the first step that needs the clock */
	__u32 magic; /* XGATE_META_MAGIC: the stamp is ours and complete */
	__u16 payload_off; /* the UDP payload; its length is the UDP header's */
	__u8 src_off;      /* the IP source address */
	__u8 flags;        /* XGATE_META_V6 */
};

/* ---- sk_reuseport ---- */

#define XGATE_RP_MAX_NODES 8

/* REUSEPORT_SOCKARRAY layout: slot = node * per_node + hash % count[node].
 * Written by userspace (key 0 of an ARRAY map). */
struct xgate_rp_config {
	__u32 per_node;                  /* slots reserved per NUMA node */
	__u32 count[XGATE_RP_MAX_NODES]; /* sockets placed on each node, 0 = none */
	__u32 _pad;
};

enum xgate_rp_reason {
	XGATE_RP_SELECTED = 0,   /* a socket of the receiving CPU's node was chosen */
	XGATE_RP_NODE_UNKNOWN,   /* node id >= XGATE_RP_MAX_NODES: kernel's choice */
	XGATE_RP_NODE_EMPTY,     /* no socket configured on this node: kernel's choice */
	XGATE_RP_SLOT_EMPTY,     /* chosen slot empty or select failed: kernel's choice */
	XGATE_RP_NO_CONFIG,      /* config lookup failed (cannot happen): kernel's choice */
	XGATE_RP__MAX,
};

#endif /* XGATE_H */
