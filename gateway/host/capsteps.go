package host

// Setup is what a run sets up, as far as capabilities go.
type Setup struct {
	XDP              bool // load and attach the XDP program (afxdp and socket paths)
	Reuseport        bool // the SO_REUSEPORT sockets behind XDP (socket path)
	AFXDP            bool // AF_XDP sockets (afxdp path)
	Probes           bool // the kernel probes (probes.enabled)
	RealtimePriority int  // the workers' SCHED_FIFO priority; 0: none
}

// CapSteps lists the setup steps of a run that sets up s and the
// capabilities each needs, on a kernel with CAP_BPF and CAP_PERFMON
// (Linux >= 5.8; CAP_SYS_ADMIN stands in for both, as the kernel's
// bpf_capable and perfmon_capable accept it).
// Pinning needs none (a pin directory on bpffs the user may write), locked
// memory needs none under RLIMIT_MEMLOCK >= the UMEM (LimitMEMLOCK= in the
// unit; CheckPrivileges says when not), and SCHED_FIFO needs none under
// RLIMIT_RTPRIO >= the priority.
func CapSteps(s Setup) []CapStep {
	var steps []CapStep
	if s.XDP {
		// XDP is a networking program type: loading it needs CAP_NET_ADMIN
		// besides CAP_BPF; and the verifier allows the program's pointer
		// arithmetic (packet end - packet start) only with CAP_PERFMON
		// ("pointer -= pointer prohibited" without it). The socket path's
		// sk_reuseport program (several NUMA nodes) needs CAP_BPF alone.
		steps = append(steps,
			CapStep{Step: "load the XDP program", Caps: []Capability{CapBPF, CapPerfmon, CapNetAdmin}},
			CapStep{Step: "attach XDP to the interface", Caps: []Capability{CapNetAdmin}})
	}
	if s.Reuseport {
		// SO_RCVBUFFORCE beyond net.core.rmem_max; without it the socket
		// gets SO_RCVBUF, capped by rmem_max, so CAP_NET_ADMIN (needed
		// above anyway) is not asked for here.
		steps = append(steps, CapStep{Step: "open the SO_REUSEPORT sockets", Caps: nil})
	}
	if s.AFXDP {
		steps = append(steps, CapStep{Step: "open AF_XDP sockets", Caps: []Capability{CapNetRaw}})
	}
	if s.Probes {
		steps = append(steps, CapStep{Step: "load the kernel probes (tp_btf, socket filter)", Caps: []Capability{CapBPF, CapPerfmon}, Optional: true})
	}
	if p := s.RealtimePriority; p > 0 && RtprioLimit() < uint64(p) {
		steps = append(steps, CapStep{Step: "make the workers SCHED_FIFO", Caps: []Capability{CapSysNice}})
	}
	return steps
}
