package sink

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/sink/output"
	"github.com/xgate/xgate/gateway/sink/spool"
)

// scriptedOutput is an async output whose records the test resolves: it
// gives every record it is handed a message id, as the real outputs do,
// and keeps the slabs in flight until the test settles them.
type scriptedOutput struct {
	recordingOutput
	ids    output.IDGen
	isDown bool
}

func (o *scriptedOutput) write(sl *slab) {
	if ss := sl.spool; ss != nil && !ss.replay {
		ss.ids.Reset()
		for range sl.ends {
			ss.ids.AddNext(&o.ids)
		}
	}
	o.recordingOutput.write(sl)
}
func (o *scriptedOutput) newMsgID(b []byte) []byte { return o.ids.Next(b) }
func (o *scriptedOutput) down() bool               { return o.isDown }

// errorsOutput is the output.Output behind a scripted spooler's sink: it
// only keeps the last error (what publish notes of the spool's).
type errorsOutput struct{ output.Acks }

func (*errorsOutput) Write(*output.Slab)       {}
func (*errorsOutput) Finish() error            { return nil }
func (*errorsOutput) Abort()                   {}
func (*errorsOutput) GiveUp()                  {}
func (*errorsOutput) NewMsgID(b []byte) []byte { return b }
func (*errorsOutput) Down() bool               { return false }

// broker is what the test's broker holds: records in the order it took
// them, and their ids.
type broker struct {
	recs, ids []string
}

// settle resolves every record of sl (take), then the spooler takes sl
// back.
func (b *broker) settle(p *spooler, sl *slab, fail func(rec string) bool) {
	p.sk.cnt.records.Add(uint64(b.take(sl, fail))) // as the outputs count acks
	p.returned(sl)
}

// take resolves every record of sl: those fail says fail, the rest go to
// the broker.
func (b *broker) take(sl *slab, fail func(rec string) bool) (took int) {
	from := 0
	for i, end := range sl.ends {
		rec := string(sl.buf[from:end])
		from = int(end)
		if fail(rec) { // as output.Slab.SpoolFailed does
			sl.spool.failed[i] = true
			sl.spool.failing.Store(true)
			continue
		}
		b.recs = append(b.recs, rec)
		b.ids = append(b.ids, string(sl.spool.ids.At(i)))
		took++
	}
	return took
}

// checkOrder: every record of want is in the broker once, with one id,
// and each key's records in the order of want.
func (b *broker) checkOrder(t *testing.T, want []string) {
	t.Helper()
	if len(b.recs) != len(want) {
		t.Fatalf("broker holds %d records %v, want %d %v", len(b.recs), b.recs, len(want), want)
	}
	seen := map[string]bool{}
	for _, id := range b.ids {
		if seen[id] || id == "" {
			t.Fatalf("id %q twice or empty: %v", id, b.ids)
		}
		seen[id] = true
	}
	byKey := func(recs []string) map[string][]string {
		m := map[string][]string{}
		for _, r := range recs {
			k, _, _ := strings.Cut(r, ":")
			m[k] = append(m[k], r)
		}
		return m
	}
	got, exp := byKey(b.recs), byKey(want)
	for k, w := range exp {
		if !slices.Equal(got[k], w) {
			t.Fatalf("key %s: broker has %v, want %v (all: %v)", k, got[k], w, b.recs)
		}
	}
}

// testSlab is a worker slab holding records "<key>:<name><i>" for i in
// [0, n), keys alternating k0, k1.
func testSlab(name string, n int) *slab {
	sl := &slab{buf: make([]byte, 0, 1<<10), ends: make([]uint32, 0, 16)}
	for i := range n {
		sl.buf = fmt.Appendf(sl.buf, "k%d:%s%d", i%2, name, i)
		sl.ends = append(sl.ends, uint32(len(sl.buf)))
	}
	return sl
}

func recsOf(sls ...*slab) (out []string) {
	for _, sl := range sls {
		from := 0
		for _, end := range sl.ends {
			out = append(out, string(sl.buf[from:end]))
			from = int(end)
		}
	}
	return out
}

