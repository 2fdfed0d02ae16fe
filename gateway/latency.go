package gateway

// Latency returns the receive → verdict histogram, summed over the queues
// or sockets: bucket i counts datagrams decided within 2^i µs of their
// receive time (the last bucket everything slower).
//
// On the afxdp path every frame counts, from the XDP program's timestamp.
// On the socket and plain paths one datagram in probes.sample per socket
// counts (probes.rx_timestamps; all zero without it), from the kernel's
// receive stamp (skb->tstamp, taken as the stack receives the packet, after
// XDP); see udpSocket.startLatency.
func (g *Gateway) Latency() [LatencyBuckets]uint64 {
	var h [LatencyBuckets]uint64
	g.sockMu.RLock()
	defer g.sockMu.RUnlock()
	for _, x := range g.xsks {
		for i := range h {
			h[i] += x.latency[i].Load()
		}
	}
	for _, s := range g.sockets {
		c := s.latencyCounts()
		for i := range h {
			h[i] += c[i]
		}
	}
	return h
}
