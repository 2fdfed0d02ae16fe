//go:build ignore

/* probes_testxdp.c — test-only XDP programs for the probe tests: one aborts
 * (xdp_exception), one redirects to an ifindex that does not exist
 * (xdp_redirect_err with -EINVAL). */

#include "xgate_uapi.h"
#include <bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

SEC("xdp")
int probes_test_abort(struct xdp_md *ctx)
{
	return XDP_ABORTED;
}

SEC("xdp")
int probes_test_bad_redirect(struct xdp_md *ctx)
{
	return bpf_redirect(0x7fffffff, 0);
}
