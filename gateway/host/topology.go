package host

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	mathbits "math/bits"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Topology is what the gateway needs to know about the host to place its
// sockets and workers: the NUMA nodes and their CPUs, and the RX queues of
// the interface with the CPU that serves each.
//
// It is read from sysfs and procfs through an fs.FS rooted at the host's
// "/" (ReadTopology) or at a fake tree (tests: testdata/topo-2node). It is
// a snapshot: CPUs going offline or IRQs moving later are not seen.
type Topology struct {
	Nodes  []Node // NUMA nodes with online CPUs, by ID
	Online []int  // online CPUs, ascending
	// NUMA is false when the host has no /sys/devices/system/node: then
	// Nodes is one node 0 with all online CPUs.
	NUMA bool

	Interface string  // "" when no interface was asked for
	Queues    []Queue // RX queues of Interface, by index
	// Source says how queues were mapped to CPUs: SourceIRQ (all from IRQ
	// affinity), SourceFallback (none had an IRQ: veth and other virtual
	// devices) or SourceMixed.
	Source string
	Notes  []string // what was assumed and why, for the log
}

// Node is a NUMA node and its online CPUs.
type Node struct {
	ID   int
	CPUs []int
}

// Queue is one RX queue of the interface.
type Queue struct {
	Index int
	IRQ   int   // the queue's interrupt, -1 when none was found
	CPUs  []int // online CPUs of the IRQ's affinity; nil without an IRQ
	CPU   int   // the CPU that serves the queue (see Source)
	Node  int   // the NUMA node of CPU
	// Source is SourceIRQ when CPU comes from the IRQ's affinity, else
	// SourceFallback: queue i → online CPU i mod ncpu.
	Source string
}

// Sources of the queue → CPU mapping.
const (
	SourceIRQ      = "irq"
	SourceFallback = "fallback"
	SourceMixed    = "mixed"
)

// Group is the share of one NUMA node: the CPUs, the interface's queues
// served there, and for socket mode the number of sockets of its
// SO_REUSEPORT group (one per CPU).
type Group struct {
	Node    int
	CPUs    []int
	Queues  []int // queue indices whose CPU is on this node
	Sockets int
}

// maxCPUs bounds CPU numbers in cpulists (Linux allows 8192 today).
const maxCPUs = 1 << 16

// maxNodes bounds NUMA node IDs (Linux: MAX_NUMNODES, at most 1024).
const maxNodes = 1 << 10

// ParseCPUList reads the kernel's cpulist format ("0-3,8-11,16"; blank is
// the empty list) into ascending, distinct CPU numbers below maxCPUs. Its
// work is linear in len(s) plus the CPUs it returns, however the ranges
// repeat or overlap ("0-65535,0-65535,…" expands once).
func ParseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var set [maxCPUs / 64]uint64
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseCPU(lo)
		if err != nil {
			return nil, fmt.Errorf("cpulist %.64q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = parseCPU(hi); err != nil {
				return nil, fmt.Errorf("cpulist %.64q: %w", s, err)
			}
			if b < a {
				return nil, fmt.Errorf("cpulist %.64q: range %.32s ends before it starts", s, part)
			}
		}
		// Whole words at a time, so a range costs its length / 64.
		for c := a; c <= b; {
			if c%64 == 0 && b-c >= 63 {
				set[c/64] = ^uint64(0)
				c += 64
				continue
			}
			set[c/64] |= 1 << (c % 64)
			c++
		}
	}
	var out []int
	for w, bits := range set {
		for ; bits != 0; bits &= bits - 1 {
			out = append(out, w*64+mathbits.TrailingZeros64(bits))
		}
	}
	return out, nil
}

func parseCPU(s string) (int, error) {
	s = strings.TrimSpace(s)
	n, ok := parseDecimal(s, maxCPUs)
	if !ok {
		if s == "" || strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
			return 0, fmt.Errorf("%.32q is not a CPU number", s)
		}
		return 0, fmt.Errorf("CPU %.32q is out of range (< %d)", s, maxCPUs)
	}
	return n, nil
}

// parseDecimal reads s as decimal digits only (no sign, no spaces) into a
// number below limit.
func parseDecimal(s string, limit int) (int, bool) {
	if s == "" || len(s) > 12 || strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n < limit
}

