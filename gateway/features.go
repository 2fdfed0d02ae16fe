package gateway

import (
	"slices"
	"strings"

	"github.com/xgate/xgate/gateway/host"

	"github.com/xgate/xgate/bpf"
)

// Features is the gateway's report: the kernel's features and what the
// gateway got on its interface when it attached and bound.
func (g *Gateway) Features() host.Features {
	// The kernel's answers as New found them: a probe that failed for
	// want of privilege is not cached by bpf.Probe, and /status must not
	// load probe programs on every request.
	g.kernOnce.Do(func() { g.kernFeat = host.KernelFeatures() })
	out := slices.Clone(g.kernFeat)
	if g.xdp != nil {
		// What the loaded program really does with the receive stamp.
		for i := range out {
			if out[i].Name != bpf.FeatXDPMeta {
				continue
			}
			switch stamp, _ := g.xdp.Stamp(); stamp {
			case bpf.StampMeta:
				out[i].Effect = host.FeatureEffects[bpf.FeatXDPMeta][0]
			case bpf.StampPrefix:
				out[i].Effect = host.FeatureEffects[bpf.FeatXDPMeta][1]
			}
		}
	}
	for _, n := range bpf.InterfaceFeatures {
		if f, ok := g.ifFeat[n]; ok {
			out = append(out, f)
			continue
		}
		why := "not tried: path " + g.path.String()
		if bpf.ForcedOff(n) {
			out = append(out, host.FeatureFromErr(n, "interface", bpf.ForcedErr(n)))
			continue
		}
		out = append(out, host.UnknownFeature(n, why))
	}
	return out
}

// setIfFeature records what the gateway got for an interface feature.
func (g *Gateway) setIfFeature(name string, err error) {
	if g.ifFeat == nil {
		g.ifFeat = map[string]host.Feature{}
	}
	g.ifFeat[name] = host.FeatureFromErr(name, "interface", err)
}

// logFeatures logs the report, one line per feature.
func (g *Gateway) logFeatures() {
	for _, f := range g.Features() {
		g.log.Info("feature "+f.Name, "available", f.Available, "reason", f.Reason, "effect", f.Effect)
	}
}

// stepsText is the path steps as text for Path's why.
func stepsText(steps []Step) string {
	var b strings.Builder
	for _, s := range steps {
		if s.OK {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(s.name() + " refused: " + s.Reason)
	}
	return b.String()
}
