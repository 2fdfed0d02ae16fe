package config

import (
	"net/netip"
	"strings"
	"time"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink"
)

// Config is the daemon's configuration, as read from YAML (see
// examples/xgate.yaml for every key, its default and its meaning).
//
// Parse and Load start from Default and overwrite what
// the file sets, then Validate. A Config built in code should start from
// Default too: Validate is strict and treats zero values as set.
//
// A Config remembers the file and the line of every key it was read from,
// so that Validate's errors name them; copying a Config keeps that.
type Config struct {
	Interface string // the NIC to attach to; required for afxdp and socket modes
	Mode      Mode   // auto | afxdp | socket | plain
	Listen    Listen
	Queues    int // RX queues to serve; 0 = every active RX queue of the interface (host.ActiveRxQueues)
	Schema    Schema
	Limits    Limits
	Rules     []Rule
	XDP       XDP
	Socket    Socket
	AFXDP     AFXDP
	Sinks     []sink.Spec // as the file says: defaults are filled in by sink.New
	// GatewayID names this gateway in the records of Kafka and NATS
	// sinks (their "gateway" header, NATS message ids); "" = the host name.
	// A sink's own gateway_id overrides it.
	GatewayID string
	HTTP      HTTP
	Pin       Pin
	Probes    Probes
	Workers   Workers

	// Lists are the enrichment lists (lists:), in the order of the file,
	// each loaded by Parse (lists.go).
	Lists []List
	// Enrich are the fields added to the record of every decided event.
	Enrich []Enrich

	src *configSource // where it was read from; nil for a Config built in code
}

// File returns the name of the file c was read from ("" for a Config
// built in code).
func (c *Config) File() string {
	if c.src == nil {
		return ""
	}
	return c.src.file
}

// Mode is a receive path: what the configuration asks for (mode:, where
// auto lets the gateway choose) and what the gateway chose (its Path, one
// of the three others). One vocabulary for both.
type Mode string

const (
	// ModeAuto: the gateway steps down afxdp → socket → plain as the
	// kernel and the NIC allow.
	ModeAuto Mode = "auto"
	// ModeAFXDP: one AF_XDP socket per RX queue behind the XDP program.
	ModeAFXDP Mode = "afxdp"
	// ModeSocket: an SO_REUSEPORT group per NUMA node behind the XDP
	// program.
	ModeSocket Mode = "socket"
	// ModePlain: plain UDP sockets, no BPF at all (no XDP policing, no
	// kernel blocks).
	ModePlain Mode = "plain"
)

func (m Mode) String() string { return string(m) }

// Listen is where events arrive.
type Listen struct {
	Ports []uint16 // UDP destination ports; at least one
	// Address is the destination address that is ours: the bind address
	// of the sockets (socket and plain modes), and in afxdp and socket
	// modes the XDP program passes a datagram to a listened port but to
	// another address, or of the other family, to the stack as
	// not_our_address (not for us), as the sockets would not see it; the
	// kfree_skb probe counts the stack's drops to this address only. "" =
	// all IPv4 addresses for the sockets, any address for the XDP program
	// and the probe; 0.0.0.0 and "::" are any too.
	Address string
	// VLANs are the VLAN IDs served (the outer tag): a datagram to our
	// port tagged with another VLAN is dropped in XDP as vlan_not_served
	// (in socket mode only a VLAN device of the host would deliver it).
	// Untagged frames are always served. AnyVLAN ("vlans: any") serves all.
	VLANs   []uint16
	AnyVLAN bool
	// Groups are multicast groups (IPv4, or IPv6 ff0x:: with address
	// "::") the gateway joins on Interface, so that datagrams sent to a
	// group and a listened port are received: by the sockets on the socket
	// and plain paths (each group joined on one socket of the group, which
	// alone receives it), and, on the afxdp path, by the XDP program, which
	// takes a joined group's datagrams to a listened port (the join makes
	// the NIC and the switch deliver the group). Requires address unset or
	// unspecified.
	Groups []netip.Addr
}

// Schema maps the engine's roles to JSON paths (engine.Schema).
// An empty path leaves the role unused.
type Schema struct {
	Key, Amount, Type, TS, Src string
	Required                   []string // role names: key, amount, type, ts, src
}

// Limits bound the work one datagram can cause (engine.Limits).
type Limits struct {
	MaxDatagram int
	MaxEvent    int
	MaxDepth    int
	// AllowDuplicateKeys lets an event name a key the rules read twice
	// (the first value counts); by default such an event is a
	// duplicate_key decode error (I-JSON), since downstream parsers read
	// the last one and the rules would judge another event than they see.
	AllowDuplicateKeys bool
	// StateMemory bounds the bytes of all rate-limit and window tables
	// together; a config over it is refused by validate, run and reload
	// with each rule's figure. 0: half the host's memory (MemTotal).
	StateMemory int64
}

