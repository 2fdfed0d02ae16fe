/* xgate_kern.h — the kernel types the tracing probes (probes.c) read.
 *
 * Kernel-internal structs have no stable layout, so these are CO-RE
 * definitions: only the fields read, marked preserve_access_index, and the
 * loader relocates each access against the running kernel's BTF (a field
 * that moved is found by name; one that is gone fails the load with the
 * field named, and the probe is left out). That is all the probes need of
 * a vmlinux.h; the packet programs need only xgate_uapi.h.
 */
#ifndef XGATE_KERN_H
#define XGATE_KERN_H

#include "xgate_uapi.h"

/* The socket filter's context (uapi: the verifier checks each offset). */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	xgate_md_ptr(void *, flow_keys);
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	xgate_md_ptr(struct bpf_sock *, sk);
	__u32 gso_size;
	__u8 tstamp_type;
	__u64 hwtstamp;
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device;

struct sk_buff {
	struct net_device *dev;
	unsigned char *head;
	__u16 transport_header;
	__u16 network_header;
	__be16 protocol;
	__u64 tstamp;
};

struct bpf_prog_aux {
	__u32 id;
};

struct bpf_prog {
	struct bpf_prog_aux *aux;
};

struct net_device {
	int ifindex;
	possible_net_t nd_net;
};

#pragma clang attribute pop

/* The drop reason of tp_btf/kfree_skb: only its type is needed here (the
 * values reach Go as numbers and are named from the kernel's BTF). */
enum skb_drop_reason {
	SKB_DROP_REASON_NOT_SPECIFIED = 2,
};

#endif /* XGATE_KERN_H */
