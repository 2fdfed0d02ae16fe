package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/xgate/xgate/bpf"
)

// BlockEntry is one source in the XDP blocklist, as `xgate block list` and
// GET /blocklist show it.
type BlockEntry struct {
	Addr  netip.Addr `json:"addr"`
	Rule  string     `json:"rule"`           // the rule that blocked it, or "manual"
	Since time.Time  `json:"since,omitzero"` // when it was blocked (zero: written by other means)
	Until time.Time  `json:"until,omitzero"` // when the block ends (zero: permanent)
	TTL   float64    `json:"ttl_seconds"`    // seconds left; -1 when permanent
	Live  bool       `json:"live"`           // false: expired, waiting to be swept
}

// ErrNoBlocklist is returned by the blocklist calls on a gateway without
// an XDP program (plain mode).
var ErrNoBlocklist = errors.New("no XDP blocklist on this gateway (plain mode): blocks are not enforced in the kernel")

// Blocklist lists the XDP blocklist, soonest expiry first, permanent ones last.
func (g *Gateway) Blocklist() ([]BlockEntry, error) {
	if g.xdp == nil || g.closed.Load() {
		return nil, ErrNoBlocklist
	}
	bl, err := g.xdp.ListBlocked()
	if err != nil {
		return nil, err
	}
	now, wall := bpf.Ktime(), time.Now()
	wallOf := func(k uint64) time.Time { return wall.Add(-time.Duration(int64(now - k))) }
	out := make([]BlockEntry, 0, len(bl))
	for _, b := range bl {
		e := BlockEntry{Addr: b.Addr, Rule: b.Rule, Live: !b.Expired, TTL: -1}
		if b.SinceNs != 0 {
			e.Since = wallOf(b.SinceNs).Round(time.Millisecond)
		}
		if !b.Permanent {
			e.Until = wallOf(b.ExpiresNs).Round(time.Millisecond)
			e.TTL = math.Max(0, b.TTL(now).Seconds())
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b BlockEntry) int {
		switch {
		case a.TTL < 0 && b.TTL >= 0:
			return 1
		case b.TTL < 0 && a.TTL >= 0:
			return -1
		case a.TTL < b.TTL:
			return -1
		case a.TTL > b.TTL:
			return 1
		}
		return a.Addr.Compare(b.Addr)
	})
	return out, nil
}

// BlockSource blocks addr by hand for ttl (0: until unblocked), as rule
// "manual". It goes through the feedback goroutine, so verdict-driven
// blocks and hand-made ones never race on the blocklist's prefilter.
func (g *Gateway) BlockSource(addr netip.Addr, ttl time.Duration) error {
	if g.xdp == nil || g.closed.Load() {
		return ErrNoBlocklist
	}
	return g.fb.do(feedbackOp{block: true, addr: addr, ttl: ttl})
}

// UnblockSource removes addr from the blocklist (and from what the
// feedback path remembers, so the next block verdict applies at once).
func (g *Gateway) UnblockSource(addr netip.Addr) error {
	if g.xdp == nil || g.closed.Load() {
		return ErrNoBlocklist
	}
	return g.fb.do(feedbackOp{addr: addr})
}

// serveBlocklist is /blocklist: GET lists; POST ?addr=A[&ttl=30s] blocks;
// DELETE ?addr=A unblocks. Changes need the bearer token, or a unix
// socket listener (its file permissions admit the client).
func (g *Gateway) serveBlocklist(w http.ResponseWriter, r *http.Request, unixSocket bool) {
	if r.Method == http.MethodGet {
		bl, err := g.Blocklist()
		if err != nil {
			httpError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(bl)
		return
	}
	if g.Config().HTTP.Token == "" && !unixSocket {
		http.Error(w, "forbidden: changing the blocklist over HTTP needs http.token (set it, and pass it with --token) or a unix socket (http.listen: unix:/path)", http.StatusForbidden)
		return
	}
	addr, err := netip.ParseAddr(r.URL.Query().Get("addr"))
	if err != nil {
		http.Error(w, fmt.Sprintf("addr %q: want an IPv4 or IPv6 address", r.URL.Query().Get("addr")), http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodPost:
		var ttl time.Duration
		if s := r.URL.Query().Get("ttl"); s != "" {
			if ttl, err = time.ParseDuration(s); err != nil || ttl < 0 {
				http.Error(w, fmt.Sprintf("ttl %q: want a duration such as 30s or 2h (0: until removed)", s), http.StatusBadRequest)
				return
			}
		}
		err = g.BlockSource(addr, ttl)
	case http.MethodDelete:
		err = g.UnblockSource(addr)
	default:
		http.Error(w, "want GET, POST or DELETE", http.StatusMethodNotAllowed)
		return
	}
	if err != nil {
		httpError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func httpError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNoBlocklist):
		code = http.StatusNotFound
	case errors.Is(err, bpf.ErrNeverBlock):
		code = http.StatusConflict
	}
	http.Error(w, err.Error(), code)
}