// ReadTopology reads the topology of the host whose filesystem is at root
// ("" or "/" for this host; a directory holding sys/ and proc/ for a fake
// one). ifname "" skips the interface.
func ReadTopology(root, ifname string) (*Topology, error) {
	if root == "" {
		root = "/"
	}
	return ReadTopologyFS(os.DirFS(root), ifname)
}

// ReadTopologyFS is ReadTopology over fsys, whose root is the host's "/".
func ReadTopologyFS(fsys fs.FS, ifname string) (*Topology, error) {
	t := &Topology{}
	if err := t.readNodes(fsys); err != nil {
		return nil, err
	}
	if ifname == "" {
		return t, nil
	}
	if err := t.readQueues(fsys, ifname); err != nil {
		return nil, err
	}
	return t, nil
}

func readTrim(fsys fs.FS, name string) (string, error) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(b)), nil
}

func (t *Topology) readNodes(fsys fs.FS) error {
	s, err := readTrim(fsys, "sys/devices/system/cpu/online")
	if err != nil {
		return fmt.Errorf("read online CPUs: %w", err)
	}
	if t.Online, err = ParseCPUList(s); err != nil {
		return fmt.Errorf("/sys/devices/system/cpu/online: %w", err)
	}
	if len(t.Online) == 0 {
		return errors.New("/sys/devices/system/cpu/online lists no CPU")
	}
	online := map[int]bool{}
	for _, c := range t.Online {
		online[c] = true
	}
	entries, err := fs.ReadDir(fsys, "sys/devices/system/node")
	if errors.Is(err, fs.ErrNotExist) {
		t.Nodes = []Node{{ID: 0, CPUs: t.Online}}
		t.Notes = append(t.Notes, "no /sys/devices/system/node (kernel without NUMA): one node with all online CPUs")
		return nil
	}
	if err != nil {
		return fmt.Errorf("read NUMA nodes: %w", err)
	}
	t.NUMA = true
	placed := map[int]bool{}
	for _, e := range entries {
		id, ok := strings.CutPrefix(e.Name(), "node")
		if !ok {
			continue // cpu0, has_cpu, possible, …
		}
		n, ok := parseDecimal(id, maxNodes)
		if !ok || strconv.Itoa(n) != id { // node00 would be node0 twice
			t.Notes = append(t.Notes, fmt.Sprintf("/sys/devices/system/node/%.32q is not a node below %d: ignored", e.Name(), maxNodes))
			continue
		}
		p := "sys/devices/system/node/" + e.Name() + "/cpulist"
		s, err := readTrim(fsys, p)
		if err != nil {
			return fmt.Errorf("read node %d CPUs: %w", n, err)
		}
		cpus, err := ParseCPUList(s)
		if err != nil {
			return fmt.Errorf("/%s: %w", p, err)
		}
		var on []int
		for _, c := range cpus {
			if online[c] && !placed[c] {
				placed[c] = true
				on = append(on, c)
			}
		}
		if len(on) == 0 {
			t.Notes = append(t.Notes, fmt.Sprintf("node %d has no online CPU (memory only?): no sockets or workers there", n))
			continue
		}
		t.Nodes = append(t.Nodes, Node{ID: n, CPUs: on})
	}
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].ID < t.Nodes[j].ID })
	var orphans []int
	for _, c := range t.Online {
		if !placed[c] {
			orphans = append(orphans, c)
		}
	}
	if len(t.Nodes) == 0 {
		t.Nodes = []Node{{ID: 0, CPUs: t.Online}}
		t.Notes = append(t.Notes, "no NUMA node lists an online CPU: one node with all online CPUs")
	} else if len(orphans) > 0 {
		t.Nodes[0].CPUs = mergeInts(t.Nodes[0].CPUs, orphans)
		t.Notes = append(t.Notes, fmt.Sprintf("CPUs %s are in no NUMA node: counted in node %d", FormatCPUList(orphans), t.Nodes[0].ID))
	}
	return nil
}

func mergeInts(a, b []int) []int {
	out := append(append([]int(nil), a...), b...)
	sort.Ints(out)
	return out
}

// NodeOf returns the NUMA node of cpu, or -1 for a CPU that is not online.
func (t *Topology) NodeOf(cpu int) int {
	for _, n := range t.Nodes {
		for _, c := range n.CPUs {
			if c == cpu {
				return n.ID
			}
		}
	}
	return -1
}

