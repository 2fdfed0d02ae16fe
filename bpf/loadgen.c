//go:build ignore

/* loadgen.c — the load generator's programs (tools/loadgen).
 *
 * loadgen_tx runs in BPF_PROG_RUN live-frames mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES) with ingress_ifindex = the sending veth:
 * it returns XDP_TX, which the test runner turns into a redirect out of
 * that veth, so the frame reaches the peer through ndo_xdp_xmit.
 *
 * A test run costs tens of milliseconds of setup, so one run must send
 * many frames, and yet the events should vary: when loadgen_nframes > 0,
 * each repetition rewrites the packet with frame (sent mod nframes) of
 * the loadgen_frames table (bpf_xdp_adjust_tail to its length, then
 * bpf_xdp_store_bytes). Live frames reuse pages without rewriting them,
 * so the program never relies on what the page held before.
 *
 * loadgen_control (one entry, shared by all CPUs: a run may migrate
 * between batches) holds the run's quota — frames it may still send; once
 * used up every repetition is dropped unsent, so a run never sends more
 * than asked — and the pacing: one frame per interval_ns (a repetition
 * before its slot is dropped unsent, so paced traffic is smooth), falling
 * behind the schedule by at most slack_ns. Per CPU, loadgen_states counts
 * frames sent (exact, also when a run stops part-way; the i-th frame sent
 * on a CPU is frame i mod nframes), spins (repetitions dropped waiting for
 * a pacing slot), idle (repetitions after the quota was used up) and
 * errors (a frame that could not be written).
 *
 * loadgen_pass is a pass-through program for a receiving veth that has no
 * XDP program of its own (plain mode): veth drops frames sent to it with
 * ndo_xdp_xmit unless its end has one. It counts what it sees.
 * loadgen_drop counts (in the same map) and drops: a receiver that costs
 * next to nothing, to measure the generator itself. */
#include "xgate_uapi.h"
#include <bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

#define LOADGEN_FRAME_MAX 1024

struct loadgen_control {
	__s64 quota;       /* frames this run may still send */
	__u64 interval_ns; /* pacing: one frame per interval; 0 = none */
	__u64 next_ns;     /* pacing: earliest time of the next frame */
	__u64 slack_ns;    /* pacing: how far behind the schedule may catch up */
};

struct loadgen_state {
	__u64 sent;   /* frames handed to XDP_TX, ever */
	__u64 spins;  /* repetitions dropped unsent waiting for a pacing slot */
	__u64 idle;   /* repetitions dropped unsent after the quota was used up */
	__u64 errors; /* repetitions dropped because a frame could not be written */
};

struct loadgen_frame {
	__u32 len;
	__u8 data[LOADGEN_FRAME_MAX];
};

/* Set before load; 0 sends the run's input frame unchanged. */
volatile const __u32 loadgen_nframes = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loadgen_control);
} loadgen_controls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loadgen_state);
} loadgen_states SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* resized to loadgen_nframes at load */
	__type(key, __u32);
	__type(value, struct loadgen_frame);
} loadgen_frames SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} loadgen_rx_count SEC(".maps");

SEC("xdp")
int loadgen_tx(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct loadgen_state *s = bpf_map_lookup_elem(&loadgen_states, &zero);
	struct loadgen_control *c = bpf_map_lookup_elem(&loadgen_controls, &zero);

	if (!s || !c)
		return XDP_ABORTED;
	if (c->quota <= 0) {
		s->idle++;
		return XDP_DROP;
	}
	if (c->interval_ns) {
		__u64 now = bpf_ktime_get_ns();
		__u64 next = c->next_ns;

		if (now < next) {
			s->spins++;
			return XDP_DROP;
		}
		if (next + c->slack_ns < now)
			next = now - c->slack_ns;
		c->next_ns = next + c->interval_ns;
	}
	/* One sender thread: the run's repetitions are sequential, also
	 * across a migration, so a plain decrement is exact. */
	c->quota--;
	if (loadgen_nframes) {
		__u32 idx = s->sent % loadgen_nframes;
		struct loadgen_frame *f = bpf_map_lookup_elem(&loadgen_frames, &idx);
		__u32 len;
		int cur;

		if (!f)
			goto fail;
		len = f->len;
		if (len < 14 || len > LOADGEN_FRAME_MAX)
			goto fail;
		cur = (int)bpf_xdp_get_buff_len(ctx);
		if (bpf_xdp_adjust_tail(ctx, (int)len - cur))
			goto fail;
		if (bpf_xdp_store_bytes(ctx, 0, f->data, len))
			goto fail;
	}
	s->sent++;
	return XDP_TX;
fail:
	c->quota++; /* not sent: the quota stays */
	s->errors++;
	return XDP_DROP;
}

static __always_inline void bump(void *map)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(map, &zero);

	if (c)
		(*c)++;
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
