package host

// Host facts: how many RX queues an interface really has. Self-contained
// (it imports nothing of the gateway) so that it can move to a package of
// host facts of its own.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RxQueueCount is the number of active RX queues of an interface and how
// it was learnt.
type RxQueueCount struct {
	// Active is the number of RX queues the device receives on (ethtool -l:
	// rx + combined channels). At least 1.
	Active int `json:"active"`
	// Max is the largest count the device allows (0 when unknown).
	Max int `json:"max,omitempty"`
	// Rx and Combined are the RX-only and combined channel counts ethtool
	// reported (-1 when the count came from elsewhere).
	Rx       int `json:"rx"`
	Combined int `json:"combined"`
	// Source is "ethtool", "sysfs" or "fallback".
	Source string `json:"source"`
	// Note explains a fallback (why ethtool and sysfs gave nothing); "" when
	// ethtool answered.
	Note string `json:"note,omitempty"`
}

// ethtoolChannels is struct ethtool_channels (uapi linux/ethtool.h).
type ethtoolChannels struct {
	cmd           uint32
	maxRx         uint32
	maxTx         uint32
	maxOther      uint32
	maxCombined   uint32
	rxCount       uint32
	txCount       uint32
	otherCount    uint32
	combinedCount uint32
}

// ifreqData is struct ifreq with the pointer member of its union
// (ifr_data), padded to the union's 24 bytes.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ActiveRxQueues counts the RX queues ifname receives on, in the network
// namespace of the calling thread (run it where the interface lives). The
// device's maximum (numrxqueues) is not the answer: a veth made without
// numrxqueues has one queue per possible CPU but one active, and
// `ethtool -L` leaves a NIC with fewer channels than it could have; an
// AF_XDP bind to an inactive queue fails with EINVAL.
//
// It asks, in order: ethtool (ETHTOOL_GCHANNELS: rx + combined), sysfs
// (queues/rx-*, only when this /sys shows this network namespace: sysfs
// net entries follow the namespace that mounted it), and else answers 1
// with a Note saying why.
func ActiveRxQueues(ifname string) RxQueueCount {
	ch, eerr := ethtoolGetChannels(ifname)
	if eerr == nil {
		if n := int(ch.rxCount + ch.combinedCount); n > 0 {
			return RxQueueCount{Active: n, Max: int(max(ch.maxRx, ch.maxCombined)), Rx: int(ch.rxCount),
				Combined: int(ch.combinedCount), Source: "ethtool"}
		}
		eerr = errors.New("ethtool reports no rx or combined channels")
	}
	n, serr := SysfsRxQueues(ifname)
	if serr == nil {
		return RxQueueCount{Active: n, Rx: -1, Combined: -1, Source: "sysfs", Note: "ethtool channels: " + eerr.Error()}
	}
	return RxQueueCount{Active: 1, Rx: -1, Combined: -1, Source: "fallback",
		Note: fmt.Sprintf("ethtool channels: %v; sysfs: %v", eerr, serr)}
}

// ethtoolGetChannels runs ETHTOOL_GCHANNELS on a socket made in the calling
// thread's network namespace.
func ethtoolGetChannels(ifname string) (ethtoolChannels, error) {
	ch := ethtoolChannels{cmd: unix.ETHTOOL_GCHANNELS}
	if len(ifname) >= unix.IFNAMSIZ || ifname == "" {
		return ch, fmt.Errorf("interface name %q: 1 to %d bytes", ifname, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ch, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	// ifr.data points at ch for the length of the ioctl only; the kernel
	// reads and writes ch through it and keeps no reference.
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&ch)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return ch, fmt.Errorf("SIOCETHTOOL ETHTOOL_GCHANNELS on %s: %w", ifname, errno)
	}
	return ch, nil
}

// SysfsRxQueues counts /sys/class/net/<ifname>/queues/rx-* (sysfs lists
// the active RX queues), after checking that this /sys shows the calling
// thread's network namespace: the device sysfs shows under ifname has the
// index and the address netlink gives here.
func SysfsRxQueues(ifname string) (int, error) {
	dir := filepath.Join("/sys/class/net", ifname)
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return 0, err
	}
	idx, err1 := os.ReadFile(filepath.Join(dir, "ifindex"))
	addr, err2 := os.ReadFile(filepath.Join(dir, "address"))
	if err1 != nil || err2 != nil || !sameLink(idx, addr, l.Attrs().Index, l.Attrs().HardwareAddr.String()) {
		return 0, errors.New("/sys belongs to another network namespace")
	}
	qs, err := filepath.Glob(filepath.Join(dir, "queues", "rx-*"))
	if err != nil || len(qs) == 0 {
		return 0, fmt.Errorf("no %s/queues/rx-*", dir)
	}
	return len(qs), nil
}

// sameLink reports whether sysfs's ifindex and address texts name the
// link netlink knows by index and hardware address (as net.HardwareAddr
// prints it).
func sameLink(ifindex, address []byte, index int, hw string) bool {
	n, ok := parseDecimal(strings.TrimSpace(string(ifindex)), 1<<31)
	return ok && n == index && strings.EqualFold(strings.TrimSpace(string(address)), hw)
}

// QueueHint is what to tell an operator whose AF_XDP bind to queue q of
// ifname failed with errno: the kernel's reason in words and what to do.
func QueueHint(ifname string, q int, qc RxQueueCount, errno error) string {
	switch {
	case errors.Is(errno, unix.EINVAL):
		shows := fmt.Sprintf("%d active RX queues (%s)", qc.Active, qc.Source)
		kind := "combined" // what NICs have; veth has RX channels
		if qc.Combined >= 0 {
			plural := "s"
			if qc.Active == 1 {
				plural = ""
			}
			shows = fmt.Sprintf("ethtool -l %s shows %d RX channel%s (rx %d, combined %d)", ifname, qc.Active, plural, qc.Rx, qc.Combined)
			if qc.Combined == 0 && qc.Rx > 0 {
				kind = "rx"
			}
		}
		return fmt.Sprintf("the queue is not active: %s; set queues: %d or raise the channels with ethtool -L %s %s %d",
			shows, max(1, min(qc.Active, q)), ifname, kind, q+1)
	case errors.Is(errno, unix.EBUSY):
		return "another AF_XDP socket is bound to this queue (another xgate?); stop it first"
	case errors.Is(errno, unix.EOPNOTSUPP), errors.Is(errno, unix.ENOTSUP):
		return "the driver refuses this bind mode on the queue"
	case errors.Is(errno, unix.EPERM), errors.Is(errno, unix.EACCES):
		return "missing privilege: AF_XDP needs CAP_NET_RAW and CAP_NET_ADMIN"
	case errors.Is(errno, unix.ENOMEM), errors.Is(errno, unix.ENOBUFS):
		return "the UMEM could not be registered: raise RLIMIT_MEMLOCK or lower afxdp.frames"
	}
	return ""
}