// irqInfo is one line of /proc/interrupts.
type irqInfo struct {
	irq  int
	name string // the last column: the action's name, e.g. eth0-TxRx-3
}

// maxIRQ bounds interrupt numbers (Linux: NR_IRQS plus the sparse ones,
// far below).
const maxIRQ = 1 << 24

func readInterrupts(fsys fs.FS) ([]irqInfo, error) {
	b, err := fs.ReadFile(fsys, "proc/interrupts")
	if err != nil {
		return nil, err
	}
	return parseInterrupts(b), nil
}

// parseInterrupts reads the numbered lines of /proc/interrupts ("  99:
// 0 12 IR-PCI-MSI 524288-edge eth0-TxRx-0"): the IRQ (0..maxIRQ-1) and the
// last column. Other lines (the CPU header, NMI:, LOC:, …) are skipped;
// lines may be of any length, and the work is linear in len(b).
func parseInterrupts(b []byte) []irqInfo {
	var out []irqInfo
	for line := range bytes.Lines(b) {
		f := strings.Fields(string(line))
		if len(f) < 2 {
			continue
		}
		num, ok := strings.CutSuffix(f[0], ":")
		n, isIRQ := parseDecimal(num, maxIRQ)
		if !ok || !isIRQ {
			continue // the header, NMI:, LOC: …
		}
		out = append(out, irqInfo{irq: n, name: f[len(f)-1]})
	}
	return out
}

// queueOfIRQ reports which RX queue of ifname (with the given device
// name, the basename of /sys/class/net/<if>/device) an interrupt name
// serves. Recognised: <if>-TxRx-<q>, <if>-rx-<q>, <if>-rxtx-<q>,
// <if>-<q>, with an optional driver prefix (ice-eth0-TxRx-3);
// virtio-net's virtio<N>-input.<q>; mlx5's mlx5_comp<q>@pci:<addr>.
func queueOfIRQ(name, ifname, device string) (int, bool) {
	if device != "" {
		if strings.HasPrefix(device, "virtio") {
			if q, ok := strings.CutPrefix(name, device+"-input."); ok {
				return atoiQueue(q)
			}
		}
		if rest, ok := strings.CutPrefix(name, "mlx5_comp"); ok {
			if q, pci, ok := strings.Cut(rest, "@pci:"); ok && pci == device {
				return atoiQueue(q)
			}
		}
	}
	i := strings.Index(name, ifname+"-")
	if i < 0 || i > 0 && name[i-1] != '-' {
		return 0, false
	}
	rest := name[i+len(ifname)+1:]
	low := strings.ToLower(rest)
	for _, p := range []string{"txrx-", "rxtx-", "rx-", "combined-", ""} {
		if strings.HasPrefix(low, p) {
			if q, ok := atoiQueue(rest[len(p):]); ok {
				return q, true
			}
		}
	}
	return 0, false
}

func atoiQueue(s string) (int, bool) {
	if s == "" || strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, false
	}
	q, err := strconv.Atoi(s)
	return q, err == nil && q < 1<<16
}

