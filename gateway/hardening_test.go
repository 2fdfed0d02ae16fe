package gateway

import (
	"net"
	"testing"
	"time"
)

// TestLimitListener: the HTTP listener holds at most n connections at
// once; the next is accepted only when one of them closes.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(inner, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String()) // the kernel's backlog takes the third
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	var held []net.Conn
	for range 2 {
		select {
		case c := <-accepted:
			held = append(held, c)
		case <-time.After(5 * time.Second):
			t.Fatal("the first two connections were not accepted")
		}
	}
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted while two were open")
	case <-time.After(200 * time.Millisecond):
	}
	held[0].Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the third connection was not accepted after one closed")
	}
	held[1].Close()
}

// TestReloadBlockMax: xdp.block_max applies on reload (it used to be
// logged as reloaded and keep the old cap).
func TestReloadBlockMax(t *testing.T) {
	_, g, _ := runIT(t, 1, "socket", nil)
	cfg := *g.Config()
	cfg.XDP.BlockMax = 3
	if err := g.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	if got := g.fb.max.Load(); got != 3 {
		t.Errorf("block_max after the reload: %d, want 3", got)
	}
	if r := g.LastReload(); r == nil || !r.Applied || len(r.RestartNeeded) != 0 {
		t.Errorf("reload result %+v, want applied with nothing to restart", r)
	}
}
