package bpf

// The probes (probes.c) get their own bpf2go lines so they can be rebuilt
// alone: go generate -run probes ./bpf/ (compiler and flags from the
// Makefile's BPF2GO_* as for gen.go). The stem is unexported (probesKern):
// the API is the Probes type in probes.go, and LoadProbes is ours. probes_testxdp.c is a test-only XDP
// program that makes xdp_exception and xdp_redirect_err fire.

//go:generate go tool bpf2go -tags linux -target bpfel -type probe_stat -type probe_sock_tick -type probe_config -type probe_dst -type probe_xdp_event -type probe_xdp_key probesKern probes.c -- -I./headers -mcpu=v3
//go:generate go tool bpf2go -tags linux -target bpfel -output-suffix _test probesTestXDP probes_testxdp.c -- -I./headers -mcpu=v3
