package gateway

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
	"unsafe"

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

// TestBatchReset: the headers a recv used get their lengths and flags back
// (the kernel rewrites them), the pointers set once stay, and a datagram
// received after a short batch and a long one lands in full.
func TestBatchReset(t *testing.T) {
	b := newBatch(8, 256)
	for i := range 4 {
		h := &b.hdrs[i].Hdr
		h.Namelen, h.Flags = 0, 5
		h.SetControllen(0)
	}
	b.used = 4
	b.reset()
	for i := range b.hdrs {
		h := &b.hdrs[i].Hdr
		if h.Namelen != uint32(unsafe.Sizeof(b.names[i])) || h.Controllen != mmsgCtrl || h.Flags != 0 {
			t.Errorf("header %d: namelen %d controllen %d flags %d", i, h.Namelen, h.Controllen, h.Flags)
		}
		if h.Iov != &b.iovs[i] || h.Iovlen != 1 || h.Name != (*byte)(unsafe.Pointer(&b.names[i])) || h.Control != &b.ctrl[i][0] ||
			b.iovs[i].Base != &b.bufs[i][0] || b.iovs[i].Len != 256 {
			t.Errorf("header %d: pointers changed", i)
		}
	}
	s, tx, dst := latencyTestSocket(t)
	for _, k := range []int{1, 8, 3, 8} {
		for j := range k {
			if err := unix.Sendto(tx, bytes.Repeat([]byte{byte('a' + j)}, 200), 0, dst); err != nil {
				t.Fatal(err)
			}
		}
		got := 0
		for got < k {
			n, err := s.recv(b)
			if err != nil || n == 0 {
				t.Fatalf("recv %d, %v", n, err)
			}
			for i := range n {
				if b.lens[i] != 200 || b.bufs[i][0] != byte('a'+got+i) || b.hdrs[i].Hdr.Namelen == 0 || !b.source(i).Addr().IsLoopback() {
					t.Fatalf("batch of %d, datagram %d: len %d first %q namelen %d source %v", k, got+i, b.lens[i], b.bufs[i][0], b.hdrs[i].Hdr.Namelen, b.source(i))
				}
			}
			got += n
		}
	}
}
