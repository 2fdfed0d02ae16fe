package gateway

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"

	"golang.org/x/sys/unix"
)

// TestGatewayWorkerCPUs runs both receive paths with workers.cpus set to
// one CPU: socket mode opens one socket and one worker there, and afxdp
// runs the workers of both queues there (a veth in a test host is not in
// sysfs, so its queues have no interrupt CPU: the listed CPUs serve them);
// each decides every event, and a thread of the process is pinned to
// exactly that CPU. The afxdp sockets spin as afxdp.spin says (0 here).
func TestGatewayWorkerCPUs(t *testing.T) {
	cpu := allowedCPU(t, -1)
	for _, mode := range []string{"socket", "afxdp"} {
		t.Run(mode, func(t *testing.T) {
			pair, g, _ := runIT(t, 2, mode, func(c *config.Config) {
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

// allowedCPU returns the i-th CPU this process may run on (-1: the last).
func allowedCPU(t *testing.T, i int) int {
	t.Helper()
	cpus, err := host.ProcessCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(cpus)
	}
	return cpus[i]
}

// threadsPinnedTo counts this process's threads whose affinity is cpu alone.
func threadsPinnedTo(t *testing.T, cpu int) int {
	t.Helper()
	n := 0
	for _, tid := range host.ThreadIDs() {
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
	cfg, err := config.Parse("c.yaml", []byte("listen: {ports: [9000], address: 127.0.0.1}\nworkers: {cpus: \"4000\"}\n"))
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

// TestHousekeeping: with workers.cpus leaving a CPU free, the process's
// other threads move there once the workers have pinned themselves, the
// workers stay on theirs, and after Stop no thread is left on the
// Housekeeping CPUs alone.
func TestHousekeeping(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skip("needs two CPUs")
	}
	cpu := allowedCPU(t, 0)
	_, g, stop := runIT(t, 1, "socket", func(c *config.Config) { c.Workers.CPUs = strconv.Itoa(cpu) })
	if g.hk == nil {
		t.Fatal("no Housekeeping with one worker CPU on a host with more")
	}
	hk := host.CPUSet(g.hk.CPUs)
	if hk.IsSet(cpu) || hk.Count() != all.Count()-1 {
		t.Fatalf("Housekeeping CPUs %v", g.hk.CPUs)
	}
	count := func() (whole, onHK int) {
		for _, tid := range host.ThreadIDs() {
			var cur unix.CPUSet
			if unix.SchedGetaffinity(tid, &cur) != nil {
				continue
			}
			switch cur {
			case all:
				whole++
			case hk:
				onHK++
			}
		}
		return whole, onHK
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		whole, onHK := count()
		if whole == 0 && onHK > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s: %d threads still on every CPU, %d on the Housekeeping ones", whole, onHK)
		}
	}
	if n := threadsPinnedTo(t, cpu); n < 1 {
		t.Errorf("no thread pinned to CPU %d (the worker)", cpu)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if whole, onHK := count(); onHK != 0 || whole == 0 {
		t.Errorf("after Stop: %d threads on the Housekeeping CPUs alone, %d on every CPU", onHK, whole)
	}
}

// Without workers.cpus, or with every CPU listed, nothing is moved.
func TestHousekeepingOff(t *testing.T) {
	if h, err := host.NewHousekeeping(nil); h != nil || err != nil {
		t.Errorf("no workers.cpus: %v %v", h, err)
	}
	every, err := host.ProcessCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if h, err := host.NewHousekeeping(every); h != nil || err != nil {
		t.Errorf("workers on every CPU: %v %v", h, err)
	}
}

func TestRestartKeys(t *testing.T) {
	base, err := config.Parse("a.yaml", []byte("listen: {ports: [9000]}\nworkers: {cpus: \"1-3\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		yaml string
		want []string
	}{
		{"listen: {ports: [9000]}\nworkers: {cpus: \"1,2,3\"}\n", nil}, // the same CPUs
		{"listen: {ports: [9000]}\nworkers: {cpus: \"1-2\"}\n", []string{"workers"}},
		{"listen: {ports: [9000]}\nworkers: {cpus: \"1-3\", realtime_priority: 5}\n", []string{"workers"}},
		{"listen: {ports: [9000]}\nworkers: {cpus: \"1-3\"}\nafxdp: {spin: 200us}\n", []string{"afxdp"}},
		{"listen: {ports: [9001]}\nworkers: {cpus: \"1-3\"}\n", []string{"listen"}},
		// Applied at once, so not listed: the token, pprof, block_max,
		// the served VLANs, the CIDR lists.
		{"listen: {ports: [9000], vlans: [5]}\nworkers: {cpus: \"1-3\"}\nhttp: {token: tokentokentokentoken, pprof: false}\nxdp: {block_max: 10, never_block: [10.0.0.0/8]}\n", nil},
		{"listen: {ports: [9000]}\nworkers: {cpus: \"1-3\"}\nhttp: {listen: \"127.0.0.1:9999\"}\n", []string{"http.listen"}},
		{"listen: {ports: [9000]}\nworkers: {cpus: \"1-3\"}\nxdp: {blocklist_size: 1000, block_max: 10}\n", []string{"xdp.blocklist_size"}},
		{"listen: {ports: [9000]}\nworkers: {cpus: \"1-3\"}\nsocket: {batch: 8}\n", []string{"socket"}},
	} {
		cfg, err := config.Parse("b.yaml", []byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if got := restartKeys(base, cfg); !slices.Equal(got, tc.want) {
			t.Errorf("%q: restart %v, want %v", tc.yaml, got, tc.want)
		}
	}
}
