package gateway

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSocketDropsReadWhileIdle: the drop counter is read from the socket
// itself (SO_MEMINFO), so drops after the last datagram are seen without
// waiting for another datagram; and received + dropped = sent.
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
	}
	if drops == 0 || uint64(received)+drops != sent {
		t.Fatalf("received %d + dropped %d != sent %d (or nothing dropped)", received, drops, sent)
	}
}
