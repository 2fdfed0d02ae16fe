package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/gateway/config"
	"github.com/xgate/xgate/gateway/metrics"

	"github.com/xgate/xgate/gateway/host"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xgate/xgate/engine"
)

// Version and Revision are reported by /status, xgate_info and
// xgate_build_info; the command sets them from its build flags. Empty
// Version: the main module's version from the build info.
var Version, Revision string

// revision is Revision, else the VCS revision the toolchain stamped, else
// "unknown".
func revision() string {
	if Revision != "" {
		return Revision
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				return s.Value
			}
		}
	}
	return "unknown"
}

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
	unix  bool // a unix socket: its file permissions admit clients
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
	var ln net.Listener
	var err error
	unixPath := g.Config().HTTP.UnixPath()
	if unixPath != "" {
		ln, err = listenUnix(unixPath)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return fmt.Errorf("http: listen on %s (http.listen): %w", addr, err)
	}
	ln = newLimitListener(ln, httpMaxConns)
	h := &httpServer{ln: ln, unix: unixPath != "", done: make(chan struct{}), quit: make(chan struct{})}
	// No server-wide WriteTimeout: /tap streams for as long as its client
	// wants. Every other answer gets a write deadline (httpWriteTimeout,
	// or the profile's length plus that) in the handler.
	h.srv = &http.Server{Handler: g.httpHandler(h), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
	h.srv.RegisterOnShutdown(func() { close(h.quit) })
	g.web.Store(h)
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("http server failed", "error", err)
		}
	}()
	endpoints := "/metrics /status /blocklist /healthz /readyz"
	if g.Config().HTTP.Token != "" || h.unix {
		endpoints += " /tap"
		if g.Config().HTTP.Pprof {
			endpoints += " /debug/pprof/ /debug/trace"
		}
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

// HTTP limits: connections at once, the write deadline of an answer,
// and the longest CPU profile or trace /debug/pprof takes.
const (
	httpMaxConns     = 64
	httpWriteTimeout = 30 * time.Second
	httpMaxProfile   = 60 * time.Second
)

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
		if g.httpToken() == "" && !h.unix {
			http.Error(w, "forbidden: /tap streams raw events (personal data); it needs http.token or a unix socket (http.listen: unix:/path)", http.StatusForbidden)
			return
		}
		g.tap.Serve(w, r, h.quit)
	})
	mux.HandleFunc("/blocklist", func(w http.ResponseWriter, r *http.Request) { g.serveBlocklist(w, r, h.unix) })
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
	// pprof on this mux only, never on http.DefaultServeMux; switched by
	// http.pprof and http.token as they are now (a reload applies).
	pp := func(f http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			cfg := g.Config()
			switch {
			case cfg == nil || !cfg.HTTP.Pprof:
				http.Error(w, "not found: pprof is off (http.pprof: false)", http.StatusNotFound)
				return
			case cfg.HTTP.Token == "" && !h.unix:
				http.Error(w, "forbidden: pprof shows the command line and memory; it needs http.token or a unix socket (http.listen: unix:/path)", http.StatusForbidden)
				return
			}
			if sec := r.URL.Query().Get("seconds"); sec != "" {
				n, err := strconv.Atoi(sec)
				if err != nil || n < 1 || time.Duration(n)*time.Second > httpMaxProfile {
					http.Error(w, fmt.Sprintf("seconds=%q: want 1..%d", sec, int(httpMaxProfile.Seconds())), http.StatusBadRequest)
					return
				}
				_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Duration(n)*time.Second + httpWriteTimeout))
			}
			f(w, r)
		}
	}
	mux.HandleFunc("/debug/pprof/", pp(pprof.Index))
	mux.HandleFunc("/debug/pprof/cmdline", pp(pprof.Cmdline))
	mux.HandleFunc("/debug/pprof/profile", pp(pprof.Profile))
	mux.HandleFunc("/debug/pprof/symbol", pp(pprof.Symbol))
	mux.HandleFunc("/debug/pprof/trace", pp(pprof.Trace))
	mux.HandleFunc("/debug/trace", pp(pprof.Trace)) // ?seconds=N
	return g.bearerAuth(mux)
}

// httpToken is the bearer token in force (a reload may change it).
func (g *Gateway) httpToken() string {
	if cfg := g.Config(); cfg != nil {
		return cfg.HTTP.Token
	}
	return ""
}

