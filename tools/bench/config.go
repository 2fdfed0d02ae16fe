//go:build linux

package bench

import (
	"fmt"
	"runtime"
	"slices"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/host"
)

// Port is the UDP port the bench's gateway listens on.
const Port = 9000

// DefaultRules are the rules of examples/xgate.yaml (a test holds them
// equal): the default risk rules every bench runs.
const DefaultRules = `rules:
  - name: big-payment
    when: event_type == "payment" && amount > 10000
    action: alert
  - name: per-user-rate
    rate_limit: {key: user_id, rate: 100/s, burst: 200, max_keys: 1048576, on_full: deny}
    action: drop
  - name: velocity
    window: {key: user_id, size: 60s, slide: 5s, agg: sum(amount), max_keys: 65536, on_full: deny,
             emit: every_slide, emit_min_change: 100, emit_max_keys: 10000, max_key_bytes: 64}
    filter: event_type == "payment"
    when: value > 50000
    action: alert
  - name: flood-source
    rate_limit: {key: src_ip, rate: 10000/s}
    action: block 30s
`

// Modes are the gateway paths a bench can run.
var Modes = []string{string(config.ModeAFXDP), string(config.ModeSocket), string(config.ModePlain)}

// GatewayConfig is the bench's configuration: the default rules on ifname
// in mode, no sinks, nothing pinned, no HTTP server, the workers on
// WorkerCPUs. Plain mode has no interface (plain UDP sockets, no BPF).
func GatewayConfig(ifname, mode string) (*config.Config, error) {
	var head string
	switch mode {
	case string(config.ModeAFXDP), string(config.ModeSocket):
		head = fmt.Sprintf("interface: %s\nmode: %s\n", ifname, mode)
	case string(config.ModePlain):
		head = "mode: auto\n"
	default:
		return nil, fmt.Errorf("bench: mode %q: want one of afxdp, socket, plain", mode)
	}
	yml := head + fmt.Sprintf("listen: {ports: [%d]}\n", Port) + DefaultRules
	cfg, err := config.Parse("bench.yaml", []byte(yml))
	if err != nil {
		return nil, err
	}
	cfg.Pin.Path = ""
	cfg.Workers.CPUs = host.FormatCPUList(WorkerCPUs())
	cfg.Sinks = nil
	cfg.HTTP.Listen = "" // no HTTP server: modes of a --compare would collide on the port
	return cfg, nil
}

// WorkerCPUs are the CPUs a bench gives the receivers (the gateway's
// workers, and the raw modes' readers): every online CPU but the sender's,
// which also runs the receiving host's kernel path (XDP, the AF_XDP copy,
// the UDP stack). A worker there would take CPU from the sender and the
// kernel path, and the receivers would no longer be what limits the rate.
// On a one-CPU host that CPU is all there is.
func WorkerCPUs() []int {
	online := onlineCPUs()
	if rest := slices.DeleteFunc(slices.Clone(online), func(c int) bool { return c == senderCPU }); len(rest) > 0 {
		return rest
	}
	return online
}

// OtherCPUs are the online CPUs that are not WorkerCPUs: the sender's.
func OtherCPUs() []int {
	w := WorkerCPUs()
	return slices.DeleteFunc(onlineCPUs(), func(c int) bool { return slices.Contains(w, c) })
}

func onlineCPUs() []int {
	var online []int
	if t, err := host.ReadTopology("", ""); err == nil {
		online = t.Online
	}
	if len(online) == 0 {
		for c := range runtime.NumCPU() {
			online = append(online, c)
		}
	}
	return online
}
