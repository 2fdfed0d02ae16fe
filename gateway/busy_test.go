package gateway

import (
	"strconv"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"
)

// TestWorkerBusyTime: after traffic every path's workers report busy time
// that is > 0 in sum, never more than the wall time they ran, and the same
// figures on /metrics.
func TestWorkerBusyTime(t *testing.T) {
	for _, mode := range []string{string(config.ModeAFXDP), string(config.ModeSocket), string(config.ModePlain)} {
		t.Run(mode, func(t *testing.T) {
			t0 := time.Now()
			pair, g, stop := runIT(t, 2, mode, nil)
			sent := sendEventsAndOther(t, pair, 300, 0)
			var s Stats
			deadline := time.Now().Add(5 * time.Second)
			for {
				var err error
				if s, err = g.Stats(); err != nil {
					t.Fatal(err)
				}
				if s.Datagrams >= sent || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			wall := time.Since(t0)
			if s.Datagrams < sent || s.Engine.Events == 0 {
				t.Fatalf("received %d of %d, decided %d", s.Datagrams, sent, s.Engine.Events)
			}
			if len(s.WorkerBusy) != len(g.workers) {
				t.Fatalf("%d busy times for %d workers", len(s.WorkerBusy), len(g.workers))
			}
			var sum time.Duration
			for i, b := range s.WorkerBusy {
				if b < 0 || b > wall {
					t.Fatalf("worker %d busy %v over a wall time of %v", i, b, wall)
				}
				sum += b
			}
			t.Logf("%s: %d events, busy %v (%v), %.0f ns per event", mode, s.Engine.Events, s.WorkerBusy, wall, float64(sum)/float64(s.Engine.Events))
			if sum <= 0 {
				t.Fatal("no busy time after traffic")
			}
			var scraped float64
			fams := scrape(t, g)
			for i := range s.WorkerBusy {
				scraped += metricValue(t, fams, "xgate_worker_busy_seconds_total", "mode="+mode, "queue="+strconv.Itoa(i))
			}
			// Counters only grow: the scrape (later) reads at least what
			// Stats did, up to float rounding.
			if scraped < sum.Seconds()-1e-9 || scraped > time.Since(t0).Seconds()*float64(len(s.WorkerBusy)) {
				t.Fatalf("/metrics busy %.6f s, Stats %.6f s", scraped, sum.Seconds())
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
