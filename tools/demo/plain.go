//go:build linux

package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/tools/bench"
)

// plainFloodRate is the flooding sender's rate on loopback. Every datagram
// there comes from 127.0.0.1, and the flood-source rule of the example
// (10000/s per source, the last rule) sees what per-user-rate left, about
// half: this takes the one source well over its limit.
const plainFloodRate = 25000

// runPlain is the demo without privileges: the gateway's plain UDP path
// on 127.0.0.1 (no BPF), fed by socket senders in this process. why says
// why, at the start.
func runPlain(ctx context.Context, o Options, why string) (*Report, error) {
	dir, err := sinkDir(&o)
	if err != nil {
		return nil, err
	}
	port, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	cfg, files, err := demoConfig(&o, "", port, dir)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "gateway.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("demo: gateway log: %w", err)
	}
	defer logFile.Close()
	g, err := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(logFile, nil)), RecvTimeout: 20 * time.Millisecond})
	if err != nil {
		return nil, fmt.Errorf("demo: start the gateway on 127.0.0.1:%d: %w (its log: %s)", port, err, logPath)
	}
	path, gwWhy := g.Path()
	rep := &Report{Mode: ModePlain, Path: path, Why: gwWhy, Fallback: why, Dir: dir, Log: logPath}

	rate := o.Rate
	if rate == 0 {
		rate = DefaultPlainRate
	}
	from, to := floodWindow(o.Duration)
	w := o.Out
	fmt.Fprintf(w, "xgate demo: PLAIN MODE ON LOOPBACK, %v of traffic\n", o.Duration)
	fmt.Fprintf(w, "  why:      %s\n", why)
	fmt.Fprintln(w, "            no test hosts, no XDP program, no AF_XDP: the gateway's plain UDP path (what it falls back to")
	fmt.Fprintln(w, "            without privileges); blocks are not enforced in the kernel. For the XDP data plane: sudo make demo")
	fmt.Fprintf(w, "  gateway:  %s on 127.0.0.1:%d: receive path %s\n", o.ConfigName, port, path)
	fmt.Fprintln(w, "            rules and limits as written there; the sinks, the address, HTTP on a free loopback port and no probes are the demo's")
	printRules(w, cfg)
	fmt.Fprintf(w, "  traffic:  %s events/s from a UDP socket in this process: 100k users (Zipf), log-normal amounts,\n", num(uint64(rate)))
	fmt.Fprintln(w, "            2% malformed JSON, 1% payments over 10,000;")
	fmt.Fprintf(w, "            from %v to %v a flooding socket at %s/s (on loopback all of it is one source, 127.0.0.1)\n",
		from, to, num(plainFloodRate))
	fmt.Fprintln(w)

	sent := &counters{}
	v := newView(&o, "PLAIN MODE on 127.0.0.1 · receive path "+path.String(), false, cfg, files[0].Path)
	s := &session{o: &o, g: g, cfg: cfg, sent: sent, view: v, rep: rep, files: files}
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)
	runErr := s.run(ctx, func(ctx context.Context, start time.Time) error {
		return streamSockets(ctx, start, o.Duration, rate, dst, sent, v)
	})
	printReport(w, rep, "nothing to remove: no test hosts, no BPF")
	return rep, runErr
}

// streamSockets sends the mix at rate to dst for d, and the flood during
// floodWindow(d), from UDP sockets in this namespace.
func streamSockets(ctx context.Context, start time.Time, d time.Duration, rate float64, addr netip.AddrPort, sent *counters, v *view) error {
	// The senders build their payloads before they start their clocks:
	// the deadline keeps the run to d all the same.
	ctx, cancel := context.WithDeadline(ctx, start.Add(d))
	defer cancel()
	floodFrom, floodTo := floodWindow(d)
	floodErr := make(chan error, 1)
	go func() {
		t := time.NewTimer(floodFrom - time.Since(start))
		defer t.Stop()
		select {
		case <-ctx.Done():
			floodErr <- nil
			return
		case <-t.C:
		}
		v.post(time.Since(start), fmt.Sprintf("flood starts: a second socket sends %s/s from 127.0.0.1", num(plainFloodRate)))
		_, err := bench.SendSocket(ctx, bench.SocketOptions{Dst: addr, Batch: 16, Payloads: 1 << 14,
			Events: eventMix(2), Rate: plainFloodRate, Duration: floodTo - floodFrom, Progress: &sent.flood})
		if ctx.Err() == nil {
			v.post(time.Since(start), fmt.Sprintf("flood stops after %s datagrams", num(sent.flood.Load())))
		}
		floodErr <- err
	}()
	_, err := bench.SendSocket(ctx, bench.SocketOptions{Dst: addr, Batch: 16, Payloads: 1 << 16,
		Events: eventMix(1), Rate: rate, Duration: max(d-time.Since(start), time.Millisecond), Progress: &sent.events})
	if err != nil {
		err = fmt.Errorf("demo: client sender: %w", err)
	}
	if ferr := <-floodErr; ferr != nil {
		err = errors.Join(err, fmt.Errorf("demo: flood sender: %w", ferr))
	}
	return err
}

// freeUDPPort returns a UDP port free on 127.0.0.1 just now: the gateway's
// sockets use SO_REUSEPORT, so a fixed port could join another program's
// group and share its traffic.
func freeUDPPort() (uint16, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("demo: find a free UDP port: %w", err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
}
