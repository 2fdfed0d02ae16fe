package bpf

// The BPF objects are built from C by bpf2go (make generate). Compiler and
// flags come from the Makefile (BPF2GO_CC, BPF2GO_STRIP, BPF2GO_CFLAGS); the
// flags after "--" are what the sources themselves need: the vendored headers
// and BPF ISA v3 for the atomic compare-and-swap of the token bucket.
// Generated *_bpfel.go/.o are committed, so go build needs no clang.
//
// Every type in xgate.h that Go uses reaches it through bpf2go: with -type,
// or, for xgate_meta, xgate_reason and xgate_rp_reason, as the type of an
// unused .rodata anchor constant in the C (bpf2go emits those by itself and
// refuses a -type for them).

//go:generate go tool bpf2go -tags linux -target bpfel -type xgate_counter -type xgate_src_key -type xgate_block -type xgate_bucket -type xgate_mode -type xgate_flags -type xgate_config -type xgate_cost -type xgate_port_set -type xgate_bfilter_word -type xgate_cidr_key -type xgate_cidr_value Xdp xdp.c -- -I./headers -mcpu=v3
//go:generate go tool bpf2go -tags linux -target bpfel -type xgate_rp_config -type xgate_counter Reuseport reuseport.c -- -I./headers -mcpu=v3
//go:generate go tool bpf2go -tags linux -target bpfel -output-suffix _test trivial trivial.c -- -I./headers -mcpu=v3
