package gateway

// Latency returns the receive → verdict histogram of the afxdp path,
// summed over its queues: bucket i counts frames decided within 2^i µs of
// the XDP program's timestamp (the last bucket everything slower). It is
// all zero on the socket and plain paths, which have no such timestamp.
func (g *Gateway) Latency() [LatencyBuckets]uint64 {
	var h [LatencyBuckets]uint64
	g.sockMu.RLock()
	defer g.sockMu.RUnlock()
	for _, x := range g.xsks {
		for i := range h {
			h[i] += x.latency[i].Load()
		}
	}
	return h
}