func newScriptedSpooler(t *testing.T, dir string) (*spooler, *scriptedOutput, *[]*slab) {
	t.Helper()
	out := &scriptedOutput{ids: output.NewIDGen("gw")}
	sk := &sink{slabSize: 1 << 10, slabs: 8, out: out, async: &asyncOutput{out: &errorsOutput{}}}
	p, err := newSpooler(sk, Spec{Spool: spool.Config{Path: dir, MaxBytes: 1 << 20}, DeliveryTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p.msgID, p.down = out.newMsgID, out.down // what bind takes from an output.Output
	var freed []*slab
	p.free = func(sl *slab) { freed = append(freed, sl) }
	return p, out, &freed
}

// sent returns the slabs handed to out since the last call.
func sent(out *scriptedOutput) []*slab {
	s := out.slabs
	out.slabs = nil
	return s
}

// TestSpoolerOrderAfterFailures: two slabs are in flight when the broker
// goes down for key k1's partition (as franz-go fails a partition's later
// records with an earlier one, both slabs' k1 records fail; their k0
// records are taken). A third slab comes meanwhile and is stored. The
// slabs come back out of order. Once the broker is back, the broker holds
// every record once, each key's in the order they came: the failed
// records are sent again before the stored slab, the delivered ones are
// not sent again. Then the same with a restart between the failure and
// the replay: the delivered set survives it.
func TestSpoolerOrderAfterFailures(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "spool")
			p, out, freed := newScriptedSpooler(t, dir)
			b := &broker{}
			a, bb, c := testSlab("a", 4), testSlab("b", 4), testSlab("c", 4)
			want := recsOf(a, bb, c)
			if !p.deliver(a) || !p.deliver(bb) || len(sent(out)) != 2 {
				t.Fatal("a and b not sent")
			}
			out.isDown = true
			if p.deliver(c) {
				t.Fatal("c kept: want it stored while the broker is down")
			}
			p.afterRound()
			if p.resident != 2 || p.q.Unread() != 4 {
				t.Fatalf("after storing c: %d slabs adopted, %d records unread; want 2, 4", p.resident, p.q.Unread())
			}
			k1 := func(rec string) bool { return strings.HasPrefix(rec, "k1:") }
			b.take(a, k1) // the broker takes a's records before b's
			b.take(bb, k1)
			p.returned(bb) // but b is back first: it waits for a
			if len(*freed) != 0 || p.rewinding {
				t.Fatalf("b taken back before a: freed %d, rewinding %v", len(*freed), p.rewinding)
			}
			p.returned(a)
			if len(*freed) != 2 || p.rewinding || p.q.Unread() != 12 {
				t.Fatalf("after a and b: freed %d, rewinding %v, unread %d (want 2, false, 12)", len(*freed), p.rewinding, p.q.Unread())
			}
			p.publish()
			if got := p.cnt.records.Load(); got != 8 {
				t.Fatalf("Spooled %d, want 8 (4 failed, 4 stored)", got)
			}
			if restart {
				if err := p.close(); err != nil {
					t.Fatal(err)
				}
				p, out, _ = newScriptedSpooler(t, dir)
				if got := p.cnt.recovered.Load(); got != 8 {
					t.Fatalf("recovered %d, want 8", got)
				}
			}
			out.isDown = false
			for range 10 {
				p.afterRound()
				for _, sl := range sent(out) {
					b.settle(p, sl, func(string) bool { return false })
				}
			}
			b.checkOrder(t, want)
			if p.q.Unread() != 0 || p.q.Acked() != p.q.Tail() || p.q.DeliveredFrom(0) != 0 || p.resident != 0 {
				t.Fatalf("after the replay: unread %d, acked %d of %d, delivered set %d, resident %d",
					p.q.Unread(), p.q.Acked(), p.q.Tail(), p.q.DeliveredFrom(0), p.resident)
			}
			// The spool is empty: the next slab goes to the broker directly.
			if d := testSlab("d", 2); !p.deliver(d) || len(sent(out)) != 1 {
				t.Fatal("d not sent directly once the spool is empty")
			}
			p.close()
		})
	}
}

// TestSpoolerFailedDirectSlab: a sent slab comes back with a failed
// record while a later one is still in flight: both are adopted, the
// spooler stops sending new slabs (they are stored behind), and the
// failed record goes to the broker before the later slab's records of its
// key that had failed with it.
func TestSpoolerFailedDirectSlab(t *testing.T) {
	p, out, _ := newScriptedSpooler(t, filepath.Join(t.TempDir(), "spool"))
	defer p.close()
	b := &broker{}
	a, bb, c := testSlab("a", 4), testSlab("b", 4), testSlab("c", 4)
	want := recsOf(a, bb, c)
	p.deliver(a)
	p.deliver(bb)
	sent(out)
	k1 := func(rec string) bool { return strings.HasPrefix(rec, "k1:") }
	b.settle(p, a, k1)
	if p.resident != 1 || !p.failing.Load() {
		t.Fatalf("after a failed: resident %d, failing %v", p.resident, p.failing.Load())
	}
	if p.deliver(c) || len(sent(out)) != 0 {
		t.Fatal("c sent while a record is failing: want it stored")
	}
	b.settle(p, bb, k1)
	for range 10 {
		p.afterRound()
		for _, sl := range sent(out) {
			b.settle(p, sl, func(string) bool { return false })
		}
	}
	b.checkOrder(t, want)
}

