package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xgate/xgate/engine"
)

// Version is reported by /status and xgate_info; the command sets it from
// its build flags. Empty: the main module's version from the build info.
var Version string

func (g *Gateway) version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "dev"
}

// httpServer serves /metrics, /status, /tap, /healthz, /readyz and
// /debug/pprof/* on cfg.HTTP.Listen. It is started by Run and shut down at
// the end of Stop; ready is set once the workers receive and cleared when
// Stop begins.
type httpServer struct {
	srv   *http.Server
	ln    net.Listener
	done  chan struct{}
	quit  chan struct{} // closed when shutdown begins: ends /tap streams
	ready atomic.Bool
}

// startHTTP listens on cfg.HTTP.Listen ("" = no HTTP) and serves in the
// background. The listener is bound in the caller's network namespace.
func (g *Gateway) startHTTP() error {
	addr := g.Config().HTTP.Listen
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("http: listen on %s (http.listen): %w", addr, err)
	}
	h := &httpServer{ln: ln, done: make(chan struct{}), quit: make(chan struct{})}
	h.srv = &http.Server{Handler: g.httpHandler(h), ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout: time.Minute}
	h.srv.RegisterOnShutdown(func() { close(h.quit) })
	g.web.Store(h)
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("http server failed", "error", err)
		}
	}()
	endpoints := "/metrics /status /tap /blocklist /healthz /readyz"
	if g.Config().HTTP.Pprof {
		endpoints += " /debug/pprof/ /debug/trace"
	}
	g.log.Info("http listening", "address", ln.Addr().String(), "endpoints", endpoints,
		"bearer_token", g.Config().HTTP.Token != "")
	return nil
}

// stopHTTP shuts the server down: running requests get a second to end
// (a CPU profile in progress is cut off).
func (g *Gateway) stopHTTP() {
	h := g.web.Load()
	if h == nil {
		return
	}
	h.ready.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		_ = h.srv.Close()
	}
	<-h.done
}

// ready reports whether the workers receive (what /readyz says).
func (g *Gateway) ready() bool {
	h := g.web.Load()
	return h != nil && h.ready.Load()
}

// HTTPAddr returns the address the HTTP server listens on (useful with
// port 0), or "" when it does not run.
func (g *Gateway) HTTPAddr() string {
	h := g.web.Load()
	if h == nil {
		return ""
	}
	return h.ln.Addr().String()
}

