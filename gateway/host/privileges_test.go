package host

import (
	"math"
	"os"
	"strings"
	"testing"
)

func procFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/proc/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseCapEff(t *testing.T) {
	for _, tc := range []struct {
		file string
		has  []Capability
		not  []Capability
		err  string
	}{
		{file: "status-root", has: []Capability{CapBPF, CapNetAdmin, CapNetRaw, CapPerfmon, CapSysAdmin, CapSysResource, CapIPCLock}},
		{file: "status-user", not: []Capability{CapBPF, CapNetAdmin, CapNetRaw, CapSysAdmin}},
		{file: "status-setcap", has: []Capability{CapBPF, CapNetAdmin, CapNetRaw}, not: []Capability{CapPerfmon, CapSysAdmin, CapIPCLock}},
		{file: "status-sysadmin", has: []Capability{CapSysAdmin, CapNetAdmin}, not: []Capability{CapBPF, CapNetRaw}},
		{file: "status-container", has: []Capability{CapBPF, CapIPCLock}, not: []Capability{CapSysResource}},
		{file: "status-nocapeff", err: "no CapEff line"},
		{file: "status-badcapeff", err: `CapEff "zzzz": not a hex mask`},
	} {
		caps, err := ParseCapEff(procFixture(t, tc.file))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.file, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		for _, c := range tc.has {
			if !caps.Has(c) {
				t.Errorf("%s: lacks %v", tc.file, c)
			}
		}
		for _, c := range tc.not {
			if caps.Has(c) {
				t.Errorf("%s: has %v", tc.file, c)
			}
		}
	}
	if CapBPF.String() != "CAP_BPF" || Capability(63).String() != "capability(63)" || CapSet(math.MaxUint64).Has(64) {
		t.Error("capability names or bounds")
	}
}

func TestParseKernelRelease(t *testing.T) {
	for _, tc := range []struct {
		in         string
		maj, minor int
		ok         bool
	}{
		{"6.18.44-fc-v669", 6, 18, true},
		{"5.4.0-150-generic", 5, 4, true},
		{"5.11", 5, 11, true},
		{"4.19.0+\n", 4, 19, true},
		{"6.1-rc1", 6, 1, true},
		{"6", 0, 0, false},
		{"x.y", 0, 0, false},
		{"", 0, 0, false},
	} {
		maj, minor, err := ParseKernelRelease(tc.in)
		if (err == nil) != tc.ok || maj != tc.maj || minor != tc.minor {
			t.Errorf("ParseKernelRelease(%q) = %d.%d, %v", tc.in, maj, minor, err)
		}
	}
}

func TestMountFor(t *testing.T) {
	m := procFixture(t, "mounts-bpffs")
	for _, tc := range []struct{ dir, fstype, mp string }{
		{"/sys/fs/bpf", "bpf", "/sys/fs/bpf"},
		{"/sys/fs/bpf/xgate/sub", "bpf", "/sys/fs/bpf"},
		{"/sys/fs/bpfx", "sysfs", "/sys"},
		{"/sys/fs", "sysfs", "/sys"},
		{"/run/my bpf", "bpf", "/run/my bpf"},
		{"/var/lib", "ext4", "/"},
	} {
		fstype, mp := MountFor(m, tc.dir)
		if fstype != tc.fstype || mp != tc.mp {
			t.Errorf("MountFor(%q) = %s at %s, want %s at %s", tc.dir, fstype, mp, tc.fstype, tc.mp)
		}
	}
	if fstype, _ := MountFor(procFixture(t, "mounts-shadowed"), "/sys/fs/bpf"); fstype != "tmpfs" {
		t.Errorf("a tmpfs stacked on bpffs: got %s", fstype)
	}
}

