package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/testenv"
	"github.com/xgate/xgate/tools/gen"
)

const (
	demoPort  = 9000
	otherPort = 9001
)

func runKernel(w io.Writer, dir string) error {
	fmt.Fprintln(w, "Part 2: the gateway on a test host pair (root)")
	pair, err := testenv.NewPair(testenv.Options{RxQueues: 1})
	if err != nil {
		return fmt.Errorf("build test hosts: %w", err)
	}
	defer pair.Close()
	fmt.Fprintf(w, "  hosts: sender %s (%s) ──veth── receiver %s (%s), namespaces removed at the end\n",
		pair.A.Addr, pair.A.NS, pair.B.Addr, pair.B.NS)

	if dir == "" {
		if dir, err = os.MkdirTemp("", "xgate-demo-"); err != nil {
			return err
		}
	}
	const rate, burst = 20000, 500
	cfg, err := gateway.ParseConfig("demo.yaml", []byte(fmt.Sprintf(`
interface: %s
mode: auto
listen: {ports: [%d]}
xdp:
  rate_limit: {rate: %d/s, burst: %d}
  payload_check: true
sinks:
  - {type: file, path: %s, what: passed, fsync: never}
  - {type: file, path: %s, what: alerts, fsync: never}
%s`, pair.B.Link, demoPort, rate, burst, filepath.Join(dir, "passed.ndjson"), filepath.Join(dir, "alerts.ndjson"), rulesYAML)))
	if err != nil {
		return err
	}
	cfg.Pin.Path = "" // nothing pinned: the demo leaves /sys/fs/bpf as it found it
	var g *gateway.Gateway
	logs := &strings.Builder{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := pair.B.Do(func() error {
		g, err = gateway.New(cfg, gateway.Options{Logger: log, RecvTimeout: 20 * time.Millisecond})
		return err
	}); err != nil {
		return err
	}
	path, why := g.Path()
	fmt.Fprintf(w, "  gateway on %s: receive path %s (%s)\n", pair.B.Link, path, why)
	fmt.Fprintf(w, "  XDP in front: listen port %d, per-source bucket %d/s burst %d, payload check on; rules as in part 1\n",
		demoPort, rate, burst)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()

	sent, sendErr := send(w, pair, func() bool {
		s, err := g.Stats()
		return err == nil && s.Feedback.Applied > 0
	})
	// Wait until every packet is accounted for (bounded), then stop.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if s, err := g.Stats(); err == nil && s.Accounted() >= sent {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		return fmt.Errorf("gateway: %w\n%s", err, logs)
	}
	if sendErr != nil {
		return sendErr
	}
	s, err := g.Stats()
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "  XDP counters (packets by reason, nonzero):")
	byName := s.XDP.ByName()
	for _, name := range sortedKeys(byName) {
		if c := byName[name]; c.Packets > 0 {
			fmt.Fprintf(w, "    %-20s %7d\n", name, c.Packets)
		}
	}
	fmt.Fprintf(w, "  engine: %d datagrams → %d events decided (%s), %d malformed (%s)\n",
		s.Datagrams, s.Engine.Events, verdicts(&s.Engine), s.Engine.DecodeErrorTotal(), decodeErrors(&s.Engine))
	fmt.Fprintf(w, "  feedback: %d block verdicts, %d written into the XDP blocklist\n", s.Feedback.Requested, s.Feedback.Applied)
	for _, sk := range s.Sinks {
		fmt.Fprintf(w, "  sink %s: %d records, %d dropped\n", sk.Name, sk.Records, sk.Dropped)
	}
	total := s.Accounted()
	fmt.Fprintf(w, "  accounting: sent %d = XDP drops %d + not for us %d + socket drops %d + ring drops %d + decode errors %d + events decided %d = %d",
		sent, s.XDPDrops, s.NotForUs, s.SocketDrops, s.RingDrops, s.Engine.DecodeErrorTotal(), s.Engine.Events, total)
	if total != sent {
		fmt.Fprintln(w, "  ✗")
		return fmt.Errorf("accounting does not add up: %d sent, %d accounted for", sent, total)
	}
	fmt.Fprintln(w, "  ✓")
	fmt.Fprintf(w, "  the sink files stay for you to read: %s\n", dir)
	return nil
}

// send plays the traffic mix from host A and returns how many datagrams
// the kernel accepted for sending.
func send(w io.Writer, pair *testenv.Pair, blocked func() bool) (uint64, error) {
	dst := netip.AddrPortFrom(pair.B.Addr, demoPort)
	fd, err := pair.A.DialUDP(dst)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	other, err := pair.A.DialUDP(netip.AddrPortFrom(pair.B.Addr, otherPort))
	if err != nil {
		return 0, err
	}
	defer unix.Close(other)
	g, err := gen.New(gen.Config{Users: 500, BadShare: 0.02, BigShare: 0.05, Seed: 2})
	if err != nil {
		return 0, err
	}
	var sent uint64
	write := func(fd int, p []byte) error {
		for tries := 0; ; tries++ {
			_, err := unix.Write(fd, p)
			switch {
			case err == nil:
				sent++
				return nil
			case errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.EINTR):
				// ICMP port unreachable from an earlier datagram: not this one's error.
			case (errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN)) && tries < 1000:
				time.Sleep(100 * time.Microsecond)
			default:
				return fmt.Errorf("send: %w", err)
			}
		}
	}
	var buf []byte
	phase := func(name string, n int, fd int, paced bool, payload func() []byte) error {
		before := sent
		for i := 0; i < n; i++ {
			if err := write(fd, payload()); err != nil {
				return err
			}
			if paced && i%50 == 49 {
				time.Sleep(10 * time.Millisecond) // ≈ 5000/s, under the bucket
			}
		}
		fmt.Fprintf(w, "  sent: %-55s %6d\n", name, sent-before)
		return nil
	}
	events := func() []byte { buf, _ = g.Append(buf[:0]); return buf }
	if err := phase("events at ~5k/s (2% malformed)", 3000, fd, true, events); err != nil {
		return sent, err
	}
	if err := phase("not JSON (dropped in XDP by the payload check)", 100, fd, false, func() []byte { return []byte("GET / HTTP/1.1\r\n") }); err != nil {
		return sent, err
	}
	if err := phase("to another port (not for us: passed to the stack)", 200, other, false, events); err != nil {
		return sent, err
	}
	if err := phase("a flood, back to back (policed by the XDP bucket)", 20000, fd, false, events); err != nil {
		return sent, err
	}
	time.Sleep(200 * time.Millisecond) // let the bucket refill
	if err := phase(`an event the rules block ("event_type":"bot")`, 1, fd, false, func() []byte {
		return []byte(`{"event_id":"e-bot","user_id":"u-bot","amount":1,"currency":"USD","event_type":"bot","ts":1,"ip":"198.18.0.1"}`)
	}); err != nil {
		return sent, err
	}
	for deadline := time.Now().Add(3 * time.Second); !blocked(); { // the verdict reaches the blocklist
		if time.Now().After(deadline) {
			return sent, errors.New("the block verdict did not reach the XDP blocklist within 3s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := phase("more events from the now blocked source", 2000, fd, true, events); err != nil {
		return sent, err
	}
	return sent, nil
}
