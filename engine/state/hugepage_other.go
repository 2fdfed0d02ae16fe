//go:build !linux

package state

// hugePages is a no-op where transparent huge pages are not asked for
// (hugepage_linux.go).
func hugePages[T any]([]T) {}
