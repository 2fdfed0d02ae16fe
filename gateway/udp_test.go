package gateway

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSocketDropsReadWhileIdle: the drop counter is read from the socket
// itself, so drops after the last datagram are seen without waiting for
// another datagram to carry SO_RXQ_OVFL; and received + dropped = sent.
func TestSocketDropsReadWhileIdle(t *testing.T) {
	s, err := openUDP(netip.MustParseAddrPort("127.0.0.1:0"), false, 0, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	// A tiny buffer (the kernel doubles it and enforces a minimum).
	if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tx)
	const sent = 200
	payload := make([]byte, 512)
	for i := 0; i < sent; i++ {
		if err := unix.Sendto(tx, payload, 0, sa); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	drops, err := s.drops()
	if err != nil {
		t.Fatal(err)
	}
	b := newBatch(64, 2048)
	received := 0
	for {
		n, err := s.recv(b)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		received += n
		// SO_RXQ_OVFL carries the count as of each datagram's enqueue:
		// here the first one came before any drop, so it says 0 — the lag
		// that SO_MEMINFO does not have.
		if uint64(b.drops) > drops {
			t.Errorf("SO_RXQ_OVFL says %d drops, more than SO_MEMINFO's %d", b.drops, drops)
		}
	}
	if drops == 0 || uint64(received)+drops != sent {
		t.Fatalf("received %d + dropped %d != sent %d (or nothing dropped)", received, drops, sent)
	}
}