func (g *Gateway) httpHandler(h *httpServer) http.Handler {
	mux := http.NewServeMux()
	reg := g.newRegistry()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError, // serve what can be read, log the rest
		ErrorLog:      slogPrinter{g},
		Registry:      reg, // promhttp_metric_handler_errors_total
	}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := g.Status()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
	mux.HandleFunc("GET /tap", func(w http.ResponseWriter, r *http.Request) {
		g.serveTap(w, r, h.quit)
	})
	mux.HandleFunc("/blocklist", g.serveBlocklist)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !h.ready.Load() {
			http.Error(w, "not ready: not receiving (starting or stopping)", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	cfg := g.Config()
	if cfg == nil {
		cfg = DefaultConfig()
	}
	if cfg.HTTP.Pprof {
		// pprof on this mux only, never on http.DefaultServeMux.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/trace", pprof.Trace) // ?seconds=N
	}
	if cfg.HTTP.Token == "" {
		return mux
	}
	return bearerAuth(cfg.HTTP.Token, mux)
}

// bearerAuth requires "Authorization: Bearer <token>" on every request
// but the health checks /healthz and /readyz.
func bearerAuth(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" &&
			subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="xgate"`)
			http.Error(w, "unauthorized: a bearer token (http.token) is required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// slogPrinter adapts the gateway's logger to promhttp's Logger.
type slogPrinter struct{ g *Gateway }

func (p slogPrinter) Println(v ...any) { p.g.log.Error("metrics: " + fmt.Sprint(v...)) }

// Status is what /status reports.
type Status struct {
	Version       string            `json:"version"`
	Path          string            `json:"path"`
	Why           string            `json:"why"`
	Interface     string            `json:"interface,omitempty"`
	XDPMode       string            `json:"xdp_mode,omitempty"`
	RxQueues      int               `json:"rx_queues,omitempty"`      // active RX queues of the interface
	RxQueuesFrom  string            `json:"rx_queues_from,omitempty"` // ethtool | sysfs | fallback
	Ports         []uint16          `json:"ports"`
	Workers       []WorkerState     `json:"workers"`
	Rules         RulesState        `json:"rules"`
	Sinks         []string          `json:"sinks"`
	Ready         bool              `json:"ready"`
	StartedAt     time.Time         `json:"started_at,omitzero"`
	UptimeSeconds float64           `json:"uptime_seconds"`
	Accounting    Accounting        `json:"accounting"`
	Verdicts      map[string]uint64 `json:"verdicts"`
	Probes        []ProbeState      `json:"probes"`
	// PathSteps are the receive-path steps New tried, the one taken last
	// (mode auto steps down when one is refused).
	PathSteps []Step `json:"path_steps"`
	// Features: every kernel and interface feature, available or not, why,
	// and what it made xgate do.
	Features Features `json:"features"`
}

// ProbeState is one kernel probe: running, or missing and why.
type ProbeState struct {
	Name    string `json:"name"`
	Running bool   `json:"running"`
	Reason  string `json:"reason,omitempty"` // why it is missing
}

// WorkerState is one worker: its queue (afxdp) or socket index, CPU and
// bind mode.
type WorkerState struct {
	Queue int    `json:"queue"`
	CPU   int    `json:"cpu"`            // -1: not pinned
	Bind  string `json:"bind,omitempty"` // afxdp: copy | zerocopy
}

// RulesState describes the rules in force.
type RulesState struct {
	Count int      `json:"count"`
	Names []string `json:"names"`
	Hash  string   `json:"hash"` // sha256 of the rules' configuration, first 16 hex digits
}

// Accounting holds the terms of the identity
// seen = xdp_dropped + not_for_us + socket_dropped + ring_dropped + decode_errors + events.
type Accounting struct {
	Seen          uint64 `json:"seen"` // XDP saw; 0 without XDP
	XDPDropped    uint64 `json:"xdp_dropped"`
	NotForUs      uint64 `json:"not_for_us"`
	SocketDropped uint64 `json:"socket_dropped"`
	RingDropped   uint64 `json:"ring_dropped"`
	DecodeErrors  uint64 `json:"decode_errors"`
	Events        uint64 `json:"events"`
	Accounted     uint64 `json:"accounted"` // the sum of the terms
}

// Status reads the gateway's state and counters.
func (g *Gateway) Status() (Status, error) {
	s, err := g.Stats()
	if err != nil {
		return Status{}, err
	}
	cfg := g.Config()
	st := Status{
		Version: g.version(), Path: g.path, Why: g.why, Interface: cfg.Interface, XDPMode: g.xdpMode,
		Ports: cfg.Listen.Ports, UptimeSeconds: s.Uptime.Seconds(),
		Ready: g.ready(),
		Accounting: Accounting{Seen: s.XDPSeen, XDPDropped: s.XDPDrops, NotForUs: s.NotForUs, SocketDropped: s.SocketDrops,
			RingDropped: s.RingDrops, DecodeErrors: s.Engine.DecodeErrorTotal(), Events: s.Engine.Events, Accounted: s.Accounted()},
		Verdicts: make(map[string]uint64, engine.NumActions),
		Sinks:    []string{},
	}
	if g.path != PathPlain {
		st.RxQueues, st.RxQueuesFrom = g.queues, g.rxq.Source
	}
	if ns := g.started.Load(); ns != 0 {
		st.StartedAt = time.Unix(0, ns).UTC()
	}
	for _, q := range g.queueStats() {
		st.Workers = append(st.Workers, WorkerState{Queue: q.id, CPU: q.cpu, Bind: q.bind})
	}
	st.Rules.Count = len(s.Engine.Rules)
	st.Rules.Names = ruleLabels(s.Engine.Rules)
	if b, err := json.Marshal(cfg.Rules); err == nil {
		sum := sha256.Sum256(b)
		st.Rules.Hash = hex.EncodeToString(sum[:8])
	}
	for _, sk := range s.Sinks {
		st.Sinks = append(st.Sinks, sk.Name)
	}
	for a := engine.Action(0); a < engine.NumActions; a++ {
		st.Verdicts[a.String()] = s.Engine.Verdicts[a]
	}
	st.Probes = g.probeStates()
	st.PathSteps = g.steps
	st.Features = g.Features()
	return st, nil
}
