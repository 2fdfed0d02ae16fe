package host

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
)

// fuzzTopoFS is a host tree for ReadTopologyFS made of fuzzed texts:
// online (cpu/online; "-" leaves it out), nodes ("node0=0-3;node1=4-7";
// "-" leaves out the node directory: no NUMA), the interrupts file, the
// affinity lists (';'-separated, handed to the IRQs found in order), the
// RX queue directory names of eth0 (','-separated) and its device name.
func fuzzTopoFS(online, nodes string, interrupts []byte, affinity, queues, device string) fstest.MapFS {
	m := fstest.MapFS{}
	file := func(name, data string) {
		if clean := path.Clean(name); clean == name && fs.ValidPath(name) {
			m[name] = &fstest.MapFile{Data: []byte(data)}
		}
	}
	if online != "-" {
		file("sys/devices/system/cpu/online", online)
	}
	if nodes != "-" {
		m["sys/devices/system/node"] = &fstest.MapFile{Mode: fs.ModeDir}
		for ent := range strings.SplitSeq(nodes, ";") {
			name, list, _ := strings.Cut(ent, "=")
			if name != "" && !strings.Contains(name, "/") {
				file("sys/devices/system/node/"+name+"/cpulist", list)
			}
		}
	}
	m["sys/class/net/eth0/queues"] = &fstest.MapFile{Mode: fs.ModeDir}
	for q := range strings.SplitSeq(queues, ",") {
		if q != "" && !strings.Contains(q, "/") {
			file("sys/class/net/eth0/queues/"+q+"/rps_cpus", "0")
		}
	}
	if device != "" && !strings.Contains(device, "/") {
		m["sys/class/net/eth0/device"] = &fstest.MapFile{Mode: fs.ModeSymlink, Data: []byte("../../../devices/pci0000:00/" + device)}
	}
	file("proc/interrupts", string(interrupts))
	lists := strings.Split(affinity, ";")
	for i, in := range parseInterrupts(interrupts) {
		if i == 64 {
			break
		}
		file(fmt.Sprintf("proc/irq/%d/smp_affinity_list", in.irq), lists[i%len(lists)])
	}
	return m
}

// checkTopology holds a topology to what the gateway builds on: online
// CPUs and node IDs in range, every online CPU in exactly one node, every
// queue on an online CPU of the node NodeOf names.
func checkTopology(t *testing.T, topo *Topology) {
	t.Helper()
	ascending := func(what string, xs []int, limit int) {
		t.Helper()
		for i, x := range xs {
			if x < 0 || x >= limit || i > 0 && x <= xs[i-1] {
				t.Fatalf("%s %v: want ascending, distinct, in 0..%d", what, xs, limit-1)
			}
		}
	}
	if len(topo.Online) == 0 || len(topo.Nodes) == 0 {
		t.Fatalf("no online CPU or no node: %+v", topo)
	}
	ascending("online CPUs", topo.Online, maxCPUs)
	var ids, all []int
	for _, n := range topo.Nodes {
		ids = append(ids, n.ID)
		if len(n.CPUs) == 0 {
			t.Fatalf("node %d without CPUs", n.ID)
		}
		ascending(fmt.Sprintf("node %d CPUs", n.ID), n.CPUs, maxCPUs)
		all = append(all, n.CPUs...)
	}
	ascending("node IDs", ids, maxNodes)
	slices.Sort(all)
	if !slices.Equal(all, topo.Online) {
		t.Fatalf("the nodes' CPUs %v are not the online CPUs %v, each once", all, topo.Online)
	}
	var qs []int
	irq, fallback := 0, 0
	for _, q := range topo.Queues {
		qs = append(qs, q.Index)
		if !slices.Contains(topo.Online, q.CPU) || q.Node < 0 || q.Node != topo.NodeOf(q.CPU) {
			t.Fatalf("queue %+v: CPU offline or in another node (%d)", q, topo.NodeOf(q.CPU))
		}
		if q.IRQ < -1 || q.IRQ >= maxIRQ {
			t.Fatalf("queue %+v: IRQ out of range", q)
		}
		switch q.Source {
		case SourceIRQ:
			irq++
			if q.IRQ < 0 || !slices.Contains(q.CPUs, q.CPU) {
				t.Fatalf("queue %+v: from an IRQ, but not one of its CPUs", q)
			}
			for _, c := range q.CPUs {
				if !slices.Contains(topo.Online, c) {
					t.Fatalf("queue %+v: IRQ CPU %d is offline", q, c)
				}
			}
		case SourceFallback:
			fallback++
			if q.CPUs != nil || q.CPU != topo.Online[q.Index%len(topo.Online)] {
				t.Fatalf("queue %+v: fallback is online CPU index mod %d", q, len(topo.Online))
			}
		default:
			t.Fatalf("queue %+v: source %q", q, q.Source)
		}
	}
	ascending("queues", qs, 1<<16)
	if topo.Interface != "" {
		want := SourceMixed
		if fallback == 0 {
			want = SourceIRQ
		} else if irq == 0 {
			want = SourceFallback
		}
		if len(qs) == 0 || topo.Source != want {
			t.Fatalf("%d queues, %d from IRQs, %d fallback: source %q", len(qs), irq, fallback, topo.Source)
		}
	}
	n := 0
	for _, g := range topo.Groups() {
		for _, q := range g.Queues {
			if i := slices.IndexFunc(topo.Queues, func(x Queue) bool { return x.Index == q }); i < 0 || topo.Queues[i].Node != g.Node {
				t.Fatalf("group of node %d holds queue %d of another node", g.Node, q)
			}
		}
		n += len(g.Queues)
	}
	if n != len(topo.Queues) {
		t.Fatalf("groups hold %d queues of %d", n, len(topo.Queues))
	}
}

