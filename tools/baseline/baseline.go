//go:build linux

// Package baseline is the plain Go UDP server a user would write without
// xgate, for `xgate bench --compare ...,baseline,gjson`: net.ListenUDP-style
// sockets (one per core, SO_REUSEPORT through net.ListenConfig), one
// goroutine each reading one datagram per call, a decoder into a struct
// (encoding/json in Listen, github.com/tidwall/gjson in ListenGJSON), and
// the default risk rules of examples/xgate.yaml written as plain Go over
// maps behind one mutex. It is deliberately straightforward and not tuned:
// it is the yardstick. Both decoders share the socket loop and the rules,
// so the two yardsticks differ only in how the JSON is read.
//
// The rules, in order (drop and block stop the evaluation, alert does not):
//
//	big-payment    event_type == "payment" && amount > 10000  → alert
//	per-user-rate  100/s, burst 200 per user_id               → drop
//	velocity       sum(amount) of payments per user_id over 60 s in 5 s slides > 50000 → alert
//	flood-source   10000/s per source address                  → block 30s (counted only)
package baseline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Event is the part of an event the rules read.
type Event struct {
	UserID    string  `json:"user_id"`
	Amount    float64 `json:"amount"`
	EventType string  `json:"event_type"`
	TS        int64   `json:"ts"`
	IP        string  `json:"ip"`
}

// Stats are the server's counters since Listen.
type Stats struct {
	Datagrams    uint64 // read from the sockets
	DecodeErrors uint64 // not JSON, wrong types, no user_id
	Decided      uint64 // events that went through the rules
	Passed       uint64
	Dropped      uint64 // per-user-rate
	Alerts       uint64 // big-payment and velocity alerts (an event can raise both)
	Blocks       uint64 // flood-source verdicts (no blocking is done)
	SocketDrops  uint64 // the kernel's drops at the sockets (SO_MEMINFO)
}

// Decoder fills ev from one datagram; an error makes the datagram a
// decode error.
type Decoder func(b []byte, ev *Event) error

// DecodeJSON is encoding/json into Event; an event without user_id is an
// error.
func DecodeJSON(b []byte, ev *Event) error {
	if err := json.Unmarshal(b, ev); err != nil {
		return err
	}
	if ev.UserID == "" {
		return errNoUser
	}
	return nil
}

var errNoUser = errors.New("no user_id")

// Server is the baseline server.
type Server struct {
	conns  []*net.UDPConn
	decode Decoder
	wg     sync.WaitGroup

	datagrams, decodeErrors, decided atomic.Uint64
	passed, dropped, alerts, blocks  atomic.Uint64
	mu                               sync.Mutex
	users                            map[string]*userState
	sources                          map[netip.Addr]*bucket
	blocked                          map[netip.Addr]time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

type userState struct {
	rate bucket
	// velocity: 12 slides of 5 s; head is the slide index of the newest.
	sums [12]float64
	head int64
}

const (
	userRate    = 100.0
	userBurst   = 200.0
	sourceRate  = 10000.0
	sourceBurst = 10000.0 // one second's worth, the default burst
	slide       = 5 * time.Second
	blockFor    = 30 * time.Second
)

// Listen opens n sockets on addr (e.g. ":9000") in one SO_REUSEPORT group,
// each with a receive buffer of rcvbuf bytes if > 0 (SetReadBuffer: capped
// by net.core.rmem_max, as for any user), decoding with encoding/json.
// Call it in the network namespace the sockets belong in; Serve may run
// anywhere.
func Listen(addr string, n, rcvbuf int) (*Server, error) {
	return ListenWith(addr, n, rcvbuf, DecodeJSON)
}

// ListenWith is Listen with the decoder dec.
func ListenWith(addr string, n, rcvbuf int, dec Decoder) (*Server, error) {
	s := newServer(dec)
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	for i := 0; i < max(n, 1); i++ {
		pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("baseline: listen %s: %w", addr, err)
		}
		c := pc.(*net.UDPConn)
		if rcvbuf > 0 {
			_ = c.SetReadBuffer(rcvbuf)
		}
		s.conns = append(s.conns, c)
	}
	return s, nil
}