// bearerAuth requires "Authorization: Bearer <token>" on every request
// but the health checks /healthz and /readyz, when a token is configured;
// it reads the token in force for every request, so a reload that sets,
// changes or clears it applies at once. It also sets the write deadline
// of every answer but /tap's stream.
func (g *Gateway) bearerAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tap" {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(httpWriteTimeout))
		}
		token := g.httpToken()
		if token != "" && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" &&
			subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="xgate"`)
			http.Error(w, "unauthorized: a bearer token (http.token) is required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitListener accepts at most n connections at once; the next waits in
// the kernel's backlog until one closes.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func newLimitListener(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// slogPrinter adapts the gateway's logger to promhttp's Logger.
type slogPrinter struct{ g *Gateway }

func (p slogPrinter) Println(v ...any) { p.g.log.Error("metrics: " + fmt.Sprint(v...)) }

// Status is what /status reports.
type Status struct {
	Version       string             `json:"version"`
	Revision      string             `json:"revision"`
	Path          config.Mode        `json:"path"`
	Why           string             `json:"why"`
	Interface     string             `json:"interface,omitempty"`
	XDPMode       bpf.AttachMode     `json:"xdp_mode,omitempty"`
	RxQueues      int                `json:"rx_queues,omitempty"`      // active RX queues of the interface
	RxQueuesFrom  string             `json:"rx_queues_from,omitempty"` // ethtool | sysfs | fallback
	Ports         []uint16           `json:"ports"`
	Workers       []WorkerState      `json:"workers"`
	Rules         RulesState         `json:"rules"`
	Sinks         []string           `json:"sinks"`
	Ready         bool               `json:"ready"`
	StartedAt     time.Time          `json:"started_at,omitzero"`
	UptimeSeconds float64            `json:"uptime_seconds"`
	Accounting    metrics.Accounting `json:"accounting"`
	Verdicts      map[string]uint64  `json:"verdicts"`
	Probes        []ProbeState       `json:"probes"`
	// Reload is the outcome of the last reload (absent before the first).
	Reload *ReloadResult `json:"reload,omitempty"`
	// PathSteps are the receive-path steps New tried, the one taken last
	// (mode auto steps down when one is refused).
	PathSteps []Step `json:"path_steps"`
	// Features: every kernel and interface feature, available or not, why,
	// and what it made xgate do.
	Features host.Features `json:"features"`
	// Lists are the enrichment lists in force (gateway/lists).
	Lists []ListStats `json:"lists,omitempty"`
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

// Status reads the gateway's state and counters.
func (g *Gateway) Status() (Status, error) {
	s, err := g.Stats()
	if err != nil {
		return Status{}, err
	}
	cfg := g.Config()
	st := Status{
		Version: g.version(), Revision: revision(), Path: g.path, Why: g.why, Interface: cfg.Interface, XDPMode: g.xdpMode,
		Ports: cfg.Listen.Ports, UptimeSeconds: s.Uptime.Seconds(),
		Ready:      g.ready(),
		Accounting: metrics.AccountingOf(&s),
		Verdicts:   make(map[string]uint64, engine.NumActions),
		Sinks:      []string{},
		Reload:     g.LastReload(),
	}
	if g.path != config.ModePlain {
		st.RxQueues, st.RxQueuesFrom = g.queues, g.rxq.Source
	}
	if ns := g.started.Load(); ns != 0 {
		st.StartedAt = time.Unix(0, ns).UTC()
	}
	for _, q := range g.queueStats() {
		st.Workers = append(st.Workers, WorkerState{Queue: q.ID, CPU: q.CPU, Bind: q.Bind})
	}
	st.Lists = g.Lists()
	st.Rules.Count = len(s.Engine.Rules)
	st.Rules.Names = metrics.RuleLabels(s.Engine.Rules)
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

// listenUnix listens on a unix socket at path, 0660 (owner and group may
// connect). A socket left there by a daemon that died is replaced; one
// that answers, or anything that is not a socket, is not.
//
// The socket is made in a private directory (0700) beside path, given
// its mode there and then renamed into place: no moment exists in which
// another user could connect to it, and the process's umask is never
// touched (it is process-wide).
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket: remove it or choose another path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process serves this socket", path)
		}
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".xgate-http-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, err
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // its name moves: unixSocket removes the final one
	if err := os.Chmod(tmp, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	// rename(2) replaces a stale socket at path atomically.
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, err
	}
	return &unixSocket{UnixListener: ul, path: path}, nil
}

// unixSocket removes its socket file on Close, unless another process
// serves a socket there by then (a daemon started since replaced it).
type unixSocket struct {
	*net.UnixListener
	path string
}

func (u *unixSocket) Close() error {
	err := u.UnixListener.Close()
	if c, derr := net.DialTimeout("unix", u.path, 100*time.Millisecond); derr == nil {
		c.Close()
		return err
	}
	if fi, lerr := os.Lstat(u.path); lerr == nil && fi.Mode().Type() == fs.ModeSocket {
		_ = os.Remove(u.path)
	}
	return err
}
