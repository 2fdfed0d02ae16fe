//go:build linux

package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/testenv"
)

// The flooding source's rate on the test hosts: floodFactor times the
// clients' rate, at least enough to take one source well over the example's
// flood-source rule (10000/s; it sees what per-user-rate leaves, about
// half), at most what the packet sender keeps up with easily.
const (
	floodFactor  = 4
	minFloodRate = 40000
	maxFloodRate = 400000
)

// runTestHosts is the demo on a veth test host pair: the gateway in B
// with the XDP program in front, the traffic from A.
func runTestHosts(ctx context.Context, o Options) (rep *Report, err error) {
	pair, err := testenv.NewPair(testenv.Options{RxQueues: 1})
	if err != nil {
		return nil, &noHostsError{err}
	}
	closed := false
	defer func() {
		if !closed {
			err = errors.Join(err, pair.Close())
		}
	}()
	dir, err := sinkDir(&o)
	if err != nil {
		return nil, err
	}
	cfg, files, err := demoConfig(&o, pair.B.Link, 0, dir)
	if err != nil {
		return nil, err
	}
	port := cfg.Listen.Ports[0]
	otherPort := port + 1
	for slices.Contains(cfg.Listen.Ports, otherPort) || otherPort == 0 {
		otherPort++
	}
	mix, err := newFrameMix(pair.A, pair.B, port, otherPort)
	if err != nil {
		return nil, err
	}
	ps, err := newPacketSender(pair.A)
	if err != nil {
		return nil, err
	}
	psOpen := true
	defer func() {
		if psOpen {
			ps.close()
		}
	}()

	logPath := filepath.Join(dir, "gateway.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("demo: gateway log: %w", err)
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, nil))
	var g *gateway.Gateway
	if err := pair.B.Do(func() error {
		var err error
		g, err = gateway.New(cfg, gateway.Options{Logger: log, RecvTimeout: 20 * time.Millisecond})
		return err
	}); err != nil {
		return nil, fmt.Errorf("demo: start the gateway on %s: %w (its log: %s)", pair.B.Link, err, logPath)
	}
	path, why := g.Path()
	rep = &Report{Mode: ModeTestHosts, Path: path, Why: why, Dir: dir, Log: logPath}

	rate := o.Rate
	if rate == 0 {
		rate = DefaultRate
	}
	floodRate := min(max(floodFactor*rate, minFloodRate), maxFloodRate)
	from, to := floodWindow(o.Duration)
	w := o.Out
	fmt.Fprintf(w, "xgate demo: the gateway on a pair of test hosts, %v of traffic\n", o.Duration)
	fmt.Fprintf(w, "  hosts:    sender %s %s ──veth── receiver %s %s (network namespaces, removed at the end)\n",
		pair.A.Link, pair.A.Addr, pair.B.Link, pair.B.Addr)
	fmt.Fprintf(w, "  gateway:  %s on %s: receive path %s (%s)\n", o.ConfigName, pair.B.Link, path, why)
	fmt.Fprintln(w, "            rules, limits and XDP policy as written there; the sinks, HTTP on a free loopback port and no pins are the demo's")
	printRules(w, cfg)
	fmt.Fprintf(w, "  traffic:  %s events/s from %s client addresses to port %d: 100k users (Zipf), log-normal amounts,\n",
		num(uint64(rate)), num(clientAddrs), port)
	fmt.Fprintf(w, "            2%% malformed JSON, 1%% payments over 10,000; %.1f%% not JSON, %.1f%% to port %d (not ours);\n",
		notJSONShare*100, otherPortShare*100, otherPort)
	fmt.Fprintf(w, "            from %v to %v a flooding source, %s, at %s/s\n", from, to, mix.floodSrc, num(uint64(floodRate)))
	fmt.Fprintln(w)

	sent := &counters{}
	v := newView(&o, "test hosts · receive path "+path.String(), true, cfg, files[0].Path)
	s := &session{o: &o, g: g, cfg: cfg, sent: sent, view: v, rep: rep, files: files}
	runErr := s.run(ctx, func(ctx context.Context, start time.Time) error {
		return streamFrames(ctx, start, o.Duration, rate, floodRate, mix, ps, sent, v)
	})
	psOpen = false
	ps.close()
	closed = true
	cleanup := "test hosts removed (namespaces and veth), XDP program detached, nothing pinned"
	if cerr := pair.Close(); cerr != nil {
		cleanup = fmt.Sprintf("removing the test hosts failed: %v", cerr)
		runErr = errors.Join(runErr, cerr)
	}
	printReport(w, rep, cleanup)
	return rep, runErr
}

// streamFrames sends the clients' mix at rate for d, and the flood at
// floodRate during floodWindow(d), paced to the millisecond, counting
// every frame sent by kind.
func streamFrames(ctx context.Context, start time.Time, d time.Duration, rate, floodRate float64,
	mix *frameMix, ps *packetSender, sent *counters, v *view) error {
	frames := make([][]byte, senderBatch)
	bufs := make([][]byte, senderBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 0, 2048)
	}
	kinds := make([]frameKind, senderBatch)
	floodFrom, floodTo := floodWindow(d)
	var clientsDone, floodDone uint64
	flooding := false
	for ctx.Err() == nil {
		el := time.Since(start)
		if el >= d {
			break
		}
		idle := true
		// Client frames due by now, one batch at a time.
		if target := uint64(rate * el.Seconds()); target > clientsDone {
			idle = false
			n := int(min(target-clientsDone, senderBatch))
			for i := range n {
				var err error
				if frames[i], kinds[i], err = mix.client(bufs[i][:0]); err != nil {
					return err
				}
			}
			done, err := ps.send(frames[:n])
			for _, k := range kinds[:done] {
				switch k {
				case kindEvent:
					sent.events.Add(1)
				case kindNotJSON:
					sent.notJSON.Add(1)
				case kindOtherPort:
					sent.otherPort.Add(1)
				}
			}
			clientsDone += uint64(done)
			if err != nil {
				return err
			}
		}
		switch {
		case el >= floodFrom && el < floodTo:
			if !flooding {
				flooding = true
				v.post(el, fmt.Sprintf("flood starts: %s sends %s/s", mix.floodSrc, num(uint64(floodRate))))
			}
			target := uint64(floodRate * (el - floodFrom).Seconds())
			if target > floodDone {
				idle = false
				n := int(min(target-floodDone, senderBatch))
				for i := range n {
					var err error
					if frames[i], err = mix.floodFrame(bufs[i][:0]); err != nil {
						return err
					}
				}
				done, err := ps.send(frames[:n])
				sent.flood.Add(uint64(done))
				floodDone += uint64(done)
				if err != nil {
					return err
				}
			}
		case el >= floodTo && flooding:
			flooding = false
			v.post(el, fmt.Sprintf("flood stops after %s datagrams", num(floodDone)))
		}
		if idle {
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}
