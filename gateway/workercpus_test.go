package gateway

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGatewayWorkerCPUs runs both receive paths with workers.cpus set to
// one CPU: socket mode opens one socket and one worker there, afxdp moves
// the worker of a queue served by another CPU onto it; each decides every
// event, and a thread of the process is pinned to exactly that CPU. The
// afxdp sockets spin as afxdp.spin says (0 here, not the default).
func TestGatewayWorkerCPUs(t *testing.T) {
	cpu := runtime.NumCPU() - 1
	for _, mode := range []string{"socket", "afxdp"} {
		t.Run(mode, func(t *testing.T) {
			pair, g, _ := runIT(t, 2, mode, func(c *Config) {
				c.Workers.CPUs = strconv.Itoa(cpu)
				c.AFXDP.Spin = 0 // afxdp.spin reaches the sockets (below)
			})
			want := 1
			if mode == "afxdp" {
				want = 2 // one per queue, both on the listed CPU
			}
			if len(g.workers) != want {
				t.Fatalf("%d workers, want %d", len(g.workers), want)
			}
			for _, w := range g.workers {
				if w.cpu != cpu {
					t.Errorf("worker %d on CPU %d, want %d", w.id, w.cpu, cpu)
				}
				if w.xsk != nil && w.xsk.sock.Config().Spin != 0 {
					t.Errorf("worker %d spins %v, afxdp.spin is 0", w.id, w.xsk.sock.Config().Spin)
				}
			}
			sent := sendEventsAndOther(t, pair, 200, 0)
			s := quiesce(t, g, sent)
			if s.Engine.Events+s.Engine.DecodeErrorTotal() != 200 {
				t.Errorf("decided %d + decode errors %d, want 200", s.Engine.Events, s.Engine.DecodeErrorTotal())
			}
			if n := threadsPinnedTo(t, cpu); n < want {
				t.Errorf("%d threads pinned to CPU %d alone, want at least %d", n, cpu, want)
			}
		})
	}
}

// threadsPinnedTo counts this process's threads whose affinity is cpu alone.
func threadsPinnedTo(t *testing.T, cpu int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var set unix.CPUSet
		if unix.SchedGetaffinity(tid, &set) != nil {
			continue // the thread ended
		}
		if set.Count() == 1 && set.IsSet(cpu) {
			n++
		}
	}
	return n
}

func TestGatewayWorkerCPUsOffline(t *testing.T) {
	cfg, err := ParseConfig("c.yaml", []byte("listen: {ports: [9000], address: 127.0.0.1}\nworkers: {cpus: \"4000\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pin.Path, cfg.HTTP.Listen, cfg.Probes.Enabled = "", "", false
	g, err := New(cfg, Options{})
	if err == nil {
		_ = g.Stop()
		t.Fatal("a gateway started with workers on an offline CPU")
	}
	if !strings.Contains(err.Error(), "workers.cpus: CPU 4000 is not online here") {
		t.Errorf("error %q does not name the offline CPU", err)
	}
}