// Rule is one rule (engine.RuleSpec).
type Rule struct {
	Name      string
	When      string
	Filter    string
	RateLimit *RuleRateLimit
	Window    *RuleWindow
	Action    string // pass | drop | alert | block <duration>
	// To names sinks (their name, sink.Spec.Label) that also get every
	// event this rule decides, whatever their what: selects (once per
	// sink); a sink with what: routed gets only such events.
	To []string

	// Enrich: fields added to the record of an event the rule fires on.
	Enrich []Enrich
}

// RuleRateLimit is a per-key token bucket of a rule.
type RuleRateLimit struct {
	Key     string  // a field path or src_ip
	Rate    string  // "100/s", "6000/m", "10/ms", "1/h"
	Burst   float64 // 0: one second's worth of Rate (at least 1)
	MaxKeys int     // 0: 1<<20
	OnFull  string  // deny (default: a new key with the table full is limited) | allow
}

// RuleWindow is a per-key sliding window of a rule.
type RuleWindow struct {
	Key     string
	Size    time.Duration
	Slide   time.Duration
	Agg     string // count | sum(f) | min(f) | max(f) | avg(f) | distinct(f)
	MaxKeys int
	OnFull  string // deny (default: an event that cannot be counted fires the rule) | allow

	// Aggregate outputs (engine.EmitSpec): emit (on_alert | every_slide),
	// emit_min_change, emit_max_keys and max_key_bytes (every_slide).
	// Records go to the sinks of what: aggregates.
	Emit          string
	EmitMinChange float64
	EmitMaxKeys   int
	MaxKeyBytes   int
}

// XDP is the policy of the XDP program.
type XDP struct {
	RateLimit     XDPRateLimit // per-source kernel token bucket
	PayloadCheck  bool         // drop UDP payloads that do not start with '{'
	CostSample    int          // time one packet in N per CPU; 0 = off
	BlocklistSize int          // entries of the blocklist LRU map
	BlockMax      int          // most live blocks the feedback path keeps; <= BlocklistSize
	// NeverBlock are networks whose datagrams skip the blocklist and the
	// kernel bucket, and which no block verdict or hand-made block can
	// block (spoofed floods cannot get a partner blocked). Drop are
	// networks dropped in XDP (cidr_drop). Addresses count as /32 or /128.
	NeverBlock []netip.Prefix
	Drop       []netip.Prefix
	// NeverBlockLists and DropLists name cidr lists (lists:) pushed into
	// the XDP program's trie as never_block or drop, each counted under its
	// own name; the trie follows the list files as they are reloaded.
	NeverBlockLists []string
	DropLists       []string
}

// XDPRateLimit is the per-source token bucket in the XDP program.
type XDPRateLimit struct {
	Rate  string  // "" = off; else N/unit, at least 1/s
	Burst float64 // 0: one second's worth of Rate (at least 1)
}

// PerSecond returns the configured rate in packets per second, 0 when off
// or invalid (Validate reports the latter).
func (r XDPRateLimit) PerSecond() float64 {
	if r.Rate == "" {
		return 0
	}
	v, err := engine.ParseRate(r.Rate)
	if err != nil {
		return 0
	}
	return v
}

// Socket configures the socket mode (and the plain UDP fallback).
type Socket struct {
	RcvBuf int // SO_RCVBUF bytes per socket; 0 = the kernel's default
	Batch  int // datagrams per recvmmsg
}

// AFXDP configures the AF_XDP sockets, one per RX queue.
type AFXDP struct {
	FrameSize int // 2048 or 4096
	RxRing    int // descriptors, power of two
	FillRing  int // descriptors, power of two
	Frames    int // UMEM frames per socket, >= FillRing
	// Spin: how long a worker spins on its empty RX ring before it sleeps
	// in poll(2); 0 sleeps at once. Default DefaultRxSpin, whose comment
	// has the trade.
	Spin time.Duration
}

// HTTP is the metrics, status and pprof endpoint.
type HTTP struct {
	// Listen is host:port, or unix:/path for a unix socket (created 0660:
	// its file permissions decide who may connect, so /tap, pprof and
	// blocklist changes need no token there); "" = no HTTP server.
	Listen string
	// Pprof serves /debug/pprof/* and /debug/trace (default true).
	Pprof bool
	// Token, when set, is the bearer token every request but /healthz and
	// /readyz must carry (Authorization: Bearer <token>). Required when
	// Listen is not a loopback address.
	Token string
	// TokenFile names a file whose first line is the token (instead of
	// Token; read when the config is loaded: config_env.go).
	TokenFile string
}

