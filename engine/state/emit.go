package state

// The table side of an emitting window (every_slide, see the engine's
// emit.go): the key text per slot, the newest step observed, and the walk
// over the table that reports a completed window's keys.

import (
	"encoding/binary"
	"math"
	"sync/atomic"
)

// Bounds of WindowConfig.KeyBytes.
const (
	KeyTextMin = 8
	KeyTextMax = 1024
)

// ---------------------------------------------------------------------------
// Key text of an emitting window.

// keyText holds, per slot, the text of the key that owns it:
//
//	words[s*stride+0]  owner: the key hash the text belongs to; 0 while
//	                   being written (or never written)
//	words[s*stride+1]  length, bit 63 set if the key was cut
//	words[s*stride+2:] the bytes, 8 per word, little endian
//
// A seqlock without a counter: a writer stores owner = 0, the length and
// the bytes, then owner = key. A reader loads owner, copies, loads owner
// again and keeps the copy only if both loads equal the key it wants. Go's
// atomics are sequentially consistent, so a reader that saw any word of a
// later write also sees owner != key on its second load. Every word is an
// atomic, so readers never race with writers. Two workers writing the same
// new key concurrently write the same words.
type keyText struct {
	words     []atomic.Uint64
	stride    uint64
	max       int
	truncated atomic.Uint64
}

func keyTextWords(maxBytes int) uint64 { return 2 + uint64(maxBytes+7)/8 }

func newKeyText(capacity, stride uint64) *keyText {
	return &keyText{words: make([]atomic.Uint64, capacity*stride), stride: stride, max: int(stride-2) * 8}
}

// wants reports whether slot s does not hold key's text yet.
func (t *keyText) wants(s, key uint64) bool { return t.words[s*t.stride].Load() != key }

// store writes key's text into slot s (text cut to t.max).
func (t *keyText) store(s, key uint64, text []byte) {
	w := t.words[s*t.stride:][:t.stride]
	w[0].Store(0)
	n := uint64(len(text))
	if len(text) > t.max {
		text = text[:t.max]
		n = uint64(len(text)) | 1<<63
		t.truncated.Add(1)
	}
	w[1].Store(n)
	var buf [8]byte
	for i := 0; i*8 < len(text); i++ {
		c := copy(buf[:], text[i*8:])
		clear(buf[c:])
		w[2+i].Store(binary.LittleEndian.Uint64(buf[:]))
	}
	w[0].Store(key)
}

// load appends slot s's text to b if it belongs to key.
func (t *keyText) load(b []byte, s, key uint64) ([]byte, bool, bool) {
	w := t.words[s*t.stride:][:t.stride]
	if w[0].Load() != key {
		return b, false, false
	}
	n := w[1].Load()
	cut := n&(1<<63) != 0
	n &^= 1 << 63
	if n > uint64(t.max) {
		return b, false, false
	}
	at := len(b)
	var buf [8]byte
	for i := uint64(0); i*8 < n; i++ {
		binary.LittleEndian.PutUint64(buf[:], w[2+i].Load())
		b = append(b, buf[:min(8, n-i*8)]...)
	}
	if w[0].Load() != key {
		return b[:at], false, false
	}
	return b, cut, true
}

// noteStep raises w.seen to step k+1 and wakes the emitter when it does:
// one load per event, a CAS and a send on the first event of a step.
func (w *Window) noteStep(k uint64) {
	for {
		s := w.seen.Load()
		if s >= k+1 {
			return
		}
		if w.seen.CompareAndSwap(s, k+1) {
			for p := w.prev.Load(); p < s && !w.prev.CompareAndSwap(p, s); p = w.prev.Load() {
			}
			if w.wake != nil {
				select {
				case w.wake <- struct{}{}:
				default: // a wake-up is pending
				}
			}
			return
		}
	}
}

// WantsText reports whether w is an emitting window and slot s (from
// AddAt) does not hold key's text yet: the caller then finds the key's text
// and hands it to StoreText, once per key and slot, not per event.
func (w *Window) WantsText(s, key uint64) bool { return w.text != nil && w.text.wants(s, key) }

