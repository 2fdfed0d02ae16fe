/* xgate_uapi.h — the kernel ABI the packet programs need, and nothing else.
 *
 * The XDP, sk_reuseport, load-generator and test programs parse packets
 * and use a few map types; they need no kernel-internal type and no CO-RE,
 * so they do not include vmlinux.h (a dump of one kernel's every type,
 * which only the tracing probes in probes.c need). The definitions below
 * are the stable user-space ABI (uapi): integer types, map types, program
 * return codes, the program contexts, and the wire headers (these are
 * fixed by the protocols). Values and layouts are the kernel's; the
 * struct layouts are checked by the verifier at load time (a context field
 * at a wrong offset is refused), and TestXDPPacketFixtures runs every
 * header field the program reads.
 */
#ifndef XGATE_UAPI_H
#define XGATE_UAPI_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef signed short __s16;
typedef unsigned int __u32;
typedef signed int __s32;
typedef unsigned long long __u64;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

/* Map types (enum bpf_map_type). */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LPM_TRIE = 11,
	BPF_MAP_TYPE_XSKMAP = 17,
	BPF_MAP_TYPE_REUSEPORT_SOCKARRAY = 20,
};

/* Map flags: no preallocation (required of LPM tries). */
#define BPF_F_NO_PREALLOC (1U << 0)

/* Flags of bpf_map_update_elem. */
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_EXIST 2

/* XDP program return codes. */
enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP,
	XDP_PASS,
	XDP_TX,
	XDP_REDIRECT,
};

/* sk_reuseport return codes. */
enum sk_action {
	SK_DROP = 0,
	SK_PASS,
};

/* A context pointer field: 8 bytes on every architecture. */
#define xgate_md_ptr(type, name) \
	union { type name; __u64 :64; } __attribute__((aligned(8)))

/* The XDP program's context. */
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

struct bpf_sock;

/* The sk_reuseport program's context. */
struct sk_reuseport_md {
	xgate_md_ptr(void *, data);
	xgate_md_ptr(void *, data_end);
	__u32 len;
	__u32 eth_protocol;
	__u32 ip_protocol;
	__u32 bind_inany;
	__u32 hash;
	xgate_md_ptr(struct bpf_sock *, sk);
	xgate_md_ptr(struct bpf_sock *, migrating_sk);
};

/* IP protocol numbers. */
enum {
	IPPROTO_TCP = 6,
	IPPROTO_UDP = 17,
};

/* Wire headers: Ethernet (IEEE 802.3), an 802.1Q/802.1ad tag, IPv4
 * (RFC 791), IPv6 (RFC 8200), UDP (RFC 768). Multi-byte fields are in
 * network byte order. */
struct ethhdr {
	unsigned char h_dest[6];
	unsigned char h_source[6];
	__be16 h_proto;
} __attribute__((packed));

struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

struct iphdr {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__u8 ihl:4, version:4;
#else
	__u8 version:4, ihl:4;
#endif
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

struct ipv6hdr {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__u8 priority:4, version:4;
#else
	__u8 version:4, priority:4;
#endif
	__u8 flow_lbl[3];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	struct in6_addr saddr;
	struct in6_addr daddr;
};

struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__u16 check;
};

#endif /* XGATE_UAPI_H */
