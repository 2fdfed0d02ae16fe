#!/usr/bin/env bash
# generate-check.sh — prove the committed BPF C still compiles and that the
# committed bpf2go bindings are current, without touching the working tree.
#
# Copies the module (without .git) into a temp dir, runs `go generate ./bpf/...`
# there with the Makefile's BPF2GO_* settings, and compares:
#   - compile failure                         → exit 1
#   - a generated *_bpfel*.go differs          → exit 1 (run `make generate`)
#   - a generated *_bpfel*.o differs           → note only (objects embed
#     compiler details; the Go bindings are what must not drift)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
: "${BPF2GO_CC:=clang-19}" "${BPF2GO_STRIP:=llvm-strip-19}" "${BPF2GO_CFLAGS:=-O2 -g -Wall -Werror}"
export BPF2GO_CC BPF2GO_STRIP BPF2GO_CFLAGS

for tool in "$BPF2GO_CC" "$BPF2GO_STRIP"; do
	command -v "$tool" >/dev/null || { echo "generate-check: $tool not found (make deps-generate)" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && tar --exclude=./.git --exclude=./bin -cf - .) | (cd "$tmp" && tar -xf -)

if ! (cd "$tmp" && go generate ./bpf/...); then
	echo "generate-check: the BPF C in bpf/ does not compile (see above)" >&2
	exit 1
fi

status=0
for f in "$tmp"/bpf/*_bpfel*.go; do
	name="bpf/$(basename "$f")"
	if [ ! -f "$root/$name" ]; then
		echo "generate-check: $name is generated but not in the tree: run make generate" >&2
		status=1
	elif ! cmp -s "$f" "$root/$name"; then
		echo "generate-check: $name is stale: run make generate" >&2
		diff -u "$root/$name" "$f" | head -40 >&2 || true
		status=1
	fi
done
for f in "$tmp"/bpf/*_bpfel*.o; do
	name="bpf/$(basename "$f")"
	if [ -f "$root/$name" ] && ! cmp -s "$f" "$root/$name"; then
		echo "generate-check: note: $name differs from a fresh build (compiler or path)" >&2
	fi
done
[ "$status" -eq 0 ] && echo "generate-check: BPF C compiles, bindings current"
exit "$status"
