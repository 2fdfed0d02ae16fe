package bpf

import "golang.org/x/sys/unix"

// Ktime is CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns, which the
// programs use for block expiry, token buckets and the metadata stamp.
func Ktime() uint64 {
	var ts unix.Timespec
	// CLOCK_MONOTONIC cannot fail with a valid pointer.
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
