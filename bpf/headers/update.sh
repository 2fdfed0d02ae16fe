#!/usr/bin/env bash
# update.sh — refresh the vendored BPF headers in this directory.
#
#   libbpf headers (bpf_helpers.h, bpf_helper_defs.h, bpf_endian.h,
#   bpf_tracing.h, bpf_core_read.h) come from Debian's libbpf-dev
#   (/usr/include/bpf, installed by `make deps-generate`).
#
#   vmlinux.h is the C dump of a kernel's BTF (every kernel type, with
#   preserve_access_index so CO-RE relocates field offsets at load time).
#   It comes from $VMLINUX_BTF (default /sys/kernel/btf/vmlinux), so run this
#   on a kernel at least as new as the oldest one we support features for.
#   Set SKIP_VMLINUX=1 to refresh only the libbpf headers.
#
# Run it from anywhere; it writes next to itself. Commit the result.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="${LIBBPF_INCLUDE:-/usr/include/bpf}"
btf="${VMLINUX_BTF:-/sys/kernel/btf/vmlinux}"

libbpf_headers=(bpf_helpers.h bpf_helper_defs.h bpf_endian.h bpf_tracing.h bpf_core_read.h)

if [ ! -d "$src" ]; then
	echo "update.sh: $src missing; install libbpf-dev (make deps-generate)" >&2
	exit 1
fi

version="$(dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null || echo unknown)"
for h in "${libbpf_headers[@]}"; do
	install -m 0644 "$src/$h" "$here/$h"
done
echo "libbpf-dev $version" > "$here/VERSIONS"

if [ "${SKIP_VMLINUX:-0}" != 1 ]; then
	if ! command -v bpftool >/dev/null; then
		echo "update.sh: bpftool not found (apt-get install bpftool), or SKIP_VMLINUX=1" >&2
		exit 1
	fi
	if [ ! -r "$btf" ]; then
		echo "update.sh: $btf not readable: the kernel needs CONFIG_DEBUG_INFO_BTF=y" >&2
		exit 1
	fi
	tmp="$(mktemp)"
	trap 'rm -f "$tmp"' EXIT
	bpftool btf dump file "$btf" format c > "$tmp"
	install -m 0644 "$tmp" "$here/vmlinux.h"
	echo "vmlinux.h from $btf, kernel $(uname -r), $(bpftool version | head -1)" >> "$here/VERSIONS"
fi
echo "headers refreshed in $here:" >&2
cat "$here/VERSIONS" >&2
