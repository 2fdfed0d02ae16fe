package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xgate/xgate/testenv"
	"golang.org/x/sys/unix"
)

// TestReuseport sends real datagrams from host A to a SO_REUSEPORT group of
// four UDP sockets on host B (fresh namespaces, veth), with the
// sk_reuseport program attached, and checks that every datagram lands on a
// socket the program may choose, that a flow sticks to one socket, and the
// exact counter deltas.
func TestReuseport(t *testing.T) {
	xgNeedRoot(t)
	pair := testenv.New(t, testenv.Options{})
	a, b := pair.A, pair.B

	rp, err := NewReuseport(ReuseportOptions{PerNode: 8})
	if errors.Is(err, ErrNotSupported) {
		t.Skipf("kernel lacks a feature: %v", err)
	}
	xgNoErr(t, err)
	t.Cleanup(func() { rp.Close() })

	const nsock = 4
	var fds [nsock]int
	var port uint16
	for i := range fds {
		fd, p, err := b.ListenUDP(b.Addr, port, func(fd int) error {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				return err
			}
			return unix.SetNonblock(fd, true)
		})
		xgNoErr(t, err)
		t.Cleanup(func() { unix.Close(fd) })
		fds[i], port = fd, p
	}
	xgNoErr(t, rp.AttachTo(fds[0]))
	dst := netip.AddrPortFrom(b.Addr, port)

	// setNodes places the same sockets on every node the layout has, so
	// the test does not depend on which node the receiving CPU is on.
	setNodes := func(idx ...int) {
		t.Helper()
		sel := make([]int, len(idx))
		for i, j := range idx {
			sel[i] = fds[j]
		}
		for n := 0; n < rp.Nodes(); n++ {
			xgNoErr(t, rp.SetNodeSockets(n, sel))
		}
	}

	// send sends per datagrams on each of flows flows (one connected
	// socket, so one source port, per flow) and returns, per flow, the
	// sockets its datagrams landed on.
	send := func(flows, per int) map[int]map[int]int {
		t.Helper()
		for f := 0; f < flows; f++ {
			n, err := a.SendUDP(dst, []byte(fmt.Sprintf("flow-%03d", f)), per)
			xgNoErr(t, err)
			if n != per {
				t.Fatalf("flow %d: sent %d of %d", f, n, per)
			}
		}
		landed := map[int]map[int]int{}
		got := 0
		buf := make([]byte, 64)
		for deadline := time.Now().Add(3 * time.Second); got < flows*per && time.Now().Before(deadline); {
			progress := false
			for i, fd := range fds {
				n, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					continue
				}
				var f int
				if _, err := fmt.Sscanf(string(buf[:n]), "flow-%d", &f); err != nil {
					t.Fatalf("datagram %q", buf[:n])
				}
				if landed[f] == nil {
					landed[f] = map[int]int{}
				}
				landed[f][i]++
				got++
				progress = true
			}
			if !progress {
				time.Sleep(time.Millisecond)
			}
		}
		if got != flows*per {
			t.Fatalf("received %d of %d datagrams", got, flows*per)
		}
		return landed
	}

	stats := func() RpCounters {
		t.Helper()
		c, err := rp.ReadCounters()
		xgNoErr(t, err)
		return c
	}
	assertDeltas := func(before, after RpCounters, want map[RpReason]uint64) {
		t.Helper()
		for r := RpReason(0); r < RpReasonMax; r++ {
			if got := after[r].Packets - before[r].Packets; got != want[r] {
				t.Errorf("reuseport counter %v: %d, want %d", r, got, want[r])
			}
		}
	}

	const flows, per = 24, 3

	t.Run("one socket on the node", func(t *testing.T) {
		setNodes(2)
		before := stats()
		landed := send(flows, per)
		assertDeltas(before, stats(), map[RpReason]uint64{RpSelected: flows * per})
		for f, socks := range landed {
			if len(socks) != 1 || socks[2] != per {
				t.Errorf("flow %d landed on %v, want all on socket 2", f, socks)
			}
		}
	})

	t.Run("two sockets, flows stick", func(t *testing.T) {
		setNodes(1, 3)
		before := stats()
		landed := send(flows, per)
		assertDeltas(before, stats(), map[RpReason]uint64{RpSelected: flows * per})
		used := map[int]bool{}
		for f, socks := range landed {
			if len(socks) != 1 {
				t.Errorf("flow %d split over sockets %v", f, socks)
			}
			for s := range socks {
				if s != 1 && s != 3 {
					t.Errorf("flow %d landed on socket %d, not one of the node's (1, 3)", f, s)
				}
				used[s] = true
			}
		}
		if len(used) != 2 {
			t.Logf("all %d flows hashed to one socket (%v): possible but unlikely", flows, used)
		}
	})

	t.Run("node without sockets", func(t *testing.T) {
		setNodes()
		before := stats()
		send(flows, per)
		assertDeltas(before, stats(), map[RpReason]uint64{RpNodeEmpty: flows * per})
	})

	t.Run("empty slot", func(t *testing.T) {
		setNodes(0, 1)
		// Empty the second slot of every node behind the config's back, as
		// a closed socket would.
		for n := 0; n < rp.Nodes(); n++ {
			xgNoErr(t, rp.objs.XgateRpSocks.Delete(uint32(n*rp.PerNode()+1)))
		}
		before := stats()
		landed := send(flows, per)
		after := stats()
		sel := after[RpSelected].Packets - before[RpSelected].Packets
		empty := after[RpSlotEmpty].Packets - before[RpSlotEmpty].Packets
		if sel+empty != flows*per || empty == 0 || empty%per != 0 {
			t.Errorf("selected %d + slot_empty %d, want %d in all, whole flows falling back", sel, empty, flows*per)
		}
		assertDeltas(before, after, map[RpReason]uint64{RpSelected: sel, RpSlotEmpty: empty})
		onSlot0 := 0
		for _, socks := range landed {
			onSlot0 += socks[0]
		}
		if uint64(onSlot0) < sel {
			t.Errorf("%d datagrams selected, only %d on socket 0", sel, onSlot0)
		}
	})

	t.Run("bad node", func(t *testing.T) {
		if err := rp.SetNodeSockets(rp.Nodes(), nil); err == nil {
			t.Error("node out of range accepted")
		}
		if err := rp.SetNodeSockets(0, make([]int, rp.PerNode()+1)); err == nil {
			t.Error("more sockets than slots accepted")
		}
	})
}
