//go:build linux

package testenv

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func skipIfNotRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root")
	}
}

// leftovers lists namespaces and root-namespace links carrying tag.
func leftovers(t *testing.T, tag string) []string {
	t.Helper()
	var found []string
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, tag) {
			found = append(found, "netns "+line)
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Alias, tag) {
			found = append(found, "link "+l.Attrs().Name)
		}
	}
	return found
}

func TestTestenvCreateClose(t *testing.T) {
	skipIfNotRoot(t)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"netns-both", Options{RxQueues: 4, IPv6: true}},
		{"root-a", Options{RootA: true, MTU: 3000}},
		{"threaded", Options{RxQueues: 2, ThreadedNAPI: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPair(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			t.Cleanup(func() {
				if !closed {
					p.Close()
				}
			})
			if got := leftovers(t, p.Tag); tc.opts.RootA && len(got) != 2 || !tc.opts.RootA && len(got) != 2 {
				// RootA: one netns (b) + the root link; else two netns.
				t.Errorf("while open: found %v", got)
			}
			for _, h := range []*Host{p.A, p.B} {
				if h.Ifindex == 0 || len(h.MAC) != 6 || !h.Addr.IsValid() {
					t.Errorf("%s: incomplete host %+v", h.Link, h)
				}
				nh, err := netlink.NewHandleAt(h.NetNS())
				if err != nil {
					t.Fatal(err)
				}
				l, err := nh.LinkByName(h.Link)
				nh.Close()
				if err != nil {
					t.Fatal(err)
				}
				want := max(tc.opts.RxQueues, 1)
				if l.Attrs().NumRxQueues != want {
					t.Errorf("%s: %d rx queues, want %d", h.Link, l.Attrs().NumRxQueues, want)
				}
				if tc.opts.MTU != 0 && l.Attrs().MTU != tc.opts.MTU {
					t.Errorf("%s: mtu %d, want %d", h.Link, l.Attrs().MTU, tc.opts.MTU)
				}
				if tc.opts.IPv6 != h.Addr6.IsValid() {
					t.Errorf("%s: v6 %v", h.Link, h.Addr6)
				}
			}
			if tc.opts.ThreadedNAPI {
				// One napi/<dev>-<id> kernel thread per RX queue and end.
				comms, _ := filepath.Glob("/proc/[0-9]*/comm")
				n := 0
				for _, f := range comms {
					b, _ := os.ReadFile(f)
					for _, h := range []*Host{p.A, p.B} {
						if strings.HasPrefix(string(b), "napi/"+h.Link+"-") {
							n++
						}
					}
				}
				if want := 2 * tc.opts.RxQueues; n != want {
					t.Errorf("%d napi threads, want %d", n, want)
				}
			}
			if tc.opts.RootA && p.A.NS != "" {
				t.Errorf("RootA: A in %q", p.A.NS)
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			closed = true
			if err := p.Close(); err != nil {
				t.Fatalf("second close: %v", err)
			}
			if got := leftovers(t, p.Tag); len(got) != 0 {
				t.Fatalf("after close: %v", got)
			}
		})
	}
}

func TestTestenvUDPRoundtrip(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := "v4"
		if v6 {
			name = "v6"
		}
		t.Run(name, func(t *testing.T) {
			p := New(t, Options{RxQueues: 2, IPv6: v6})
			addr := p.B.Addr
			if v6 {
				addr = p.B.Addr6
			}
			fd, port, err := p.B.ListenUDP(addr, 0, func(fd int) error {
				return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
			})
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			const n = 50
			payload := []byte(`{"event_id":"e-1","user_id":"u-1"}`)
			sent, err := p.A.SendUDP(netip.AddrPortFrom(addr, port), payload, n)
			if err != nil || sent != n {
				t.Fatalf("sent %d/%d: %v", sent, n, err)
			}
			buf := make([]byte, 2048)
			for i := range n {
				m, from, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					snmp, _ := p.B.SNMP()
					for k, v := range snmp {
						if v != 0 && (strings.HasPrefix(k, "Udp") || strings.HasPrefix(k, "Ip")) {
							t.Logf("B %s %d", k, v)
						}
					}
					t.Fatalf("recv %d: %v", i, err)
				}
				if !bytes.Equal(buf[:m], payload) {
					t.Fatalf("recv %d: %q", i, buf[:m])
				}
				var src netip.Addr
				switch from := from.(type) {
				case *unix.SockaddrInet4:
					src = netip.AddrFrom4(from.Addr)
				case *unix.SockaddrInet6:
					src = netip.AddrFrom16(from.Addr)
				}
				want := p.A.Addr
				if v6 {
					want = p.A.Addr6
				}
				if src != want {
					t.Fatalf("from %v, want %v", src, want)
				}
			}
			snmp, err := p.B.SNMP()
			if err != nil {
				t.Fatal(err)
			}
			key := "Udp.InDatagrams"
			if v6 {
				key = "Udp6InDatagrams"
			}
			if snmp[key] != n {
				t.Errorf("%s in B's netns = %d, want %d", key, snmp[key], n)
			}
		})
	}
}