func (t *Topology) readQueues(fsys fs.FS, ifname string) error {
	if ifname == "." || ifname == ".." || strings.ContainsAny(ifname, "/\x00") {
		return fmt.Errorf("interface %q: not a valid name", ifname)
	}
	t.Interface = ifname
	dir := "sys/class/net/" + ifname
	if _, err := fs.Stat(fsys, dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("interface %q not found (no /%s)", ifname, dir)
		}
		return fmt.Errorf("interface %q: %w", ifname, err)
	}
	entries, err := fs.ReadDir(fsys, dir+"/queues")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("interface %q: read queues: %w", ifname, err)
	}
	var idx []int
	for _, e := range entries {
		if q, ok := strings.CutPrefix(e.Name(), "rx-"); ok {
			if n, ok := atoiQueue(q); ok {
				idx = append(idx, n)
			}
		}
	}
	sort.Ints(idx)
	idx = slices.Compact(idx) // rx-1 and rx-01 are one queue
	if len(idx) == 0 {
		idx = []int{0}
		t.Notes = append(t.Notes, fmt.Sprintf("%s lists no RX queues: assuming one (queue 0)", ifname))
	}

	device := ""
	if target, err := fs.ReadLink(fsys, dir+"/device"); err == nil {
		device = path.Base(target)
	}
	irqs, err := readInterrupts(fsys)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read /proc/interrupts: %w", err)
	}
	byQueue := map[int]int{} // queue → IRQ; the first match wins
	for _, in := range irqs {
		if q, ok := queueOfIRQ(in.name, ifname, device); ok {
			if _, dup := byQueue[q]; !dup {
				byQueue[q] = in.irq
			}
		}
	}

	online := map[int]bool{}
	for _, c := range t.Online {
		online[c] = true
	}
	var fromIRQ, fallback []int
	for _, q := range idx {
		qu := Queue{Index: q, IRQ: -1, Source: SourceFallback}
		if irq, ok := byQueue[q]; ok {
			qu.IRQ = irq
			cpus, note := readAffinity(fsys, irq, online)
			if note != "" {
				t.Notes = append(t.Notes, fmt.Sprintf("%s queue %d: IRQ %d: %s", ifname, q, irq, note))
			}
			if len(cpus) > 0 {
				qu.CPUs = cpus
				// An IRQ allowed on several CPUs is not pinned; spread the
				// queues over its CPUs so they do not all land on the first.
				qu.CPU = cpus[q%len(cpus)]
				qu.Source = SourceIRQ
			}
		}
		if qu.Source == SourceFallback {
			qu.CPU = t.Online[q%len(t.Online)]
			fallback = append(fallback, q)
		} else {
			fromIRQ = append(fromIRQ, q)
			if len(qu.CPUs) > 1 {
				t.Notes = append(t.Notes, fmt.Sprintf("%s queue %d: IRQ %d may run on CPUs %s; using CPU %d",
					ifname, q, qu.IRQ, FormatCPUList(qu.CPUs), qu.CPU))
			}
		}
		qu.Node = t.NodeOf(qu.CPU)
		t.Queues = append(t.Queues, qu)
	}
	switch {
	case len(fallback) == 0:
		t.Source = SourceIRQ
	case len(fromIRQ) == 0:
		t.Source = SourceFallback
		t.Notes = append(t.Notes, fmt.Sprintf("%s has no per-queue IRQs (a virtual device such as veth?): queue i is served by online CPU i mod %d",
			ifname, len(t.Online)))
	default:
		t.Source = SourceMixed
		t.Notes = append(t.Notes, fmt.Sprintf("%s queues %s have no IRQ: served by online CPU i mod %d",
			ifname, FormatCPUList(fallback), len(t.Online)))
	}
	return nil
}

// readAffinity returns the online CPUs an IRQ may run on: the kernel's
// effective_affinity_list when it has one, else smp_affinity_list.
func readAffinity(fsys fs.FS, irq int, online map[int]bool) ([]int, string) {
	var list string
	var err error
	for _, f := range []string{"effective_affinity_list", "smp_affinity_list"} {
		list, err = readTrim(fsys, fmt.Sprintf("proc/irq/%d/%s", irq, f))
		if err == nil && list != "" {
			break
		}
	}
	if err != nil {
		return nil, fmt.Sprintf("no affinity (%v): falling back", err)
	}
	cpus, err := ParseCPUList(list)
	if err != nil {
		return nil, fmt.Sprintf("%v: falling back", err)
	}
	var on []int
	for _, c := range cpus {
		if online[c] {
			on = append(on, c)
		}
	}
	if len(on) == 0 {
		return nil, fmt.Sprintf("affinity %q has no online CPU: falling back", list)
	}
	return on, ""
}

// Groups returns one group per NUMA node, by node ID: its CPUs, the
// queues whose CPU is there, and one socket per CPU for socket mode.
func (t *Topology) Groups() []Group {
	gs := make([]Group, 0, len(t.Nodes))
	for _, n := range t.Nodes {
		g := Group{Node: n.ID, CPUs: n.CPUs, Sockets: len(n.CPUs)}
		for _, q := range t.Queues {
			if q.Node == n.ID {
				g.Queues = append(g.Queues, q.Index)
			}
		}
		gs = append(gs, g)
	}
	return gs
}

// FormatCPUList writes ascending CPU numbers in the kernel's cpulist
// format, the inverse of ParseCPUList.
func FormatCPUList(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}
