package state

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePageSize is the x86-64 and arm64 (4 KiB base) transparent huge page.
const hugePageSize = 2 << 20

// hugePages asks the kernel to back the 2 MiB-aligned part of s with
// transparent huge pages (madvise MADV_HUGEPAGE; hosts default to
// "madvise" mode, where nothing else does). The key tables and window
// arrays are tens of MiB read at random, one place per event: with 4 KiB
// pages nearly every lookup also misses the TLB (on a virtual machine a
// two-level page walk), with 2 MiB pages a 16 MiB table needs 8 entries.
// Call it right after make, before the memory is touched, so the first
// touch faults in huge pages. Only a hint: the Go heap keeps owning the
// memory (it never moves a large object), no semantics change, and an
// error (THP off, an old kernel) leaves 4 KiB pages.
func hugePages[T any](s []T) {
	if len(s) == 0 {
		return
	}
	var zero T
	p := unsafe.Pointer(&s[0])
	start := uintptr(p)
	end := start + uintptr(len(s))*unsafe.Sizeof(zero)
	from := (start + hugePageSize - 1) &^ (hugePageSize - 1)
	to := end &^ (hugePageSize - 1)
	if to <= from {
		return
	}
	_ = unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(p, from-start)), to-from), unix.MADV_HUGEPAGE)
}
