package host

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestRestrict confines workers to workers.cpus on the two-node tree
// (queues 0-3 on node 0 at CPUs 0,1,2,11; 4-7 on node 1 at 4,5,12,13).
func TestRestrict(t *testing.T) {
	topo, err := ReadTopology("testdata/topo-2node", "eth9")
	if err != nil {
		t.Fatal(err)
	}
	cpus, err := ParseCPUList("2-3,6")
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Restrict(cpus); err != nil {
		t.Fatal(err)
	}
	wantNodes := []Node{{ID: 0, CPUs: []int{2, 3}}, {ID: 1, CPUs: []int{6}}}
	if !reflect.DeepEqual(topo.Nodes, wantNodes) {
		t.Errorf("nodes %+v, want %+v", topo.Nodes, wantNodes)
	}
	if got := topo.NodeCPUs(); !reflect.DeepEqual(got, [][]int{{2, 3}, {6}}) {
		t.Errorf("NodeCPUs %v", got)
	}
	// Queue 2 stays on its listed CPU; the other node-0 queues go to the
	// least loaded of node 0's listed CPUs in turn (3, then 2, then 3),
	// node 1's queues to its only one.
	var got []int
	for q := 0; q < 8; q++ {
		got = append(got, topo.QueueCPU(q, cpus))
	}
	if want := []int{3, 2, 2, 3, 6, 6, 6, 6}; !reflect.DeepEqual(got, want) {
		t.Errorf("queue CPUs %v, want %v", got, want)
	}
	for _, q := range topo.Queues {
		if topo.NodeOf(q.CPU) != q.Node {
			t.Errorf("queue %d on CPU %d: node %d, want %d", q.Index, q.CPU, q.Node, topo.NodeOf(q.CPU))
		}
	}
	if !hasNote(topo, "queue 0 is served by CPU 0, not in workers.cpus (2-3,6): its worker runs on CPU 3") {
		t.Errorf("no note about the moved queue: %q", topo.Notes)
	}
	// Beyond the configured queues the fallback uses the listed CPUs only.
	if c := topo.QueueCPU(10, cpus); c != 6 && c != 2 && c != 3 {
		t.Errorf("queue 10 on CPU %d, not a listed one", c)
	}
}

func TestRestrictErrors(t *testing.T) {
	topo, err := ReadTopology("testdata/topo-2node", "eth9")
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Restrict([]int{3, 40}); err == nil || !strings.Contains(err.Error(), "CPU 40 is not online here (online: 0-15)") {
		t.Errorf("offline CPU: %v", err)
	}
	if err := topo.Restrict(nil); err != nil || len(topo.Nodes) != 2 {
		t.Errorf("nil list must leave the topology alone: %v %+v", err, topo.Nodes)
	}
	// Beyond what a CPU set holds, or outside this process's affinity.
	if err := AllowedCPUs([]int{CPUSetSize}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("CPU %d is not one this process may use", CPUSetSize)) {
		t.Errorf("CPU %d: %v", CPUSetSize, err)
	}
}
