//go:build linux

package testenv

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqPtr is struct ifreq with the pointer member of its union.
type ifreqPtr struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// setGRO switches GRO on the host's veth end (legacy ETHTOOL_SGRO). veth
// only has NAPI instances, which threaded NAPI needs, with GRO on or an XDP
// program attached.
func (h *Host) setGRO(on bool) error {
	fd, err := h.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: unix.ETHTOOL_SGRO}
	if on {
		v.data = 1
	}
	var ifr ifreqPtr
	copy(ifr.name[:], h.Link)
	ifr.data = unsafe.Pointer(&v)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("ethtool gro %s: %w", h.Link, errno)
	}
	return nil
}

// ethtoolChannels is struct ethtool_channels.
type ethtoolChannels struct {
	cmd                                       uint32
	maxRx, maxTx, maxOther, maxCombined       uint32
	rxCount, txCount, otherCount, combinedCnt uint32
}

// channels runs ETHTOOL_GCHANNELS (or SCHANNELS with ch filled in) on the
// host's link, from a socket in the host's namespace.
func (h *Host) channels(ch *ethtoolChannels) error {
	fd, err := h.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var ifr ifreqPtr
	copy(ifr.name[:], h.Link)
	ifr.data = unsafe.Pointer(ch)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("ethtool channels %s: %w", h.Link, errno)
	}
	return nil
}

// ActiveRxQueues is the number of RX queues the host's link receives on
// (ethtool -l: rx + combined channels), which may be fewer than the
// device's numrxqueues.
func (h *Host) ActiveRxQueues() (int, error) {
	ch := ethtoolChannels{cmd: unix.ETHTOOL_GCHANNELS}
	if err := h.channels(&ch); err != nil {
		return 0, err
	}
	return int(ch.rxCount + ch.combinedCnt), nil
}

// SetChannels sets the host's link's RX and TX channel counts (ethtool -L
// rx N tx M) and updates Queues. veth allows up to its numrxqueues and
// numtxqueues.
func (h *Host) SetChannels(rx, tx int) error {
	ch := ethtoolChannels{cmd: unix.ETHTOOL_GCHANNELS}
	if err := h.channels(&ch); err != nil {
		return err
	}
	ch.cmd, ch.rxCount, ch.txCount = unix.ETHTOOL_SCHANNELS, uint32(rx), uint32(tx)
	if err := h.channels(&ch); err != nil {
		return err
	}
	n, err := h.ActiveRxQueues()
	if err != nil {
		return err
	}
	h.Queues = n
	return nil
}
