//go:build linux

package bench

import (
	"runtime"
	"strings"
	"sync"
)

// workerFuncPrefix names the gateway's receive loops (runXSK, runSocket):
// an allocation whose stack passes through one of them was made on a
// worker's hot path. A bench test holds the name to the running gateway.
const workerFuncPrefix = "github.com/xgate/xgate/gateway.(*worker).run"

// allocProfile counts the allocations made on the gateway's workers, not
// the whole process: the harness (polling Stats) and the generator
// (reading its BPF maps between test runs) allocate during a window too.
// While it is active every allocation of the process is recorded in the
// runtime's memory profile (MemProfileRate 1: the runtime then samples
// each allocation, which costs a stack walk per allocation — nothing on
// an allocation-free hot path). workerAllocs sums the records whose stack
// passes through a worker loop.
//
// One limit: the runtime's tiny allocator (pointer-free objects under 16
// bytes) records only the allocation that opens a new 16-byte block, not
// those packed into a block it already has. A hot path that makes tiny
// allocations is still seen (at least one record per 16 bytes of them),
// but its count is a lower bound.
//
// Only one allocProfile may be active at a time (MemProfileRate is
// process-wide); the bench runs its modes one after the other.
type allocProfile struct {
	prevRate int
	match    func(fn string) bool // a function of the stacks to count
	recs     []runtime.MemProfileRecord
	matches  map[uintptr]bool // by program counter, symbolised once
}

var allocProfileMu sync.Mutex

// profileWorkerAllocs starts recording every allocation, to count those
// of the gateway's workers; stop ends it.
func profileWorkerAllocs() *allocProfile {
	return profileAllocs(func(fn string) bool { return strings.HasPrefix(fn, workerFuncPrefix) })
}

// profileAllocs starts recording every allocation, to count those whose
// stack has a function that match accepts; stop ends it.
func profileAllocs(match func(fn string) bool) *allocProfile {
	allocProfileMu.Lock()
	p := &allocProfile{prevRate: runtime.MemProfileRate, match: match, matches: map[uintptr]bool{}}
	runtime.MemProfileRate = 1
	return p
}

// stop restores the previous profiling rate.
func (p *allocProfile) stop() {
	runtime.MemProfileRate = p.prevRate
	allocProfileMu.Unlock()
}

// count is the number of allocations recorded so far whose stack has a
// matching function (inlined calls included). It runs a garbage
// collection first: the runtime publishes the profile at the end of a
// cycle.
func (p *allocProfile) count() uint64 {
	runtime.GC()
	n, ok := runtime.MemProfile(p.recs, true)
	for !ok {
		p.recs = make([]runtime.MemProfileRecord, n+n/4+16)
		n, ok = runtime.MemProfile(p.recs, true)
	}
	var total uint64
	for i := range p.recs[:n] {
		r := &p.recs[i]
		if p.onStack(r.Stack()) {
			total += uint64(r.AllocObjects)
		}
	}
	return total
}

func (p *allocProfile) onStack(stk []uintptr) bool {
	for _, pc := range stk {
		m, seen := p.matches[pc]
		if !seen {
			// One return address may stand for several functions
			// when calls were inlined into its frame.
			frames := runtime.CallersFrames([]uintptr{pc})
			for {
				f, more := frames.Next()
				if p.match(f.Function) {
					m = true
					break
				}
				if !more {
					break
				}
			}
			p.matches[pc] = m
		}
		if m {
			return true
		}
	}
	return false
}