// Serve starts one goroutine per socket; they stop on Close.
func (s *Server) Serve() {
	for _, c := range s.conns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

func (s *Server) serve(c *net.UDPConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.datagrams.Add(1)
		var ev Event
		if err := s.decode(buf[:n], &ev); err != nil {
			s.decodeErrors.Add(1)
			continue
		}
		s.decide(&ev, from.Addr().Unmap(), time.Now())
		s.decided.Add(1)
	}
}

func newServer(dec Decoder) *Server {
	return &Server{decode: dec, users: make(map[string]*userState), sources: make(map[netip.Addr]*bucket),
		blocked: make(map[netip.Addr]time.Time)}
}

// decide runs the rules on one event.
func (s *Server) decide(ev *Event, src netip.Addr, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.EventType == "payment" && ev.Amount > 10000 {
		s.alerts.Add(1)
	}
	u := s.users[ev.UserID]
	if u == nil {
		u = &userState{rate: bucket{tokens: userBurst, last: now}, head: now.UnixNano() / int64(slide)}
		s.users[ev.UserID] = u
	}
	if !u.rate.take(now, userRate, userBurst) {
		s.dropped.Add(1)
		return
	}
	if ev.EventType == "payment" {
		idx := now.UnixNano() / int64(slide)
		for h := u.head + 1; h <= idx && h <= u.head+int64(len(u.sums)); h++ {
			u.sums[h%int64(len(u.sums))] = 0
		}
		if idx > u.head {
			u.head = idx
		}
		u.sums[idx%int64(len(u.sums))] += ev.Amount
		var sum float64
		for _, v := range u.sums {
			sum += v
		}
		if sum > 50000 {
			s.alerts.Add(1)
		}
	}
	if until, ok := s.blocked[src]; ok && now.Before(until) {
		s.blocks.Add(1)
		return
	}
	b := s.sources[src]
	if b == nil {
		b = &bucket{tokens: sourceBurst, last: now}
		s.sources[src] = b
	}
	if !b.take(now, sourceRate, sourceBurst) {
		s.blocked[src] = now.Add(blockFor)
		s.blocks.Add(1)
		return
	}
	s.passed.Add(1)
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Stats reads the counters.
func (s *Server) Stats() (Stats, error) {
	st := Stats{Datagrams: s.datagrams.Load(), DecodeErrors: s.decodeErrors.Load(), Decided: s.decided.Load(),
		Passed: s.passed.Load(), Dropped: s.dropped.Load(), Alerts: s.alerts.Load(), Blocks: s.blocks.Load()}
	for _, c := range s.conns {
		d, err := SocketDrops(c)
		if err != nil {
			return st, err
		}
		st.SocketDrops += d
	}
	return st, nil
}

// Close closes the sockets and waits for the goroutines.
func (s *Server) Close() error {
	var errs []error
	for _, c := range s.conns {
		errs = append(errs, c.Close())
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// skMeminfoDrops is SK_MEMINFO_DROPS, the index of sk_drops in the u32
// array SO_MEMINFO returns (include/uapi/linux/sock_diag.h).
const skMeminfoDrops = 8

// SocketDrops reads the kernel's drop counter of a socket (sk_drops).
func SocketDrops(c syscall.Conn) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var d uint64
	var gerr error
	if err := rc.Control(func(fd uintptr) { d, gerr = FDDrops(int(fd)) }); err != nil {
		return 0, err
	}
	return d, gerr
}

// FDDrops reads the kernel's drop counter of the socket fd (sk_drops).
func FDDrops(fd int) (uint64, error) {
	var info [16]uint32
	l := uint32(unsafe.Sizeof(info))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("SO_MEMINFO: %w", errno)
	}
	if l < (skMeminfoDrops+1)*4 {
		return 0, fmt.Errorf("SO_MEMINFO: %d bytes, too short", l)
	}
	return uint64(info[skMeminfoDrops]), nil
}
