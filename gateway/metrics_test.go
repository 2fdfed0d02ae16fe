package gateway

import (
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/engine"
)

func TestLog2Histogram(t *testing.T) {
	// bucket i: <= 2^i µs; the last one also everything slower.
	n, sum, b := Log2Histogram([]uint64{1, 0, 2, 3}, 1e-6)
	if n != 6 {
		t.Errorf("count %d, want 6", n)
	}
	if want := (1*1 + 2*4 + 3*8) * 1e-6; math.Abs(sum-want) > 1e-12 {
		t.Errorf("sum %g, want %g", sum, want)
	}
	want := map[float64]uint64{1e-6: 1, 2e-6: 1, 4e-6: 3} // 8µs is the overflow: only in +Inf
	if len(b) != len(want) {
		t.Fatalf("buckets %v, want %v", b, want)
	}
	for le, c := range want {
		if got, ok := b[le]; !ok || got != c {
			t.Errorf("bucket le=%g: %d, want %d (all %v)", le, got, c, b)
		}
	}
}

func TestRuleLabels(t *testing.T) {
	got := ruleLabels([]engine.RuleStats{{Name: "a"}, {Name: ""}, {Name: "a"}, {Name: "b"}, {Name: "a"}})
	want := []string{"a", "rule_1", "a#2", "b", "a#3"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ruleLabels = %q, want %q", got, want)
		}
	}
}

func TestMetricNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range MetricNames() {
		if seen[n] {
			t.Errorf("metric %s described twice", n)
		}
		seen[n] = true
	}
	if len(seen) < 40 {
		t.Errorf("only %d metric names", len(seen))
	}
}

// The probes work on any gateway value; readiness follows the flag Run sets.
func TestHealthAndReadyHandlers(t *testing.T) {
	g := &Gateway{}
	h := &httpServer{}
	mux := g.httpHandler(h)
	get := func(path string) int {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code
	}
	if c := get("/healthz"); c != http.StatusOK {
		t.Errorf("/healthz %d", c)
	}
	if c := get("/readyz"); c != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready: %d, want 503", c)
	}
	h.ready.Store(true)
	if c := get("/readyz"); c != http.StatusOK {
		t.Errorf("/readyz when ready: %d, want 200", c)
	}
	// No config (so no http.token, no http.pprof): pprof is off.
	if c := get("/debug/pprof/"); c != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without a config: %d, want 404", c)
	}
	// net/http/pprof's init registers on http.DefaultServeMux too, which
	// xgate never serves: the server's handler is its own mux.
	if http.Handler(mux) == http.DefaultServeMux {
		t.Error("the HTTP handler is http.DefaultServeMux")
	}
}

func TestHTTPPprofSwitchAndToken(t *testing.T) {
	get := func(h http.Handler, path, auth string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	g := &Gateway{}
	cfg := config.Default()
	cfg.HTTP.Pprof = false
	g.cfg.Store(cfg)
	if c := get(g.httpHandler(&httpServer{}), "/debug/pprof/", ""); c != http.StatusNotFound {
		t.Errorf("http.pprof false: /debug/pprof/ %d, want 404", c)
	}
	if c := get(g.httpHandler(&httpServer{}), "/debug/trace", ""); c != http.StatusNotFound {
		t.Errorf("http.pprof false: /debug/trace %d, want 404", c)
	}

	cfg = config.Default()
	cfg.HTTP.Token = "0123456789abcdef-secret"
	g.cfg.Store(cfg)
	h := g.httpHandler(&httpServer{})
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/debug/pprof/", "", http.StatusUnauthorized},
		{"/debug/pprof/", "Bearer wrong", http.StatusUnauthorized},
		{"/debug/pprof/", "0123456789abcdef-secret", http.StatusUnauthorized},
		{"/debug/pprof/", "Bearer 0123456789abcdef-secret", http.StatusOK},
		{"/metrics", "", http.StatusUnauthorized},
		{"/status", "", http.StatusUnauthorized},
		{"/healthz", "", http.StatusOK},
		{"/readyz", "", http.StatusServiceUnavailable}, // not ready, but not refused for the token
	} {
		if c := get(h, tc.path, tc.auth); c != tc.want {
			t.Errorf("%s with %q: %d, want %d", tc.path, tc.auth, c, tc.want)
		}
	}
}