// StoreText stores key's text in slot s of an emitting window (cut to its
// KeyBytes, counted in KeyTruncated).
func (w *Window) StoreText(s, key uint64, text []byte) { w.text.store(s, key, text) }

// Emitting reports whether w keeps key text for an emitter (every_slide).
func (w *Window) Emitting() bool { return w.text != nil }

// SetWake makes the window send on wake (never blocking) when it sees the
// first event of a step: an emitter's next Due may have changed.
func (w *Window) SetWake(wake chan<- struct{}) { w.wake = wake }

// Start returns the engine time at which the window ending at now begins:
// the start of its oldest step.
func (w *Window) Start(now int64) int64 {
	k := w.step(now)
	return int64(k+1-min(w.n, k+1)) * w.slide
}

// ---------------------------------------------------------------------------
// The emitter's state of a window, kept with the window across reloads.

// emitState is touched by the emitter goroutine only (Due and Walk; the
// rule's counters are the engine's, which outlive a rebuilt window).
type emitState struct {
	done uint64     // windows ending at steps < done are reported
	last []emitLast // per slot, with KeepLast: the last reported value
	// The walk's scratch, here so that it is not allocated per walk.
	acc windowAcc
	buf []byte // key text being read
}

// emitLast is a slot's last reported value and the key it was for.
type emitLast struct {
	key uint64
	val float64
}

// Due returns the engine time of the next walk, false when the window saw
// no event since the last window it reported. A time in the past means now.
func (w *Window) Due() (int64, bool) {
	if w.seen.Load() <= w.emit.done {
		return 0, false
	}
	return int64(w.emit.done+1) * w.slide, true
}

// Walk reports the window that completed last before now if one of its
// steps since the last report had an observation: every live key's
// aggregate over it, through report, at most maxKeys of them; with KeepLast,
// a key whose value moved less than minChange since its last report is
// skipped. A window whose new steps were all quiet is skipped, even when
// the current step has observations (those are reported with the window
// they complete). report gets the window [start, end) in engine time, the
// key's text (valid during the call only), its aggregate, and whether the
// text was cut to KeyBytes; report does not escape, so a closure passed as
// report is not allocated. Walk returns whether it walked, the keys
// reported and the live keys left out for maxKeys. Walk and Due must be
// called by one goroutine (the emitter), and only on an emitting window.
func (w *Window) Walk(now int64, minChange float64, maxKeys int,
	report func(start, end int64, key []byte, value float64, truncated bool)) (walked bool, sent int, left uint64) {
	k := w.step(now)
	seen, done := w.seen.Load(), w.emit.done
	if k == 0 || seen <= done || k-1 < done {
		return false, 0, 0
	}
	w.emit.done = k
	// An observation in steps done .. k-1: the newest one, or when the
	// newest is in the current step, the one before it.
	if !(seen-1 <= k-1 || w.prev.Load() > done) {
		return false, 0, 0
	}
	end := k - 1 // the window of steps end-n+1 .. end, [start, (end+1)*slide)
	start, stop := int64(end+1-min(w.n, end+1))*w.slide, int64(end+1)*w.slide
	a := &w.emit.acc
	tab := &w.tab
	for s := range tab.slots {
		key := tab.slots[s].key.Load()
		if key == 0 {
			continue
		}
		*a = windowAcc{}
		w.gather(uint64(s), end, a)
		if a.count == 0 {
			continue
		}
		v := w.finish(a, 0, 0, false)
		if tab.slots[s].key.Load() != key {
			continue // evicted while we read
		}
		if w.emit.last != nil {
			l := &w.emit.last[s]
			if l.key == key && math.Abs(v-l.val) < minChange {
				continue
			}
		}
		if sent >= maxKeys {
			left++
			continue
		}
		text, cut, ok := w.text.load(w.emit.buf[:0], uint64(s), key)
		w.emit.buf = text
		if !ok {
			continue // its first writer has not stored the text yet: next slide
		}
		if w.emit.last != nil {
			w.emit.last[s] = emitLast{key: key, val: v}
		}
		report(start, stop, text, v, cut)
		sent++
	}
	return true, sent, left
}
