package engine

import "hash/maphash"

// keySeed is shared by every worker of the process so that the same key
// string hashes to the same table slot whichever worker sees it.
var keySeed = maphash.MakeSeed()

// KeyHash maps a key (a user id, a source address…) to the 64-bit value
// that rate limiters and windows are indexed by. It never returns 0, which
// tables use to mark an empty slot. It does not allocate.
//
// Tables keep only this hash, not the key bytes: two keys share state only
// if their 64-bit hashes collide, which at 10^6 live keys happens with
// probability ~3e-8 per table.
func KeyHash(key string) uint64 {
	h := maphash.String(keySeed, key)
	if h == 0 {
		h = 1
	}
	return h
}

// KeyHashBytes is KeyHash over a byte slice, without copying it.
func KeyHashBytes(key []byte) uint64 {
	h := maphash.Bytes(keySeed, key)
	if h == 0 {
		h = 1
	}
	return h
}
