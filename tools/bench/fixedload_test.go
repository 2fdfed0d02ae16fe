//go:build linux

package bench

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestParseRates(t *testing.T) {
	got, err := ParseRates("20k, 120k,max,1.5M,2500")
	if err != nil {
		t.Fatal(err)
	}
	want := []FixedLoad{{Label: "20k", TargetRate: 20e3}, {Label: "120k", TargetRate: 120e3}, {Label: "max"},
		{Label: "1.5M", TargetRate: 1.5e6}, {Label: "2500", TargetRate: 2500}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if one, err := ParseRates("max"); err != nil || len(one) != 1 || one[0].TargetRate != 0 {
		t.Errorf("max: %+v, %v", one, err)
	}
	for _, bad := range []string{"20k,", ",max", "20k,,max", "20k,fast", "20k,20000", "max,MAX", "0", "-5k", "2000M", "NaN", "1e10"} {
		if l, err := ParseRates(bad); err == nil {
			t.Errorf("%q accepted: %+v", bad, l)
		}
	}
}

// The fixed-load outputs: a table line per load and mode with the ratio
// against the first mode, and JSON with the loads, each holding its
// reports under the report keys.
func TestFixedLoadOutputs(t *testing.T) {
	loads := []FixedLoad{
		{Label: "20k", TargetRate: 20e3, Reports: []Report{
			{Mode: "plain", OfferedPPS: 20e3, EventsPerSec: 20e3, ReceiverCPUS: 0.1, EventsPerCPUS: 2e6, Decided: 2e5, Complete: true},
			{Mode: "gjson", OfferedPPS: 20e3, EventsPerSec: 20e3, ReceiverCPUS: 0.4, EventsPerCPUS: 0.5e6, Decided: 2e5, Complete: true}}},
		{Label: "max", Reports: []Report{
			{Mode: "plain", OfferedPPS: 1e6, EventsPerSec: 0.9e6, ReceiverCPUS: 1, EventsPerCPUS: 0.9e6, Unaccounted: 3, Sent: 1, GeneratorBound: true},
			{Mode: "gjson", OfferedPPS: 1e6, EventsPerSec: 0.3e6, ReceiverCPUS: 1, EventsPerCPUS: 0.3e6, Complete: true}}},
	}
	var b bytes.Buffer
	WriteLoadsTable(&b, loads)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 6 { // head, 4 rows, the note
		t.Fatalf("%d lines, want 6:\n%s", len(lines), b.String())
	}
	for i, want := range [][]string{
		{"load", "mode", "events / CPU-s", "unaccounted"},
		{"20k", "plain", "2.000 M"},
		{"20k", "gjson", "0.500 M", "0.25×"},
		{"max", "plain", "0.900 M", " 3 ", "generator-bound", "incomplete"},
		{"max", "gjson", "0.300 M", "0.33×"},
		{"receiver CPU: "},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i]+" ", w) {
				t.Errorf("line %d lacks %q: %s", i, w, lines[i])
			}
		}
	}
	js, err := json.Marshal(loads)
	if err != nil {
		t.Fatal(err)
	}
	var back []map[string]any
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || back[0]["load"] != "20k" || back[0]["target_rate"] != 20e3 || back[1]["target_rate"] != 0.0 {
		t.Fatalf("loads JSON: %s", js)
	}
	reps, _ := back[1]["reports"].([]any)
	if len(reps) != 2 {
		t.Fatalf("reports of max: %s", js)
	}
	r, _ := reps[1].(map[string]any)
	if r["mode"] != "gjson" || r["events_per_cpu_s"] != 0.3e6 || r["receiver_cpu_s"] != 1.0 {
		t.Errorf("report: %v", r)
	}
}
