package demo

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestKernelDemo runs the whole demo, kernel part included: it fails if
// the accounting identity does not hold for the traffic it sends.
func TestKernelDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel part needs root (network namespaces, XDP)")
	}
	var out bytes.Buffer
	if err := Run(Options{Events: 10000, Kernel: true, Out: &out, SinkDir: t.TempDir()}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"blocked ", "rate_limited ", "payload_not_json ", "port_not_listened ", "1 block verdicts, 1 written into the XDP blocklist", "receive path afxdp"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	if strings.Count(s, "✓") != 2 {
		t.Errorf("want both accounting checks passed:\n%s", s)
	}
}