// FuzzReadTopology reads fuzzed sysfs and procfs trees: an error, or a
// topology checkTopology accepts.
func FuzzReadTopology(f *testing.F) {
	irqs := testdataFile(f, "topo-2node/proc/interrupts")
	f.Add("0-15", "node0=0-7;node1=8-15", irqs, "0;1;2-3;8-15", "rx-0,rx-1,rx-2,rx-3", "0000:03:00.0")
	f.Add("0-3", "-", []byte(" 5: 1 2 eth0-rx-0\n 6: 0 eth0-rx-1\n"), "3;9", "rx-0,rx-1,rx-2", "")
	f.Add("0-3", "node0=0-1;node+0=2-3;node-1=0;node1024=1;node00=3", []byte("7: eth0-3\n-8: eth0-0\n+9: eth0-1\n"), "", "rx-3,rx-03,rx-+1", "virtio3")
	f.Add("0-3", "-", []byte(" 5: 0 eth0-rx-3\n"), "1", "rx-3,rx-03", "")
	f.Add("0-3", "-", []byte("-8: 0 eth0-0\n"), "1", "rx-0", "")
	f.Add("0,2", "node0=1;node3=", []byte("12: virtio3-input.0\n13: mlx5_comp1@pci:0000:01:00.0\n"), "2-3;0", "rx-0,rx-1", "virtio3")
	f.Add("0-65535,0-65535", "node0=0-65535", []byte("99999999999999: eth0-0\n"), "0-65535", "rx-65535,rx-65536", "0000:01:00.0")
	f.Add("", "", []byte{}, "", "", "")
	f.Add("-", "-", []byte{}, "", "", "")
	f.Add("1-0", "node0=x", []byte("\x00:\n:"), "\xff", "rx-", "\xff")
	f.Fuzz(func(t *testing.T, online, nodes string, interrupts []byte, affinity, queues, device string) {
		fsys := fuzzTopoFS(online, nodes, interrupts, affinity, queues, device)
		topo, err := ReadTopologyFS(fsys, "eth0")
		if err != nil {
			if topo != nil {
				t.Fatalf("error %v with a topology", err)
			}
			return
		}
		checkTopology(t, topo)
		if bare, err := ReadTopologyFS(fsys, ""); err != nil || bare.Interface != "" || len(bare.Queues) != 0 {
			t.Fatalf("without an interface: %+v, %v", bare, err)
		}
	})
}

// TestParseCPUListBounded: repeated and overlapping ranges expand once
// (each used to walk its whole range through a map: minutes for this).
func TestParseCPUListBounded(t *testing.T) {
	s := strings.Repeat("0-65535,", 20000) + "1-65534"
	cpus, err := ParseCPUList(s)
	if err != nil || len(cpus) != maxCPUs || cpus[0] != 0 || cpus[maxCPUs-1] != maxCPUs-1 {
		t.Fatalf("%d CPUs, %v", len(cpus), err)
	}
	if _, err := ParseCPUList(s + ",65536"); err == nil || len(err.Error()) > 200 {
		t.Fatalf("error %.300v: want one that is short", err)
	}
}

