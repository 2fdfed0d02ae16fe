package bpf

// The load generator's programs (loadgen.c, used by tools/loadgen) get
// their own bpf2go line so they can be rebuilt alone:
// go generate -run loadgen ./bpf/ (compiler and flags from the Makefile's
// BPF2GO_* as for gen.go). The stem is exported (Loadgen) because the
// generator lives in tools/loadgen; it has no API of its own here.

//go:generate go tool bpf2go -tags linux -target bpfel -type loadgen_control -type loadgen_state -type loadgen_frame Loadgen loadgen.c -- -I./headers -mcpu=v3