func TestTestenvRootARoundtrip(t *testing.T) {
	p := New(t, Options{RootA: true})
	fd, port, err := p.B.ListenUDP(p.B.Addr, 0, func(fd int) error {
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := p.A.SendUDP(netip.AddrPortFrom(p.B.Addr, port), []byte("x"), 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := unix.Recvfrom(fd, make([]byte, 16), 0); err != nil {
		t.Fatal(err)
	}
}

// TestTestenvCleanupOnFailure fails a subtest on purpose (in a child test
// binary run) and checks that its pair is gone afterwards.
func TestTestenvCleanupOnFailure(t *testing.T) {
	skipIfNotRoot(t)
	if os.Getenv("XGATE_TESTENV_CHILD") == "1" {
		p := New(t, Options{})
		os.WriteFile(os.Getenv("XGATE_TESTENV_TAG"), []byte(p.Tag), 0o600)
		t.Fatal("failing on purpose")
		return
	}
	tagFile := t.TempDir() + "/tag"
	cmd := exec.Command(os.Args[0], "-test.run=^TestTestenvCleanupOnFailure$", "-test.count=1")
	cmd.Env = append(os.Environ(), "XGATE_TESTENV_CHILD=1", "XGATE_TESTENV_TAG="+tagFile)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !bytes.Contains(out, []byte("failing on purpose")) {
		t.Fatalf("child should fail on purpose: %v\n%s", err, out)
	}
	tag, err := os.ReadFile(tagFile)
	if err != nil || len(tag) == 0 {
		t.Fatalf("no tag from child: %v\n%s", err, out)
	}
	if got := leftovers(t, string(tag)); len(got) != 0 {
		t.Fatalf("failed test left %v", got)
	}
}

// TestTestenvSweep simulates a crashed run: a namespace and a root link
// tagged with a PID that does not exist.
func TestTestenvSweep(t *testing.T) {
	skipIfNotRoot(t)
	dead := 1 << 22 // above pid_max's default limit of 4194304
	for unix.Kill(dead, 0) == nil {
		dead--
	}
	tag := Prefix + strconv.Itoa(dead) + "-1-zzz"
	ns, err := newNamedNS(tag + "-b")
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
	la := netlink.NewLinkAttrs()
	la.Name = "xtsweep" + strconv.Itoa(os.Getpid()%10000)
	la.Alias = tag
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: la.Name + "p"}); err != nil {
		deleteNamedNS(tag + "-b")
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(la.Name); err == nil {
			netlink.LinkDel(l)
		}
		deleteNamedNS(tag + "-b")
	})
	// A live one of ours must survive the sweep.
	p := New(t, Options{RootA: true})

	removed, err := Sweep()
	if err != nil {
		t.Fatal(err)
	}
	if got := leftovers(t, tag); len(got) != 0 {
		t.Fatalf("sweep left %v (removed %v)", got, removed)
	}
	if got := leftovers(t, p.Tag); len(got) != 2 {
		t.Fatalf("sweep touched a live pair: %v (removed %v)", got, removed)
	}
}

// threadNetNS lists the network namespace of every thread of this process.
func threadNetNS(t *testing.T) map[string]int {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]int)
	for _, f := range tasks {
		if ns, err := os.Readlink(f); err == nil {
			seen[ns]++
		}
	}
	return seen
}

func TestTestenvDoRestoresThread(t *testing.T) {
	p := New(t, Options{RxQueues: 2, ThreadedNAPI: true})
	before, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := p.B.Do(func() error {
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == before {
		t.Fatalf("Do ran in the caller's namespace %s", inside)
	}
	for range 20 {
		p.B.Do(func() error { return nil })
		p.B.SetThreadedNAPI(true)
	}
	// No thread of the process is left in a test namespace.
	if seen := threadNetNS(t); len(seen) != 1 {
		t.Fatalf("threads in several namespaces: %v (caller in %s)", seen, before)
	}
}

// TestKernelQueues: a veth made without numrxqueues has the kernel's
// maximum (one per possible CPU) but one active queue; Host.Queues and
// Existing count the active ones, and SetChannels activates more.
func TestKernelQueues(t *testing.T) {
	skipIfNotRoot(t)
	p := New(t, Options{KernelQueues: true})
	nh, err := netlink.NewHandleAt(p.B.NetNS())
	if err != nil {
		t.Fatal(err)
	}
	l, err := nh.LinkByName(p.B.Link)
	nh.Close()
	if err != nil {
		t.Fatal(err)
	}
	devMax := l.Attrs().NumRxQueues
	if p.B.Queues != 1 {
		t.Fatalf("Queues %d, want 1 active (device max %d)", p.B.Queues, devMax)
	}
	e, err := Existing(p.B.NS, p.B.Link)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Release()
	if e.Queues != 1 {
		t.Errorf("Existing: Queues %d, want 1 active (device max %d)", e.Queues, devMax)
	}
	if devMax < 2 {
		t.Skipf("device max %d RX queues (one possible CPU): cannot activate 2", devMax)
	}
	if err := p.B.SetChannels(2, 2); err != nil {
		t.Fatal(err)
	}
	if n, err := p.B.ActiveRxQueues(); err != nil || n != 2 || p.B.Queues != 2 {
		t.Errorf("after SetChannels(2, 2): active %d (%v), Queues %d; want 2", n, err, p.B.Queues)
	}
	if _, err := NewPair(Options{KernelQueues: true, RxQueues: 2}); err == nil {
		t.Error("KernelQueues with RxQueues accepted")
	}
}
