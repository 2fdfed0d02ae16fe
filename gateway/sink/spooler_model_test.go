package sink

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/sink/output"
	"github.com/xgate/xgate/gateway/sink/spool"
)

type modelRec struct {
	sl  *slab
	i   int
	key int
}

// modelRun drives a scripted spooler at random (seed): slabs delivered
// while the broker is up or down, records resolved per key in send order,
// a failure failing the key's later records in flight with it (as
// franz-go does a partition's), slabs taken back in any order, restarts
// that give up what is in flight.
func modelRun(t *testing.T, seed uint64, restarts bool, maxBytes int64, block bool) {
	r := rand.New(rand.NewPCG(seed, 1))
	dir := filepath.Join(t.TempDir(), "spool")
	open := func() (*spooler, *scriptedOutput) {
		out := &scriptedOutput{ids: output.NewIDGen(fmt.Sprint("gw", r.Int()))}
		sk := &sink{slabSize: 1 << 10, slabs: 8, out: out, async: &asyncOutput{out: &errorsOutput{}}}
		sp := Spec{Spool: spool.Config{Path: dir, MaxBytes: maxBytes, Fsync: "never"}, DeliveryTimeout: time.Second}
		if block {
			sp.OnFull = "block"
		}
		p, err := newSpooler(sk, sp)
		if err != nil {
			t.Fatal(err)
		}
		p.msgID, p.down = out.newMsgID, out.down
		p.free = func(*slab) {}
		return p, out
	}
	p, out := open()
	var dropped uint64
	b := &broker{}
	var want []string
	const keys = 3
	left := map[*slab]int{} // records not yet resolved, per slab in flight
	queue := make([][]modelRec, keys)
	var done []*slab // resolved, not yet taken back
	take := func() {
		for _, sl := range sent(out) {
			left[sl] = len(sl.ends)
			from := 0
			for i, end := range sl.ends {
				k := int(sl.buf[from+1] - '0')
				from = int(end)
				queue[k] = append(queue[k], modelRec{sl, i, k})
			}
		}
	}
	resolve := func(m modelRec, fail bool) {
		sl := m.sl
		if fail {
			sl.spool.failed[m.i] = true
			sl.spool.failing.Store(true)
		} else {
			from := 0
			if m.i > 0 {
				from = int(sl.ends[m.i-1])
			}
			b.recs = append(b.recs, string(sl.buf[from:sl.ends[m.i]]))
			b.ids = append(b.ids, string(sl.spool.ids.At(m.i)))
		}
		if left[sl]--; left[sl] == 0 {
			delete(left, sl)
			done = append(done, sl)
		}
	}
	giveBack := func(all bool) {
		for len(done) > 0 && (all || r.IntN(2) == 0) {
			j := r.IntN(len(done))
			sl := done[j]
			done = append(done[:j], done[j+1:]...)
			p.returned(sl)
		}
	}
	n := 0
	for step := 0; step < 400; step++ {
		switch a := r.IntN(10); {
		case a < 3 && n < 60:
			sl := testSlab(fmt.Sprintf("s%d-", n), 1+r.IntN(5))
			for i := range sl.ends { // three keys
				from := 0
				if i > 0 {
					from = int(sl.ends[i-1])
				}
				sl.buf[from+1] = byte('0' + (n+i)%keys)
			}
			n++
			want = append(want, recsOf(sl)...)
			p.deliver(sl)
		case a < 4:
			out.isDown = r.IntN(3) == 0
		case a < 7:
			k := r.IntN(keys)
			if len(queue[k]) == 0 {
				continue
			}
			if r.IntN(5) == 0 { // fails, and the key's later ones with it
				for _, m := range queue[k] {
					resolve(m, true)
				}
				queue[k] = nil
			} else {
				resolve(queue[k][0], false)
				queue[k] = queue[k][1:]
			}
		case a < 9:
			giveBack(false)
		case restarts && a == 9 && r.IntN(8) == 0:
			for k := range queue {
				for _, m := range queue[k] {
					resolve(m, true)
				}
				queue[k] = nil
			}
			giveBack(true)
			p.stopping = true
			if err := p.close(); err != nil {
				t.Fatal(err)
			}
			dropped += p.cnt.dropped.Load()
			p, out = open()
		default:
		}
		p.afterRound()
		take()
	}
	out.isDown = false
	for range 200 {
		for k := range queue {
			for _, m := range queue[k] {
				resolve(m, false)
			}
			queue[k] = nil
		}
		giveBack(true)
		p.afterRound()
		take()
	}
	defer p.close()
	if maxBytes >= 1<<20 {
		b.checkOrder(t, want)
	} else {
		checkSubsequence(t, b, want, dropped+p.cnt.dropped.Load())
	}
	p.publish()
	if p.cnt.records.Load() != 0 || p.q.Unread() != 0 || len(p.order) != 0 {
		t.Fatalf("at the end: spooled %d, unread %d, order %d", p.cnt.records.Load(), p.q.Unread(), len(p.order))
	}
}

// checkSubsequence: the broker holds each record at most once, each
// key's in the order of want, and every record of want it lacks is
// counted dropped.
func checkSubsequence(t *testing.T, b *broker, want []string, dropped uint64) {
	t.Helper()
	ids := map[string]bool{}
	got := map[string]bool{}
	for i, id := range b.ids {
		if ids[id] || got[b.recs[i]] {
			t.Fatalf("record %s (id %s) twice: %v", b.recs[i], id, b.recs)
		}
		ids[id], got[b.recs[i]] = true, true
	}
	pos := map[string]int{}
	for i, w := range want {
		pos[w] = i
	}
	last := map[byte]int{}
	for _, rec := range b.recs {
		k := rec[1]
		if i, ok := last[k]; ok && pos[rec] < i {
			t.Fatalf("key %c out of order: %v", k, b.recs)
		}
		last[k] = pos[rec]
	}
	if uint64(len(want)-len(b.recs)) != dropped {
		t.Fatalf("%d records, %d in the broker, %d counted dropped", len(want), len(b.recs), dropped)
	}
}

// TestSpoolerModel: modelRun with 100 seeds, with and without restarts,
// with a spool that never fills, and one that does (on_full drop and
// block): what reaches the broker is each record once, each key's in the
// order they came, and what does not is counted dropped.
func TestSpoolerModel(t *testing.T) {
	for _, c := range []struct {
		max   int64
		block bool
	}{{1 << 20, false}, {6 << 10, false}, {6 << 10, true}} {
		for seed := range uint64(100) {
			for _, restarts := range []bool{false, true} {
				t.Run(fmt.Sprintf("max=%d,block=%v,seed=%d,restarts=%v", c.max, c.block, seed, restarts), func(t *testing.T) {
					modelRun(t, seed, restarts, c.max, c.block)
				})
			}
		}
	}
}
