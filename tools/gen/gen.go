// Package gen generates risk-control events (the default schema of
// DESIGN.md) for the demo, the load generator and benchmarks: users drawn
// from a Zipf law, a realistic mix of event types and currencies, and a
// chosen share of malformed events of known kinds, so that a run's expected
// decode errors are known exactly.
package gen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
)

// Kind says what an event is meant to be.
type Kind uint8

const (
	Valid        Kind = iota
	BadJSON           // truncated object → invalid_json
	MissingKey        // no user_id → missing_field
	WrongType         // amount as a string → wrong_type
	TrailingJunk      // garbage after the object → trailing_garbage
	NumKinds
)

var kindNames = [NumKinds]string{"valid", "invalid_json", "missing_field", "wrong_type", "trailing_garbage"}

func (k Kind) String() string {
	if k < NumKinds {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Config shapes the stream.
type Config struct {
	Users    int     // distinct user ids; default 100000
	ZipfS    float64 // Zipf exponent > 1; default 1.1 (a few hot users)
	BadShare float64 // share of malformed events, 0..1
	Seed     uint64
	// BigShare is the share of payments over 10000 (the big-payment rule).
	BigShare float64
}

// Generator produces events; it is not safe for concurrent use.
type Generator struct {
	cfg  Config
	rng  *rand.Rand
	zipf *rand.Zipf
	seq  uint64
}

var (
	types      = []string{"payment", "payment", "payment", "login", "login", "click", "click", "click", "refund"}
	currencies = []string{"USD", "USD", "USD", "EUR", "EUR", "GBP", "JPY", "CHF"}
)

// New returns a generator for cfg.
func New(cfg Config) (*Generator, error) {
	if cfg.Users == 0 {
		cfg.Users = 100000
	}
	if cfg.ZipfS == 0 {
		cfg.ZipfS = 1.1
	}
	if cfg.Users < 1 || cfg.ZipfS <= 1 || cfg.BadShare < 0 || cfg.BadShare > 1 || cfg.BigShare < 0 || cfg.BigShare > 1 {
		return nil, fmt.Errorf("gen: bad config %+v: need users >= 1, zipf > 1, shares in [0,1]", cfg)
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5851f42d4c957f2d))
	return &Generator{cfg: cfg, rng: rng, zipf: rand.NewZipf(rng, cfg.ZipfS, 1, uint64(cfg.Users-1))}, nil
}

// Append appends one event to buf and returns it with the event's kind.
// User u-0 is the hottest.
func (g *Generator) Append(buf []byte) ([]byte, Kind) {
	g.seq++
	kind := Valid
	if g.cfg.BadShare > 0 && g.rng.Float64() < g.cfg.BadShare {
		kind = Kind(1 + g.rng.IntN(int(NumKinds)-1))
	}
	typ := types[g.rng.IntN(len(types))]
	amount := math.Round(math.Exp(g.rng.NormFloat64()*1.2+4.5)*100) / 100 // median ≈ 90
	if typ == "payment" && g.rng.Float64() < g.cfg.BigShare {
		amount = 10000 + float64(g.rng.IntN(90000))
	}
	start := len(buf)
	buf = append(buf, `{"event_id":"e-`...)
	buf = strconv.AppendUint(buf, g.seq, 10)
	if kind != MissingKey {
		buf = append(buf, `","user_id":"u-`...)
		buf = strconv.AppendUint(buf, g.zipf.Uint64(), 10)
	}
	buf = append(buf, `","amount":`...)
	if kind == WrongType {
		buf = append(buf, '"')
	}
	buf = strconv.AppendFloat(buf, amount, 'f', 2, 64)
	if kind == WrongType {
		buf = append(buf, '"')
	}
	buf = append(buf, `,"currency":"`...)
	buf = append(buf, currencies[g.rng.IntN(len(currencies))]...)
	buf = append(buf, `","event_type":"`...)
	buf = append(buf, typ...)
	buf = append(buf, `","ts":`...)
	buf = strconv.AppendInt(buf, 1732550400000+int64(g.seq), 10)
	buf = append(buf, `,"ip":"203.0.113.`...)
	buf = strconv.AppendInt(buf, int64(g.rng.IntN(256)), 10)
	buf = append(buf, `"}`...)
	switch kind {
	case BadJSON:
		buf = buf[:start+(len(buf)-start)*2/3]
	case TrailingJunk:
		buf = append(buf, ` junk`...)
	}
	return buf, kind
}
