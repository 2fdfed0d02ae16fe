#!/usr/bin/env bash
# update.sh — refresh the vendored BPF headers in this directory.
#
#   libbpf headers (bpf_helpers.h, bpf_helper_defs.h, bpf_endian.h,
#   bpf_tracing.h, bpf_core_read.h) come from Debian's libbpf-dev
#   (/usr/include/bpf, installed by `make deps-generate`).
#
#   xgate_uapi.h (the uapi types, map types, contexts and wire headers of
#   the packet programs) and xgate_kern.h (the CO-RE kernel types the
#   tracing probes read) are ours, written by hand: no vmlinux.h dump.
#
# Run it from anywhere; it writes next to itself. Commit the result.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="${LIBBPF_INCLUDE:-/usr/include/bpf}"

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

echo "headers refreshed in $here:" >&2
cat "$here/VERSIONS" >&2
