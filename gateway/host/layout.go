package host

import "fmt"

// The receive path's layout on the topology: which CPUs the workers get.

// Restrict confines the workers to cpus (workers.cpus; nil: no limit). The
// nodes keep only those CPUs, so socket mode opens one socket per listed
// CPU. A queue served by an unlisted CPU gets the least loaded listed CPU
// of its node, or of any node when its node has none; its frames are then
// copied on the serving CPU and decided on the worker's, which is the
// layout to choose when the interrupt CPUs are busy.
func (t *Topology) Restrict(cpus []int) error {
	if len(cpus) == 0 {
		return nil
	}
	online := make(map[int]bool, len(t.Online))
	for _, c := range t.Online {
		online[c] = true
	}
	listed := make(map[int]bool, len(cpus))
	for _, c := range cpus {
		if !online[c] {
			return fmt.Errorf("workers.cpus: CPU %d is not online here (online: %s)", c, FormatCPUList(t.Online))
		}
		listed[c] = true
	}
	var nodes []Node
	for _, n := range t.Nodes {
		var keep []int
		for _, c := range n.CPUs {
			if listed[c] {
				keep = append(keep, c)
			}
		}
		if len(keep) > 0 {
			nodes = append(nodes, Node{ID: n.ID, CPUs: keep})
		}
	}
	if len(t.Nodes) == 0 {
		nodes = []Node{{ID: 0, CPUs: cpus}}
	}
	t.Nodes = nodes
	// Queues already on a listed CPU stay; each of the others goes to the
	// listed CPU of its node (else of any node) with the fewest queues.
	load := map[int]int{}
	for _, q := range t.Queues {
		if listed[q.CPU] {
			load[q.CPU]++
		}
	}
	for i := range t.Queues {
		q := &t.Queues[i]
		if listed[q.CPU] {
			continue
		}
		pool := cpus
		for _, n := range nodes {
			if n.ID == q.Node {
				pool = n.CPUs
			}
		}
		was := q.CPU
		q.CPU = pool[0]
		for _, c := range pool {
			if load[c] < load[q.CPU] {
				q.CPU = c
			}
		}
		load[q.CPU]++
		q.Node = t.NodeOf(q.CPU)
		t.Notes = append(t.Notes, fmt.Sprintf("queue %d is served by CPU %d, not in workers.cpus (%s): its worker runs on CPU %d",
			q.Index, was, FormatCPUList(cpus), q.CPU))
	}
	return nil
}

// NodeCPUs returns the online CPUs of each NUMA node, indexed by node ID
// (the index bpf_get_numa_node_id returns); IDs without CPUs are empty.
func (t *Topology) NodeCPUs() [][]int {
	maxID := 0
	for _, n := range t.Nodes {
		maxID = max(maxID, n.ID)
	}
	out := make([][]int, maxID+1)
	for _, n := range t.Nodes {
		out[n.ID] = n.CPUs
	}
	if len(t.Nodes) == 0 {
		out = [][]int{t.Online}
	}
	return out
}

// QueueCPU returns the CPU that serves RX queue q: the topology's, or for
// a queue it does not show, one of cpus (the workers' CPUs; nil: every
// online CPU) by q.
func (t *Topology) QueueCPU(q int, cpus []int) int {
	for _, qq := range t.Queues {
		if qq.Index == q {
			return qq.CPU
		}
	}
	pool := t.Online
	if cpus != nil {
		pool = cpus
	}
	if n := len(pool); n > 0 {
		return pool[q%n]
	}
	return -1
}
