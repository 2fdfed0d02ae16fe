// Package state holds the engine's per-key state tables: the lock-free key
// table (ratelimit.go's keyTable), the GCRA rate limiter, the sliding
// windows with their segment reset protocol (window.go), the HyperLogLog
// registers of distinct counts (sketch.go), the key text and walk of
// emitting windows (emit.go), their memory figures, and the Clock they
// read. It works on 64-bit key hashes and float values, not on events; the
// engine's rules drive it. Pure Go, no syscalls.
package state
