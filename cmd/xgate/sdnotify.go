package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// sdNotify sends the state lines to systemd's notification socket
// ($NOTIFY_SOCKET, a datagram socket; "@…" is an abstract address), the
// protocol of sd_notify(3): READY=1, RELOADING=1, STOPPING=1, STATUS=….
// Without $NOTIFY_SOCKET (not started by systemd with Type=notify) it does
// nothing.
func sdNotify(lines ...string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("sd_notify %s: %w", addr, err)
	}
	return nil
}

// monotonicUsec is CLOCK_MONOTONIC in µs, which RELOADING=1 carries
// (MONOTONIC_USEC=) so that systemd can tell this reload from older ones.
func monotonicUsec() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() / 1000
}
