package gateway

import (
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/packet"
	"github.com/xgate/xgate/xdp"
)

// BenchmarkXSKBatch: the afxdp worker's work on a batch of 64 frames,
// with the frames written just before by a thread on the other CPU, as
// the kernel's copy (or a NIC's DMA) writes them: so their lines are not
// in this CPU's caches, as on the live path. "warm" is the worker's path
// (warm, then decide each frame), "cold" decides without warm, "local"
// is warm with the frames written by this CPU (the floor). The
// frames rotate through a UMEM-sized area (8192 frames of 4 KiB).
// cpu-ns/frame is the worker thread's CPU time on the batches (clock read
// around each batch, its own cost included), per frame. Needs 2 CPUs.
func BenchmarkXSKBatch(b *testing.B) {
	if runtime.NumCPU() < 2 {
		b.Skip("needs 2 CPUs")
	}
	const batch, frames, frameSize, headroom = 64, 8192, 4096, 256
	payloads := itEvents(64)
	var tmpl [][]byte
	var metas []xdp.Meta
	for i, p := range payloads {
		f := packet.Frame{Src: netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}), Dst: netip.MustParseAddr("198.18.1.1"), Payload: p}
		fb := f.Bytes()
		tmpl = append(tmpl, fb)
		metas = append(metas, handoffOf(b, fb))
	}
	for _, mode := range []string{"warm", "cold", "local"} {
		b.Run(mode, func(b *testing.B) {
			umem := make([]byte, frames*frameSize)
			w := bareWorker(b, nil)
			x := &xskQueue{frames: make([]xdp.Frame, batch), decided: make([]bool, batch)}
			w.xsk = x
			// The writer, on CPU 1: asked for batch k (want = k+1), it
			// writes that batch's frames and reports done = k+1.
			var want, done atomic.Int64
			quit := make(chan struct{})
			writerDone := make(chan struct{})
			go func() {
				defer close(writerDone)
				runtime.LockOSThread() // left locked: the thread ends with the goroutine
				var set unix.CPUSet
				set.Set(1)
				_ = unix.SchedSetaffinity(0, &set)
				for k := int64(0); ; k++ {
					for want.Load() <= k {
						select {
						case <-quit:
							return
						default:
						}
					}
					for j := range batch {
						slot := (int(k)*batch + j) % frames
						t := tmpl[(int(k)*batch+j)%len(tmpl)]
						copy(umem[slot*frameSize+headroom:], t)
					}
					done.Store(k + 1)
				}
			}()
			defer func() { close(quit); <-writerDone }()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var set, old unix.CPUSet
			_ = unix.SchedGetaffinity(0, &old)
			set.Set(0)
			_ = unix.SchedSetaffinity(0, &set)
			defer unix.SchedSetaffinity(0, &old)
			var clk busyMeter
			var cpuNs uint64
			b.ReportAllocs()
			k := int64(0)
			for b.Loop() {
				if mode != "local" {
					want.Store(k + 1)
					for done.Load() <= k {
					}
				}
				for j := range batch {
					slot := (int(k)*batch + j) % frames
					t := tmpl[(int(k)*batch+j)%len(tmpl)]
					off := slot*frameSize + headroom
					if mode == "local" {
						copy(umem[off:], t)
					}
					x.frames[j] = xdp.Frame{Data: umem[off : off+len(t) : off+len(t)], Meta: metas[(int(k)*batch+j)%len(tmpl)]}
				}
				c0 := clk.threadCPU()
				if mode != "cold" {
					x.warm(batch)
				}
				w.decideFrames(batch)
				cpuNs += clk.threadCPU() - c0
				k++
			}
			b.ReportMetric(float64(cpuNs)/float64(k*batch), "cpu-ns/frame")
		})
	}
}
