package gateway

import "github.com/xgate/xgate/gateway/lists"

// ListStats is one enrichment list as /metrics and /status show it.
type ListStats = lists.Stats

// Lists returns the enrichment lists in force, with their counters.
func (g *Gateway) Lists() []ListStats {
	if g.lists == nil {
		return nil
	}
	return g.lists.Stats()
}
