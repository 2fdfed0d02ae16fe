package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/xgate/xgate/bpf"
	"github.com/xgate/xgate/testenv"
)

type featuresJSON struct {
	Interface string `json:"interface"`
	RxQueues  *struct {
		Active int    `json:"active"`
		Source string `json:"source"`
	} `json:"rx_queues"`
	Features map[string]struct {
		Scope     string `json:"scope"`
		Available string `json:"available"`
		Reason    string `json:"reason"`
		Effect    string `json:"effect"`
	} `json:"features"`
}

func decodeFeatures(t *testing.T, out string) featuresJSON {
	t.Helper()
	var r featuresJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("features --json: %v\n%s", err, out)
	}
	for _, n := range bpf.AllFeatures() {
		f, ok := r.Features[n]
		if !ok || f.Available == "" || f.Effect == "" || f.Scope == "" {
			t.Errorf("feature %s missing or empty: %+v", n, f)
		}
	}
	if len(r.Features) != len(bpf.AllFeatures()) {
		t.Errorf("%d features, want %d", len(r.Features), len(bpf.AllFeatures()))
	}
	return r
}

func TestFeaturesJSON(t *testing.T) {
	defer bpf.ForceOff(bpf.FeatLiveFrames)()
	out, err := run(t, "features", "--json")
	if err != nil {
		t.Fatal(err)
	}
	r := decodeFeatures(t, out)
	if f := r.Features[bpf.FeatLiveFrames]; f.Available != "forced-off" || !strings.Contains(f.Effect, "AF_XDP transmit") {
		t.Errorf("xdp_live_frames forced off: %+v", f)
	}
	if f := r.Features[bpf.FeatAFXDP]; f.Available != "unknown" || !strings.Contains(f.Reason, "--interface") {
		t.Errorf("afxdp without an interface: %+v", f)
	}
	// The text form: one line per feature.
	text, err := run(t, "features")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(text, "\n"); n != len(bpf.AllFeatures()) {
		t.Errorf("%d lines, want one per feature:\n%s", n, text)
	}
}

func TestFeaturesInterface(t *testing.T) {
	pair := testenv.New(t, testenv.Options{KernelQueues: true})
	var out string
	var err error
	_ = pair.B.Do(func() error {
		out, err = run(t, "features", "--interface", pair.B.Link, "--json")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := decodeFeatures(t, out)
	if r.Interface != pair.B.Link || r.RxQueues == nil || r.RxQueues.Active != 1 {
		t.Errorf("interface %q queues %+v, want %s with 1 active", r.Interface, r.RxQueues, pair.B.Link)
	}
	if f := r.Features[bpf.FeatAFXDP]; f.Available != "yes" {
		t.Errorf("afxdp on a veth: %+v", f)
	}
	if f := r.Features[bpf.FeatAFXDPZeroCopy]; f.Available != "no" {
		t.Errorf("afxdp_zerocopy on a veth: %+v", f)
	}
}

func TestValidateHostJSON(t *testing.T) {
	out, err := run(t, "validate", "-c", "../../examples/xgate.yaml", "--host", "--json")
	var r struct {
		OK       bool            `json:"ok"`
		Notes    []string        `json:"notes"`
		Problems []string        `json:"problems"`
		Features json.RawMessage `json:"features"`
	}
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		t.Fatalf("validate --json: %v (%v)\n%s", jerr, err, out)
	}
	if r.OK != (err == nil) || (err != nil) != (len(r.Problems) > 0) {
		t.Errorf("ok %v with error %v and problems %v", r.OK, err, r.Problems)
	}
	var fs map[string]json.RawMessage
	if err := json.Unmarshal(r.Features, &fs); err != nil || len(fs) != len(bpf.AllFeatures()) {
		t.Errorf("validate --host --json features: %v, %d of %d", err, len(fs), len(bpf.AllFeatures()))
	}
}
