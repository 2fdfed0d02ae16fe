package xdp

import (
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/testenv"
)

// mpolFAddr is MPOL_F_ADDR: get_mempolicy reports the policy of an address.
const mpolFAddr = 2

// policyOf returns the memory policy mode and node mask of the page at p.
func policyOf(t *testing.T, p unsafe.Pointer) (int, uint64) {
	t.Helper()
	var mode int32
	var mask [maxNUMANodes / 64]uint64
	_, _, errno := unix.Syscall6(unix.SYS_GET_MEMPOLICY, uintptr(unsafe.Pointer(&mode)),
		uintptr(unsafe.Pointer(&mask[0])), uintptr(len(mask)*64+1), uintptr(p), mpolFAddr, 0)
	if errno != 0 {
		t.Fatalf("get_mempolicy: %v", errno)
	}
	return int(mode), mask[0]
}

// TestUMEMPlacedOnNode: with PlaceNUMA the UMEM carries a preferred-node
// policy for the node asked (this host has node 0 only); without it, the
// default policy. A node the host lacks is an error naming the node.
func TestUMEMPlacedOnNode(t *testing.T) {
	pair := testenv.New(t, testenv.Options{})
	placed := openOn(t, pair.B, 0, Config{PlaceNUMA: true, NUMANode: 0})
	if mode, mask := policyOf(t, unsafe.Pointer(&placed.umem[0])); mode != mpolPreferred || mask != 1 {
		t.Errorf("placed UMEM: policy %d mask %#x, want MPOL_PREFERRED (1) on node 0", mode, mask)
	}
	last := placed.umem[len(placed.umem)-1:]
	if mode, _ := policyOf(t, unsafe.Pointer(&last[0])); mode != mpolPreferred {
		t.Errorf("last UMEM page: policy %d, want the whole UMEM placed", mode)
	}
	placed.Close()

	plain := openOn(t, pair.B, 0, Config{})
	if mode, _ := policyOf(t, unsafe.Pointer(&plain.umem[0])); mode != 0 {
		t.Errorf("unplaced UMEM: policy %d, want MPOL_DEFAULT (0)", mode)
	}
	plain.Close()

	err := pair.B.Do(func() error {
		s, err := Open(pair.B.Ifindex, 0, Config{PlaceNUMA: true, NUMANode: 1000})
		if err == nil {
			s.Close()
		}
		return err
	})
	if err == nil || !errors.Is(err, unix.EINVAL) {
		t.Errorf("node 1000: %v, want EINVAL from mbind", err)
	}
	if err := (Config{PlaceNUMA: true, NUMANode: 5000}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("node 5000 validated: %v", err)
	}
}