func TestCheckHost(t *testing.T) {
	afxdp := Needs{BPF: true, NetAdmin: true, NetRaw: true, PinPath: "/sys/fs/bpf/xgate", UMEMBytes: 32 << 20}
	socket := Needs{BPF: true, NetAdmin: true, PinPath: "/sys/fs/bpf/xgate"}
	const setcap4 = "run as root or grant them: setcap cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw+ep bin/xgate"
	const perfmonXDP = "needs CAP_PERFMON (the verifier allows the XDP program's packet arithmetic only with it)"
	for _, tc := range []struct {
		name    string
		need    Needs
		host    Host
		fatal   []string // messages of the fatal problems, in order
		info    []string // substrings of the informational ones
		noFatal bool
	}{
		{name: "root on a new kernel",
			need: afxdp, host: Host{Status: procFixture(t, "status-root"), Mounts: procFixture(t, "mounts-bpffs"), Release: "6.18.44", Memlock: 8 << 20},
			info: []string{"memlock: Linux 6.18 charges BPF maps to the memory cgroup (>= 5.11), so RLIMIT_MEMLOCK (8 MiB) does not limit them"}},
		{name: "unprivileged user",
			need: afxdp, host: Host{Status: procFixture(t, "status-user"), Mounts: procFixture(t, "mounts-bpffs"), Release: "6.1.0", Memlock: 8 << 20},
			fatal: []string{
				"needs CAP_BPF",
				perfmonXDP,
				"needs CAP_NET_ADMIN",
				"needs CAP_NET_RAW: " + setcap4, // one hint, naming them all
				"RLIMIT_MEMLOCK is 8 MiB but the AF_XDP UMEM needs 32 MiB and is charged to it without CAP_IPC_LOCK: grant cap_ipc_lock, or raise it: ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit",
			}},
		// A binary granted bpf, net_admin and net_raw lacks perfmon,
		// which the XDP program needs (and the probes).
		{name: "setcap binary, memlock unlimited",
			need: afxdp, host: Host{Status: procFixture(t, "status-setcap"), Mounts: procFixture(t, "mounts-bpffs"), Release: "6.1.0", Memlock: math.MaxUint64},
			fatal: []string{perfmonXDP + ": run as root or grant it: setcap cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw+ep bin/xgate"},
			info:  []string{"RLIMIT_MEMLOCK (unlimited) does not limit them"}},
		{name: "setcap binary wanting probes",
			need:  Needs{Probes: true, Binary: "/usr/local/bin/xgate"},
			host:  Host{Status: procFixture(t, "status-setcap"), Release: "6.1.0", Memlock: math.MaxUint64},
			fatal: []string{"needs CAP_PERFMON for probes: run as root or grant it: setcap cap_perfmon+ep /usr/local/bin/xgate"}},
		{name: "CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON",
			need: Needs{BPF: true, NetAdmin: true, Probes: true},
			host: Host{Status: procFixture(t, "status-sysadmin"), Release: "5.15.0", Memlock: math.MaxUint64}, noFatal: true},
		{name: "old kernel: CAP_SYS_ADMIN is required",
			need: socket, host: Host{Status: procFixture(t, "status-setcap"), Mounts: procFixture(t, "mounts-bpffs"), Release: "5.4.0-150-generic", Memlock: math.MaxUint64},
			fatal: []string{"needs CAP_SYS_ADMIN (Linux 5.4 predates CAP_BPF and CAP_PERFMON): run as root or grant it: setcap cap_sys_admin,cap_net_admin+ep bin/xgate"}},
		{name: "old kernel, low memlock",
			need: socket, host: Host{Status: procFixture(t, "status-sysadmin"), Mounts: procFixture(t, "mounts-bpffs"), Release: "5.10.0", Memlock: 64 << 10},
			fatal: []string{"RLIMIT_MEMLOCK is 64 KiB and Linux 5.10 charges BPF maps to it (before 5.11): raise it: ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit"}},
		{name: "old kernel, low memlock, can raise it",
			need: socket, host: Host{Status: procFixture(t, "status-root"), Mounts: procFixture(t, "mounts-bpffs"), Release: "5.10.0", Memlock: 64 << 10},
			info: []string{"memlock: Linux 5.10 charges BPF maps to RLIMIT_MEMLOCK (64 KiB); xgate raises it (it has CAP_SYS_RESOURCE)"}},
		{name: "container root without CAP_SYS_RESOURCE still has CAP_IPC_LOCK",
			need: afxdp, host: Host{Status: procFixture(t, "status-container"), Mounts: procFixture(t, "mounts-bpffs"), Release: "6.18.44-fc-v669", Memlock: 8 << 20},
			info: []string{"does not limit them"}},
		{name: "no bpffs",
			need: socket, host: Host{Status: procFixture(t, "status-root"), Mounts: procFixture(t, "mounts-nobpffs"), Release: "6.18.0", Memlock: math.MaxUint64},
			fatal: []string{"bpffs is not mounted at /sys/fs/bpf: mount -t bpf bpf /sys/fs/bpf"}},
		{name: "bpffs shadowed",
			need: Needs{PinPath: "/sys/fs/bpf/xgate/"}, host: Host{Status: procFixture(t, "status-root"), Mounts: procFixture(t, "mounts-shadowed")},
			fatal: []string{"bpffs is not mounted at /sys/fs/bpf: mount -t bpf bpf /sys/fs/bpf"}},
		{name: "pin path elsewhere",
			need: Needs{PinPath: "/run/my bpf/xgate"}, host: Host{Status: procFixture(t, "status-root"), Mounts: procFixture(t, "mounts-bpffs")}, noFatal: true},
		{name: "status unreadable",
			need: socket, host: Host{Mounts: procFixture(t, "mounts-bpffs"), Release: "6.18.0", Memlock: math.MaxUint64},
			fatal: []string{"cannot read this process's capabilities (/proc/self/status: no CapEff line in the process status)"}},
		{name: "plain mode needs nothing",
			need: Needs{}, host: Host{Status: procFixture(t, "status-user")}, noFatal: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := CheckHost(tc.need, tc.host)
			var fatal []string
			for _, p := range FatalProblems(ps) {
				fatal = append(fatal, p.Msg)
			}
			if tc.noFatal || tc.fatal != nil || tc.info != nil {
				if strings.Join(fatal, "\n") != strings.Join(tc.fatal, "\n") {
					t.Errorf("fatal problems:\n  %s\nwant\n  %s", strings.Join(fatal, "\n  "), strings.Join(tc.fatal, "\n  "))
				}
			}
			for _, w := range tc.info {
				found := false
				for _, p := range ps {
					if !p.Fatal && strings.Contains(p.Msg, w) {
						found = true
					}
				}
				if !found {
					t.Errorf("no information %q in %+v", w, ps)
				}
			}
		})
	}
}

// TestCheckPrivilegesThisProcess runs the real check: it must not fail to
// read anything, and as root it finds all capabilities.
func TestCheckPrivilegesThisProcess(t *testing.T) {
	h := ReadHost()
	if h.Status == "" || h.Mounts == "" || h.Release == "" || h.Memlock == 0 {
		t.Fatalf("host %+v", h)
	}
	ps := CheckPrivileges(Needs{BPF: true, NetAdmin: true, NetRaw: true, UMEMBytes: 1 << 20})
	for _, p := range ps {
		t.Logf("fatal=%v %s", p.Fatal, p.Msg)
	}
	if os.Geteuid() != 0 {
		t.Skip("not root")
	}
	caps, err := ParseCapEff(h.Status)
	if err != nil {
		t.Fatal(err)
	}
	if caps.Has(CapBPF) && caps.Has(CapNetAdmin) && caps.Has(CapNetRaw) && caps.Has(CapIPCLock) {
		if f := FatalProblems(ps); len(f) != 0 {
			t.Errorf("root with all capabilities has problems: %+v", f)
		}
	}
}
