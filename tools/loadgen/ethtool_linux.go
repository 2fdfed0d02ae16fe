//go:build linux

package loadgen

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/testenv"
)

// ethtool ioctl commands and sizes (uapi linux/ethtool.h).
const (
	ethtoolGStrings = 0x1b
	ethtoolGStats   = 0x1d
	ethtoolGSSet    = 0x37
	ethSSStats      = 1
	ethGStringLen   = 32
)

type ifreqPtr struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// NICStats reads the driver statistics of the host's link (what
// `ethtool -S` prints). For veth the sender's end shows, per queue,
// tx_queue_<i>_xdp_xmit (frames its ndo_xdp_xmit put into the peer's
// ring) and tx_queue_<i>_xdp_xmit_errors (frames it refused: peer ring
// full, no XDP program on the peer, too long).
func NICStats(h *testenv.Host) (map[string]uint64, error) {
	fd, err := h.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	ioctl := func(buf []byte) error {
		var ifr ifreqPtr
		copy(ifr.name[:], h.Link)
		ifr.data = unsafe.Pointer(&buf[0])
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(buf)
		if errno != 0 {
			return errno
		}
		return nil
	}
	ne := binary.NativeEndian

	// struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[]; }
	info := make([]byte, 20)
	ne.PutUint32(info[0:], ethtoolGSSet)
	ne.PutUint64(info[8:], 1<<ethSSStats)
	if err := ioctl(info); err != nil {
		return nil, fmt.Errorf("ethtool sset info %s: %w", h.Link, err)
	}
	if ne.Uint64(info[8:])&(1<<ethSSStats) == 0 {
		return map[string]uint64{}, nil
	}
	n := int(ne.Uint32(info[16:]))

	// struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[]; }
	strs := make([]byte, 12+n*ethGStringLen)
	ne.PutUint32(strs[0:], ethtoolGStrings)
	ne.PutUint32(strs[4:], ethSSStats)
	ne.PutUint32(strs[8:], uint32(n))
	if err := ioctl(strs); err != nil {
		return nil, fmt.Errorf("ethtool strings %s: %w", h.Link, err)
	}
	// struct ethtool_stats { u32 cmd, n_stats; u64 data[]; }
	vals := make([]byte, 8+n*8)
	ne.PutUint32(vals[0:], ethtoolGStats)
	ne.PutUint32(vals[4:], uint32(n))
	if err := ioctl(vals); err != nil {
		return nil, fmt.Errorf("ethtool stats %s: %w", h.Link, err)
	}
	n = min(n, int(ne.Uint32(strs[8:])), int(ne.Uint32(vals[4:])))
	out := make(map[string]uint64, n)
	for i := 0; i < n; i++ {
		s := strs[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		if j := bytes.IndexByte(s, 0); j >= 0 {
			s = s[:j]
		}
		out[string(s)] = ne.Uint64(vals[8+i*8:])
	}
	return out, nil
}