// corruptFrame overwrites the payload of the spool's frame at off (in the
// segment holding it), as a disk that changed under the spool would.
func corruptFrame(t *testing.T, dir string, off int64) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	slices.Sort(segs)
	for i := len(segs) - 1; i >= 0; i-- {
		var start int64
		fmt.Sscanf(filepath.Base(segs[i]), "%016x", &start)
		if start > off {
			continue
		}
		f, err := os.OpenFile(segs[i], os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte("garbage!"), off-start+8); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no segment holds offset %d", off)
}

// TestSpoolerCorruptAfterRewind: the replay after a rewind finds a frame
// the disk changed, so the spool is cut there. The records the broker has
// (the delivered set) past the cut are not lost: they are neither counted
// Failed nor subtracted from Spooled (which went negative), and a record
// appended later at one of their old offsets is not skipped as delivered.
func TestSpoolerCorruptAfterRewind(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	p, out, _ := newScriptedSpooler(t, dir)
	defer p.close()
	b := &broker{}
	a, bb := testSlab("a", 4), testSlab("b", 4)
	p.deliver(a)
	p.deliver(bb)
	sent(out)
	out.isDown = true
	p.deliver(testSlab("c", 4)) // stored; a and b adopted
	p.afterRound()
	k1 := func(rec string) bool { return strings.HasPrefix(rec, "k1:") }
	b.settle(p, a, k1)
	b.settle(p, bb, k1)
	if p.q.Unread() != 12 || p.q.DeliveredFrom(0) != 4 {
		t.Fatalf("after the rewind: unread %d, delivered %d; want 12, 4", p.q.Unread(), p.q.DeliveredFrom(0))
	}
	// Cut at a1: of the 11 records from there on, a2, b0 and b2 are in the
	// broker; a1, a3, b1, b3 and c's 4 are lost.
	corruptFrame(t, dir, a.spool.offs[1])
	out.isDown = false
	p.afterRound()
	for _, sl := range sent(out) {
		b.settle(p, sl, func(string) bool { return false })
	}
	if lost, errs := p.sk.cnt.failed.Load(), p.sk.cnt.errors.Load(); lost != 8 || errs != 1 {
		t.Fatalf("corrupt spool: %d records lost, %d errors; want 8, 1", lost, errs)
	}
	if got := p.cnt.records.Load(); got != 0 {
		t.Fatalf("Spooled %d after the cut, want 0", got)
	}
	// New records land where the cut ones were: d0's frame is a1's size,
	// so d1 is at a2's old offset, which the broker had.
	d := testSlab("", 2)
	out.isDown = true
	p.deliver(d) // stored
	out.isDown = false
	for range 5 {
		p.afterRound()
		for _, sl := range sent(out) {
			b.settle(p, sl, func(string) bool { return false })
		}
	}
	if got := b.recs[len(b.recs)-2:]; !slices.Equal(got, recsOf(d)) {
		t.Fatalf("broker's last records %v, want %v (all: %v)", got, recsOf(d), b.recs)
	}
}

// TestSpoolerDeliveredSetFull: with no room in the delivered set, the
// records the broker took from a slab that failed in part are sent again
// (at least once: the broker has them twice, with the same id), and
// Records counts each once, so the identity holds.
func TestSpoolerDeliveredSetFull(t *testing.T) {
	p, out, _ := newScriptedSpooler(t, filepath.Join(t.TempDir(), "spool"))
	defer p.close()
	p.q.LimitDelivered(0)
	b := &broker{}
	a, bb := testSlab("a", 4), testSlab("b", 4)
	want := recsOf(a, bb)
	p.deliver(a)
	sent(out)
	out.isDown = true
	p.deliver(bb) // stored: a is adopted
	k1 := func(rec string) bool { return strings.HasPrefix(rec, "k1:") }
	b.settle(p, a, k1) // a's k0 records taken, its k1 records failed
	out.isDown = false
	for range 10 {
		p.afterRound()
		for _, sl := range sent(out) {
			b.settle(p, sl, func(string) bool { return false })
		}
	}
	p.publish()
	if got := p.sk.cnt.records.Load(); got != uint64(len(want)) || p.cnt.records.Load() != 0 {
		t.Fatalf("Records %d, Spooled %d; want %d, 0", got, p.cnt.records.Load(), len(want))
	}
	// The broker has a's k0 records twice, each time with the same id, and
	// every other record once.
	ids := map[string]string{}
	n := map[string]int{}
	for i, r := range b.recs {
		if id, ok := ids[r]; ok && id != b.ids[i] {
			t.Fatalf("%s sent again with id %s, first %s", r, b.ids[i], id)
		}
		ids[r] = b.ids[i]
		n[r]++
	}
	for _, r := range want {
		if want := 1 + btoi(strings.HasPrefix(r, "k0:a")); n[r] != want {
			t.Fatalf("%s in the broker %d times, want %d (%v)", r, n[r], want, b.recs)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
