package bpf

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// fallbackTick is assumed when CONFIG_HZ cannot be read: HZ=100, the
// coarsest tick Linux offers, so the coarse bucket clock is chosen only
// when it is safe for every HZ.
const fallbackTick = 10 * time.Millisecond

// kernelTick is the length of a jiffy in ns (1e9 / CONFIG_HZ), the
// resolution of the coarse token-bucket clock (bpf_jiffies64). Read from
// /proc/config.gz or /boot/config-$(uname -r); fallbackTick when neither
// says.
var kernelTick = sync.OnceValue(func() uint64 {
	if hz := configHZ(); hz > 0 {
		return uint64(time.Second) / hz
	}
	return uint64(fallbackTick)
})

// configHZ returns CONFIG_HZ of the running kernel, or 0 when unknown.
func configHZ() uint64 {
	if f, err := os.Open("/proc/config.gz"); err == nil {
		defer f.Close()
		if zr, err := gzip.NewReader(f); err == nil {
			if hz := parseHZ(zr); hz > 0 {
				return hz
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		release := string(bytes.TrimRight(u.Release[:], "\x00"))
		if f, err := os.Open("/boot/config-" + release); err == nil {
			defer f.Close()
			return parseHZ(f)
		}
	}
	return 0
}

// parseHZ finds CONFIG_HZ=<n> in a kernel config (0 if absent or odd).
func parseHZ(r io.Reader) uint64 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			hz, err := strconv.ParseUint(v, 10, 64)
			if err != nil || hz == 0 || hz > 10000 {
				return 0
			}
			return hz
		}
	}
	return 0
}
