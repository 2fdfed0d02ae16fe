package gateway

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xgate/xgate/bpf"
)

// fakeBlocker records blocks, refuses the never-block address and expires
// entries on the real monotonic clock (bpf.Ktime), as the map does.
type fakeBlocker struct {
	mu     sync.Mutex
	never  netip.Addr
	blocks map[netip.Addr]fakeBlock
	sweeps int
}

type fakeBlock struct {
	until uint64
	rule  string
}

func (b *fakeBlocker) BlockBy(addr netip.Addr, ttl time.Duration, rule string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if addr == b.never {
		return bpf.ErrNeverBlock
	}
	b.blocks[addr] = fakeBlock{bpf.Ktime() + uint64(ttl), rule}
	return nil
}

func (b *fakeBlocker) SweepExpired() (int, uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweeps++
	now := bpf.Ktime()
	removed, next := 0, uint64(0)
	for a, e := range b.blocks {
		if e.until <= now {
			delete(b.blocks, a)
			removed++
		} else if next == 0 || e.until < next {
			next = e.until
		}
	}
	return removed, next, nil
}

func (b *fakeBlocker) state() (n, sweeps int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.blocks), b.sweeps
}

// TestFeedback: requests are applied when a worker pokes (no ticker),
// with their rule; the never-block address is refused and counted; the
// expired block is swept out on its own expiry, and with nothing left to
// expire the goroutine sleeps without a timer.
func TestFeedback(t *testing.T) {
	never := netip.MustParseAddr("198.18.0.7")
	b := &fakeBlocker{never: never, blocks: map[netip.Addr]fakeBlock{}}
	f := newFeedback(b, 0, nil)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { f.run(stop); close(done) }()
	defer func() { close(stop); <-done }()

	short, long := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	f.request(long, time.Hour, "flood-source")
	f.request(short, 50*time.Millisecond, "bot")
	f.request(never, time.Hour, "flood-source")
	f.request(short, 50*time.Millisecond, "bot") // deduped
	eventually(t, func() bool { st := f.stats(); return st.Applied+st.Refused+st.Deduped == 4 })
	st := f.stats()
	if st.Applied != 2 || st.Refused != 1 || st.Deduped != 1 || st.Requested != 4 {
		t.Fatalf("stats %+v", st)
	}
	b.mu.Lock()
	if b.blocks[long].rule != "flood-source" || b.blocks[short].rule != "bot" {
		t.Errorf("blocks %+v", b.blocks)
	}
	b.mu.Unlock()
	// The short block is swept on its expiry; the long one stays.
	eventually(t, func() bool { n, _ := b.state(); return n == 1 })
	eventually(t, func() bool { return f.stats().Swept == 1 })
	_, sweeps := b.state()
	time.Sleep(100 * time.Millisecond)
	if _, s := b.state(); s != sweeps {
		t.Errorf("%d sweeps while nothing was due (timer armed for the hour-long block only)", s-sweeps)
	}
}

// TestFeedbackPlain: without a target (plain mode) a block verdict is
// counted as unenforced and nothing is queued.
func TestFeedbackPlain(t *testing.T) {
	f := newFeedback(nil, 0, nil)
	f.request(netip.MustParseAddr("198.18.0.1"), time.Second, "bot")
	if st := f.stats(); st.Unenforced != 1 || st.Applied != 0 {
		t.Errorf("stats %+v", st)
	}
	if f.drain() != 0 {
		t.Error("a request was queued without a target")
	}
}

func TestFeedbackRequestAllocs(t *testing.T) {
	f := newFeedback(&fakeBlocker{blocks: map[netip.Addr]fakeBlock{}}, 0, nil)
	a := netip.MustParseAddr("198.18.0.1")
	if n := testing.AllocsPerRun(1000, func() { f.request(a, time.Second, "bot") }); n != 0 {
		t.Errorf("request allocates %v per block verdict", n)
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
