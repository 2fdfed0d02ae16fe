package host

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// AllowedCPUs checks that this process may run on every CPU of cpus
// (workers.cpus): taskset and cgroup cpusets narrow the online ones, and a
// worker pinned outside them would fail only when Run starts it.
func AllowedCPUs(cpus []int) error {
	if len(cpus) == 0 {
		return nil
	}
	allowed, err := ProcessCPUs()
	if err != nil {
		return fmt.Errorf("workers.cpus: %w", err)
	}
	for _, c := range cpus {
		if !slices.Contains(allowed, c) {
			return fmt.Errorf("workers.cpus: CPU %d is not one this process may use (its affinity, from taskset or a cpuset: %s)",
				c, FormatCPUList(allowed))
		}
	}
	return nil
}

// ProcessCPUs lists, ascending, the CPUs this process may run on: its main
// thread's affinity (the calling thread may be a locked one with a set of
// its own, or one the Housekeeping confined).
func ProcessCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &set); err != nil {
		return nil, fmt.Errorf("read the process's CPU affinity: %w", err)
	}
	var cpus []int
	for c := 0; c < CPUSetSize && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// CPUSetSize is how many CPUs a unix.CPUSet holds.
const CPUSetSize = int(unsafe.Sizeof(unix.CPUSet{})) * 8

// WillMountBPFFS reports whether EnsureBPFFS would mount bpffs for pinPath.
func WillMountBPFFS(pinPath string) bool {
	return pinPath != "" && os.Geteuid() == 0 && strings.HasPrefix(filepath.Clean(pinPath)+"/", "/sys/fs/bpf/")
}

// EnsureBPFFS mounts bpffs at /sys/fs/bpf when the pin path lies below it
// and nothing is mounted there yet (as systemd and cilium do). Other pin
// paths must be on bpffs already.
func EnsureBPFFS(pinPath string) (mounted bool, err error) {
	const root = "/sys/fs/bpf"
	if !WillMountBPFFS(pinPath) {
		return false, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return false, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return false, err
	}
	if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs at %s: %w (mount it yourself: mount -t bpf bpf %s)", root, err, root)
	}
	return true, nil
}
