package host

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

func TestParseCPUList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		err  string
	}{
		{in: "", want: nil},
		{in: "\n", want: nil},
		{in: "0", want: []int{0}},
		{in: "0-3", want: []int{0, 1, 2, 3}},
		{in: "0-3,8-11,16\n", want: []int{0, 1, 2, 3, 8, 9, 10, 11, 16}},
		{in: "5,1-2,2", want: []int{1, 2, 5}},
		{in: " 7 - 8 ", want: []int{7, 8}},
		{in: "3-3", want: []int{3}},
		{in: "3-1", err: `cpulist "3-1": range 3-1 ends before it starts`},
		{in: "a", err: `cpulist "a": "a" is not a CPU number`},
		{in: "1,,2", err: `cpulist "1,,2": "" is not a CPU number`},
		{in: "-1", err: `cpulist "-1": "" is not a CPU number`},
		{in: "1-", err: `cpulist "1-": "" is not a CPU number`},
		{in: "0-7:2/4", err: `"7:2/4" is not a CPU number`},
		{in: "0x10", err: `"0x10" is not a CPU number`},
		{in: "99999999", err: `CPU "99999999" is out of range`},
		{in: "0-99999999999999999999", err: `is out of range`},
	} {
		got, err := ParseCPUList(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseCPUList(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseCPUList(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if s := FormatCPUList(got); tc.in != "" {
			back, _ := ParseCPUList(s)
			if !reflect.DeepEqual(back, got) {
				t.Errorf("FormatCPUList(%v) = %q does not parse back", got, s)
			}
		}
	}
	if s := FormatCPUList([]int{0, 1, 2, 3, 8, 9, 10, 11, 16}); s != "0-3,8-11,16" {
		t.Errorf("FormatCPUList = %q", s)
	}
}

// TestTopologyThisHost reads the real machine: at least one node, every
// online CPU in exactly one node, and if there is a non-loopback
// interface, queues that map to online CPUs.
func TestTopologyThisHost(t *testing.T) {
	topo, err := ReadTopology("", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Nodes) == 0 || len(topo.Online) == 0 {
		t.Fatalf("no nodes or CPUs: %+v", topo)
	}
	seen := map[int]int{}
	for _, n := range topo.Nodes {
		for _, c := range n.CPUs {
			seen[c]++
		}
	}
	for _, c := range topo.Online {
		if seen[c] != 1 {
			t.Errorf("CPU %d is in %d nodes", c, seen[c])
		}
	}
	gs := topo.Groups()
	sockets := 0
	for _, g := range gs {
		sockets += g.Sockets
	}
	if sockets != len(topo.Online) {
		t.Errorf("%d sockets for %d CPUs", sockets, len(topo.Online))
	}
	t.Logf("nodes %+v notes %q", topo.Nodes, topo.Notes)

	ifname := ""
	if ents, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, e := range ents {
			if e.Name() != "lo" {
				if _, err := os.Stat("/sys/class/net/" + e.Name() + "/queues/rx-0"); err == nil {
					ifname = e.Name()
					break
				}
			}
		}
	}
	if ifname == "" {
		t.Skip("no interface with RX queues on this host")
	}
	topo, err = ReadTopology("/", ifname)
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Queues) == 0 {
		t.Fatalf("%s: no queues", ifname)
	}
	for _, q := range topo.Queues {
		if topo.NodeOf(q.CPU) != q.Node || q.Node < 0 {
			t.Errorf("%s queue %d: CPU %d node %d", ifname, q.Index, q.CPU, q.Node)
		}
	}
	t.Logf("%s: source %s queues %+v notes %q", ifname, topo.Source, topo.Queues, topo.Notes)
}