// testdataFile reads testdata/name for a seed.
func testdataFile(tb testing.TB, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// escapeMount escapes a path as the kernel writes it in /proc/self/mounts.
func escapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// FuzzProcText feeds the texts of /proc/self/status, /proc/self/mounts,
// the kernel release, the /proc/interrupts lines, the entries of
// /proc/self/task and the other one-value files to their parsers: never a
// panic, and values that say what the text says.
func FuzzProcText(f *testing.F) {
	for _, name := range []string{"status-root", "status-user", "status-badcapeff", "status-nocapeff"} {
		st := testdataFile(f, "proc/"+name)
		m := testdataFile(f, "proc/mounts-bpffs")
		f.Add(string(st), string(m), "6.18.44-fc-v669", "/sys/fs/bpf/xgate", "1\n12\n+3\n-4\n0\n007", uint64(0x1fe))
	}
	f.Add("CapEff:\t+ff\nNoNewPrivs:\t1\n", "bpf /sys/fs/bpf/ bpf rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\nx /sys/fs/bpf/// tmpfs rw 0 0\n",
		"+6.-1", "/sys/fs/bpf//x/..", "99999999999", uint64(1)<<63)
	f.Add("CapEff: 0x10\n", `a /run/my\040bpf bpf rw 0 0`+"\nb / ext4 rw\nc \\134\\777\\0 x\n", "-6.5", "relative/dir", "", uint64(0))
	f.Add("", "", "4.19.0+\n", "/", "\xff", uint64(5))
	f.Fuzz(func(t *testing.T, status, mounts, release, dir, lines string, caps uint64) {
		// CapEff: the first CapEff line, as a 64-bit hex mask.
		if got, err := ParseCapEff(status); err == nil {
			v, _ := statusField(status, "CapEff")
			if n, perr := strconv.ParseUint(v, 16, 64); perr != nil || CapSet(n) != got {
				t.Fatalf("CapEff %q read as %#x", v, uint64(got))
			}
		}
		st := fmt.Sprintf("Name:\txgate\nCapPrm:\t%016x\nCapEff:\t%016x\nNoNewPrivs:\t1\n", ^caps, caps)
		if got, err := ParseCapEff(st); err != nil || got != CapSet(caps) || !noNewPrivs(st) {
			t.Fatalf("%q: CapEff %#x, %v; no_new_privs %v", st, uint64(got), err, noNewPrivs(st))
		}
		_ = noNewPrivs(status)

		// Kernel release: decimal major and minor, in range; the two
		// printed back read the same.
		if maj, mnr, err := ParseKernelRelease(release); err == nil {
			if maj < 0 || mnr < 0 || maj >= 1<<20 || mnr >= 1<<20 {
				t.Fatalf("release %q: %d.%d", release, maj, mnr)
			}
			if m2, n2, err := ParseKernelRelease(fmt.Sprintf("%d.%d-x", maj, mnr)); err != nil || m2 != maj || n2 != mnr {
				t.Fatalf("release %d.%d does not read back: %d.%d, %v", maj, mnr, m2, n2, err)
			}
		}

		// Mounts: the deepest mount point that holds dir, cleaned.
		clean := path.Clean(dir)
		fstype, mp := MountFor(mounts, dir)
		deepest := -1
		for line := range strings.Lines(mounts) {
			if fl := strings.Fields(line); len(fl) >= 3 {
				if m := path.Clean(unescapeMount(fl[1])); pathWithin(clean, m) {
					deepest = max(deepest, len(m))
				}
			}
		}
		switch {
		case (fstype == "") != (deepest < 0) || fstype == "" && mp != "":
			t.Fatalf("MountFor(%q) = %q at %q, deepest covering mount point %d bytes", dir, fstype, mp, deepest)
		case fstype != "" && (mp != path.Clean(mp) || !pathWithin(clean, mp) || len(mp) != deepest):
			t.Fatalf("MountFor(%q) = %q at %q: not the deepest (%d bytes) clean mount point over it", dir, fstype, mp, deepest)
		}
		if got := unescapeMount(escapeMount(dir)); got != dir {
			t.Fatalf("mount point %q escaped as %q reads back as %q", dir, escapeMount(dir), got)
		}
		if len(unescapeMount(mounts)) > len(mounts) {
			t.Fatal("unescaping made a longer text")
		}

		// /proc/interrupts: IRQs in range, names without blanks.
		for _, in := range parseInterrupts([]byte(lines)) {
			if in.irq < 0 || in.irq >= maxIRQ || in.name == "" || strings.ContainsAny(in.name, " \t\n") {
				t.Fatalf("%q: IRQ %d name %q", lines, in.irq, in.name)
			}
			if q, ok := queueOfIRQ(in.name, "eth0", release); ok && (q < 0 || q >= 1<<16) {
				t.Fatalf("IRQ name %q: queue %d", in.name, q)
			}
		}

		// Task entries: thread IDs in 1..maxTID-1 only (never 0: the
		// calling thread to sched_setaffinity).
		names := strings.Split(lines, "\n")
		for _, id := range threadIDs(names) {
			if id <= 0 || id >= maxTID || !slices.ContainsFunc(names, func(n string) bool { return strings.TrimLeft(n, "0") == strconv.Itoa(id) }) {
				t.Fatalf("%q: thread ID %d", names, id)
			}
		}

		// One-value files.
		if p := pidText([]byte(lines)); p != "unknown" && (strings.Trim(p, "0123456789") != "" || p == "" || len(p) > 12) {
			t.Fatalf("pid file %q printed as %q", lines, p)
		}
		if rtThrottlingOff([]byte(lines)) != (strings.TrimSpace(lines) == "-1") {
			t.Fatalf("sched_rt_runtime_us %q", lines)
		}
		index := int(caps % (1 << 31))
		hw := net.HardwareAddr(binary.BigEndian.AppendUint64(nil, caps)[2:]).String()
		if !sameLink([]byte(strconv.Itoa(index)+"\n"), []byte(strings.ToUpper(hw)+"\n"), index, hw) ||
			sameLink([]byte(strconv.Itoa(index+1)), []byte(hw), index, hw) || sameLink([]byte(lines), []byte(release), -1, release) {
			t.Fatalf("sameLink of index %d address %q", index, hw)
		}
	})
}