// UnixPrefix marks an http.listen that is a unix socket path.
const UnixPrefix = "unix:"

// UnixPath is the socket path of a unix:/path listener, "" for TCP.
func (h HTTP) UnixPath() string {
	if p, ok := strings.CutPrefix(h.Listen, UnixPrefix); ok {
		return p
	}
	return ""
}

// Workers configures the worker threads (one per socket or queue).
type Workers struct {
	// CPUs, a cpulist ("2-7", "1,3"), are the CPUs the workers may run
	// on; "" (the default) is every online CPU. Socket and plain modes
	// open one socket (and worker) per listed CPU; in afxdp mode a queue's
	// worker runs on the CPU that serves the queue when it is listed, else
	// on a listed CPU of the same NUMA node (see plan.restrict). Keep the
	// CPUs that take the NIC's interrupts, and other busy work, out of it.
	// The process's other threads are kept on the CPUs left over
	// (Housekeeping.go).
	CPUs string
	// RealtimePriority, 1..99, runs each worker's pinned thread SCHED_FIFO
	// at that priority; 0 (the default) leaves it SCHED_OTHER. Needs
	// CAP_SYS_NICE or RLIMIT_RTPRIO; see gateway/realtime.go for the cost.
	RealtimePriority int
}

// Probes are the kernel-side latency and drop probes (bpf.LoadProbes).
type Probes struct {
	// Enabled loads them (needs CAP_PERFMON as well as CAP_BPF); a probe
	// the kernel cannot run is logged and left out.
	Enabled bool
	// Sample: on the socket and plain paths, one datagram in Sample (per
	// CPU in the kernel, per socket for receive → verdict) is timed; 1
	// times every one. The histograms count the samples: their shape,
	// mean and quantiles are the datagrams', their counts 1/Sample of
	// the datagrams'.
	Sample int
	// RxTimestamps keeps the host's software receive timestamping on: the
	// receive time both socket-path latencies start from (kernel queueing
	// and receive → verdict). On by default: without it both histograms
	// stay empty (unless something else on the host, such as an NTP
	// daemon, turned timestamping on). It is host-wide, a clock read per
	// packet received on any interface (its cost: BENCHMARKS.md, "Why the
	// defaults"); turn it off where that matters more.
	RxTimestamps bool
}

// DefaultProbeSample is probes.sample's default.
const DefaultProbeSample = 256

// Pin is where BPF objects are pinned.
type Pin struct {
	Path string // a directory on bpffs
	Keep bool   // leave pins in place on a clean stop
}

// Defaults (also documented in examples/xgate.yaml).
const (
	DefaultPinPath      = "/sys/fs/bpf/xgate"
	DefaultHTTPListen   = "127.0.0.1:9717"
	DefaultSocketBatch  = 64
	DefaultSocketRcvBuf = 4 << 20
)

// Default returns a Config with every default set and no ports,
// interface, rules or sinks.
func Default() *Config {
	return &Config{
		Mode: ModeAuto,
		Schema: Schema{
			Key: "user_id", Amount: "amount", Type: "event_type", TS: "ts", Src: "ip",
			Required: []string{"key"},
		},
		Limits: Limits{MaxDatagram: 65535, MaxEvent: 16384, MaxDepth: 32},
		XDP: XDP{
			PayloadCheck:  true,
			CostSample:    64,
			BlocklistSize: 65536,
			BlockMax:      16384,
		},
		Socket: Socket{RcvBuf: DefaultSocketRcvBuf, Batch: DefaultSocketBatch},
		AFXDP:  AFXDP{FrameSize: 4096, RxRing: 4096, FillRing: 4096, Frames: 8192, Spin: DefaultRxSpin},
		HTTP:   HTTP{Listen: DefaultHTTPListen, Pprof: true},
		Pin:    Pin{Path: DefaultPinPath},
		Probes: Probes{Enabled: true, Sample: DefaultProbeSample, RxTimestamps: true},
	}
}

// DefaultRxSpin is how long a worker spins on its empty RX ring before it
// sleeps in poll(2) (afxdp.spin, xdp.Config.Spin). Waking a sleeping
// thread costs tens of µs (more on a virtual CPU that halted): at half
// load a worker that slept whenever the ring was empty paid that on most
// batches (BENCHMARKS.md, "Why the defaults"). The price is CPU: a worker
// that gets a batch at least
// every spin never sleeps, one that gets b batches a second at lower
// rates spins about b × spin per second.
const DefaultRxSpin = 50 * time.Microsecond

// MaxRxSpin bounds afxdp.spin: beyond it a worker is a busy poller.
const MaxRxSpin = 10 * time.Millisecond
