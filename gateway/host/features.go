package host

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/xgate/xgate/bpf"
)

// Availability of a feature in a Feature report.
const (
	FeatureYes       = "yes"
	FeatureNo        = "no"
	FeatureForcedOff = "forced-off" // XGATE_FEATURES_OFF or bpf.ForceOff
	FeatureUnknown   = "unknown"    // not probed (no interface, not tried, in use) or the probe failed
)

// Feature is one kernel or interface feature: whether xgate may use it,
// why not, and what that made xgate do.
type Feature struct {
	Name      string `json:"-"`         // the key of the features object
	Scope     string `json:"scope"`     // kernel | interface
	Available string `json:"available"` // yes | no | forced-off | unknown
	Reason    string `json:"reason,omitempty"`
	Effect    string `json:"effect"`
}

// Features is a feature report in the order of bpf.AllFeatures. It reads and
// writes as a JSON object keyed by feature name (in that order).
type Features []Feature

// MarshalJSON writes {"name": {...}, ...} in report order.
func (fs Features) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.Name)
		v, err := json.Marshal(f)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads the object MarshalJSON writes, in bpf.AllFeatures
// order (names it does not know last, sorted).
func (fs *Features) UnmarshalJSON(data []byte) error {
	var m map[string]Feature
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	*fs = (*fs)[:0]
	for _, n := range bpf.AllFeatures() {
		if f, ok := m[n]; ok {
			f.Name = n
			*fs = append(*fs, f)
			delete(m, n)
		}
	}
	var rest []string
	for n := range m {
		rest = append(rest, n)
	}
	slices.Sort(rest)
	for _, n := range rest {
		f := m[n]
		f.Name = n
		*fs = append(*fs, f)
	}
	return nil
}

// Get returns the named feature.
func (fs Features) Get(name string) (Feature, bool) {
	for _, f := range fs {
		if f.Name == name {
			return f, true
		}
	}
	return Feature{}, false
}

// Line is the feature as one line of text.
func (f Feature) Line() string {
	s := fmt.Sprintf("%-18s %-10s", f.Name, f.Available)
	if f.Reason != "" {
		s += " (" + f.Reason + ")"
	}
	return s + " → " + f.Effect
}

// FeatureEffects says, per feature, what xgate does with it and without it.
var FeatureEffects = map[string][2]string{
	bpf.FeatBTF: {"kernel BTF present: the tp_btf probes can load",
		"no tp_btf probes: kernel drops and XDP errors are not reported"},
	bpf.FeatXDPLink: {"XDP attached through a bpf_link (detached if xgate dies)",
		"no XDP: mode auto runs plain UDP sockets (no kernel policing), modes afxdp and socket fail"},
	bpf.FeatXDPMeta: {"receive timestamp in XDP metadata",
		"receive timestamp in a prefix header in front of the frame"},
	bpf.FeatLiveFrames: {"generator sends with BPF_PROG_RUN live frames",
		"generator uses AF_XDP transmit"},
	bpf.FeatTpBtf: {"kernel probes (kfree_skb, xdp_redirect_err, xdp_exception) can run",
		"kernel probes for drops and XDP errors off (listed as missing in /status)"},
	bpf.FeatSocketFilter: {"socket-path queueing latency measured by a socket filter",
		"no socket-path queueing latency probe"},
	bpf.FeatReuseport: {"socket path possible; on several NUMA nodes its groups are steered to the receiving CPU's node",
		"no socket path: mode auto steps from AF_XDP to plain UDP sockets"},
	bpf.FeatXDPNative: {"XDP runs in the driver",
		"XDP runs in generic (skb) mode: slower, the packet is already an skb"},
	bpf.FeatAFXDP: {"AF_XDP sockets receive (path afxdp)",
		"no AF_XDP: mode auto uses the socket path behind XDP, mode afxdp fails"},
	bpf.FeatAFXDPZeroCopy: {"AF_XDP zero-copy: the driver writes frames into the UMEM",
		"AF_XDP copy mode: the kernel copies each frame into the UMEM"},
	bpf.FeatAFXDPNeedWakeup: {"AF_XDP need_wakeup: system calls only when the kernel asks",
		"AF_XDP bound without need_wakeup: TX kicked on every send"},
}

// FeatureFromErr builds a feature from a probe's answer.
func FeatureFromErr(name, scope string, err error) Feature {
	f := Feature{Name: name, Scope: scope}
	eff := FeatureEffects[name]
	switch {
	case err == nil:
		f.Available, f.Effect = FeatureYes, eff[0]
		return f
	case errors.Is(err, bpf.ErrForcedOff):
		f.Available = FeatureForcedOff
	case errors.Is(err, bpf.ErrNotSupported):
		f.Available = FeatureNo
	default:
		f.Available = FeatureUnknown
	}
	f.Reason, f.Effect = err.Error(), eff[1]
	if f.Available == FeatureUnknown {
		f.Effect = "as if refused: " + eff[1]
	}
	return f
}

// UnknownFeature is an interface feature that was not tried.
func UnknownFeature(name, why string) Feature {
	return Feature{Name: name, Scope: "interface", Available: FeatureUnknown, Reason: why, Effect: "not used"}
}

// RefusedErr marks err as the kernel's refusal (matches bpf.ErrNotSupported).
type RefusedErr struct{ Err error }

func (e RefusedErr) Error() string { return e.Err.Error() }

func (e RefusedErr) Unwrap() error { return e.Err }

func (e RefusedErr) Is(target error) bool { return target == bpf.ErrNotSupported }

// KernelFeatures probes the kernel-wide features (bpf.Probe, cached per
// process).
func KernelFeatures() Features {
	var out Features
	for _, n := range bpf.KernelFeatures {
		out = append(out, FeatureFromErr(n, "kernel", bpf.Probe(n)))
	}
	return out
}

// HostFeatures is every feature without an interface: the kernel's,
// probed, and the interface ones as not probed.
func HostFeatures() Features {
	out := KernelFeatures()
	for _, n := range bpf.InterfaceFeatures {
		if bpf.ForcedOff(n) {
			out = append(out, FeatureFromErr(n, "interface", bpf.ForcedErr(n)))
			continue
		}
		out = append(out, UnknownFeature(n, "not probed: no interface (xgate features --interface IF tries it)"))
	}
	return out
}