// TestTopologyTwoNodes reads a fake two-node host (16 CPUs interleaved
// over the nodes, one memory-only node) with an 8-queue NIC whose IRQs
// are spread over both nodes.
func TestTopologyTwoNodes(t *testing.T) {
	topo, err := ReadTopology("testdata/topo-2node", "eth9")
	if err != nil {
		t.Fatal(err)
	}
	wantNodes := []Node{
		{ID: 0, CPUs: []int{0, 1, 2, 3, 8, 9, 10, 11}},
		{ID: 1, CPUs: []int{4, 5, 6, 7, 12, 13, 14, 15}},
	}
	if !reflect.DeepEqual(topo.Nodes, wantNodes) || !topo.NUMA {
		t.Errorf("nodes %+v (NUMA %v), want %+v", topo.Nodes, topo.NUMA, wantNodes)
	}
	if !hasNote(topo, "node 2 has no online CPU") {
		t.Errorf("no note about the memory-only node: %q", topo.Notes)
	}
	if topo.Source != SourceIRQ {
		t.Errorf("source %q, want irq", topo.Source)
	}
	type qc struct{ idx, irq, cpu, node int }
	want := []qc{
		{0, 100, 0, 0}, {1, 101, 1, 0}, {2, 102, 2, 0},
		{3, 103, 11, 0}, // affinity 8-11, not pinned: spread, 3 mod 4 → CPU 11
		{4, 104, 4, 1}, {5, 105, 5, 1},
		{6, 106, 12, 1}, // smp_affinity_list 0-15, effective 12
		{7, 107, 13, 1},
	}
	var got []qc
	for _, q := range topo.Queues {
		got = append(got, qc{q.Index, q.IRQ, q.CPU, q.Node})
		if q.Source != SourceIRQ {
			t.Errorf("queue %d source %q", q.Index, q.Source)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("queues %+v\nwant   %+v", got, want)
	}
	if !reflect.DeepEqual(topo.Queues[3].CPUs, []int{8, 9, 10, 11}) {
		t.Errorf("queue 3 affinity %v", topo.Queues[3].CPUs)
	}
	if !hasNote(topo, "eth9 queue 3: IRQ 103 may run on CPUs 8-11; using CPU 11") {
		t.Errorf("no note about the unpinned IRQ: %q", topo.Notes)
	}
	wantGroups := []Group{
		{Node: 0, CPUs: wantNodes[0].CPUs, Queues: []int{0, 1, 2, 3}, Sockets: 8},
		{Node: 1, CPUs: wantNodes[1].CPUs, Queues: []int{4, 5, 6, 7}, Sockets: 8},
	}
	if gs := topo.Groups(); !reflect.DeepEqual(gs, wantGroups) {
		t.Errorf("groups %+v\nwant   %+v", gs, wantGroups)
	}
	if topo.NodeOf(12) != 1 || topo.NodeOf(9) != 0 || topo.NodeOf(99) != -1 {
		t.Errorf("NodeOf wrong")
	}
}

// TestTopologyVirtio maps virtio-net queues by the device's IRQ names
// (virtio3-input.N), found through the device symlink.
func TestTopologyVirtio(t *testing.T) {
	topo, err := ReadTopology("testdata/topo-2node", "eth1")
	if err != nil {
		t.Fatal(err)
	}
	if topo.Source != SourceIRQ || len(topo.Queues) != 2 ||
		topo.Queues[0].IRQ != 121 || topo.Queues[0].CPU != 6 || topo.Queues[0].Node != 1 ||
		topo.Queues[1].IRQ != 123 || topo.Queues[1].CPU != 14 || topo.Queues[1].Node != 1 {
		t.Errorf("virtio queues %+v source %s", topo.Queues, topo.Source)
	}
	gs := topo.Groups()
	if len(gs) != 2 || len(gs[0].Queues) != 0 || !reflect.DeepEqual(gs[1].Queues, []int{0, 1}) {
		t.Errorf("groups %+v", gs)
	}
}

// TestTopologyVethFallback: a virtual device has no IRQs, so queue i goes
// to online CPU i mod ncpu, and the topology says so.
func TestTopologyVethFallback(t *testing.T) {
	topo, err := ReadTopology("testdata/topo-2node", "veth0")
	if err != nil {
		t.Fatal(err)
	}
	if topo.Source != SourceFallback {
		t.Errorf("source %q, want fallback", topo.Source)
	}
	for i, q := range topo.Queues {
		if q.Index != i || q.IRQ != -1 || q.CPU != i%16 || q.Source != SourceFallback || q.CPUs != nil {
			t.Errorf("queue %+v", q)
		}
	}
	if len(topo.Queues) != 4 || !hasNote(topo, "veth0 has no per-queue IRQs") || !hasNote(topo, "i mod 16") {
		t.Errorf("queues %+v notes %q", topo.Queues, topo.Notes)
	}
	gs := topo.Groups()
	if !reflect.DeepEqual(gs[0].Queues, []int{0, 1, 2, 3}) || gs[1].Queues != nil {
		t.Errorf("groups %+v", gs)
	}

	// No NUMA directory: one node with all online CPUs; queues wrap.
	topo, err = ReadTopology("testdata/topo-nonuma", "veth1")
	if err != nil {
		t.Fatal(err)
	}
	if topo.NUMA || !reflect.DeepEqual(topo.Nodes, []Node{{0, []int{0, 1, 2}}}) || !hasNote(topo, "one node with all online CPUs") {
		t.Errorf("nodes %+v notes %q", topo.Nodes, topo.Notes)
	}
	if gs := topo.Groups(); len(gs) != 1 || gs[0].Sockets != 3 || !reflect.DeepEqual(gs[0].Queues, []int{0, 1, 2}) {
		t.Errorf("groups %+v", gs)
	}
}

func TestTopologyErrors(t *testing.T) {
	if _, err := ReadTopology("testdata/topo-2node", "eth7"); err == nil || !strings.Contains(err.Error(), `interface "eth7" not found`) {
		t.Errorf("missing interface: %v", err)
	}
	if _, err := ReadTopology("testdata/topo-2node", "../net"); err == nil {
		t.Errorf("a path as interface name was accepted")
	}
	// An interface without a queues directory has one queue.
	topo, err := ReadTopology("testdata/topo-2node", "lo")
	if err != nil || len(topo.Queues) != 1 || topo.Queues[0].CPU != 0 || !hasNote(topo, "lo lists no RX queues") {
		t.Errorf("lo: %+v %v", topo, err)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"no online file": {},
		"bad online":     {"sys/devices/system/cpu/online": {Data: []byte("0-x\n")}},
		"no CPUs":        {"sys/devices/system/cpu/online": {Data: []byte("\n")}},
		"bad node list": {
			"sys/devices/system/cpu/online":           {Data: []byte("0-1\n")},
			"sys/devices/system/node/node0/cpulist":   {Data: []byte("1-0\n")},
			"sys/devices/system/node/node1/something": {Data: []byte("\n")},
		},
	} {
		if _, err := ReadTopologyFS(fsys, ""); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// CPUs in no node are counted in the first node, with a note.
	topo, err = ReadTopologyFS(fstest.MapFS{
		"sys/devices/system/cpu/online":         {Data: []byte("0-3\n")},
		"sys/devices/system/node/node1/cpulist": {Data: []byte("0-1\n")},
	}, "")
	if err != nil || !reflect.DeepEqual(topo.Nodes, []Node{{1, []int{0, 1, 2, 3}}}) || !hasNote(topo, "CPUs 2-3 are in no NUMA node") {
		t.Errorf("orphans: %+v %v", topo, err)
	}
}

func TestQueueOfIRQ(t *testing.T) {
	for _, tc := range []struct {
		name, ifname, device string
		q                    int
		ok                   bool
	}{
		{"eth0-TxRx-3", "eth0", "", 3, true},
		{"i40e-eth0-TxRx-12", "eth0", "", 12, true},
		{"eth0-rx-1", "eth0", "", 1, true},
		{"eth0-rxtx-2", "eth0", "", 2, true},
		{"eth0-5", "eth0", "", 5, true},
		{"eth0-tx-1", "eth0", "", 0, false},
		{"eth0", "eth0", "", 0, false},
		{"eth10-TxRx-1", "eth1", "", 0, false},
		{"veth0-TxRx-1", "eth0", "", 0, false},
		{"virtio2-input.0", "eth0", "virtio2", 0, true},
		{"virtio2-output.0", "eth0", "virtio2", 0, false},
		{"virtio12-input.0", "eth0", "virtio1", 0, false},
		{"mlx5_comp7@pci:0000:03:00.0", "ens1", "0000:03:00.0", 7, true},
		{"mlx5_comp7@pci:0000:04:00.0", "ens1", "0000:03:00.0", 0, false},
	} {
		q, ok := queueOfIRQ(tc.name, tc.ifname, tc.device)
		if q != tc.q || ok != tc.ok {
			t.Errorf("queueOfIRQ(%q, %q, %q) = %d, %v; want %d, %v", tc.name, tc.ifname, tc.device, q, ok, tc.q, tc.ok)
		}
	}
}

func hasNote(t *Topology, sub string) bool {
	for _, n := range t.Notes {
		if strings.Contains(n, sub) {
			return true
		}
	}
	return false
}

// FuzzParseCPUList: no panic, and what parses formats back to itself.
func FuzzParseCPUList(f *testing.F) {
	for _, s := range []string{"0-3,8-11,16", "", "3-1", "0-7:2/4", "1,,2", " 5 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cpus, err := ParseCPUList(s)
		if err != nil {
			return
		}
		back, err := ParseCPUList(FormatCPUList(cpus))
		if err != nil || !reflect.DeepEqual(back, cpus) {
			t.Fatalf("%q → %v → %q → %v, %v", s, cpus, FormatCPUList(cpus), back, err)
		}
	})
}
