package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway/tap"
	"github.com/xgate/xgate/testenv"
)

// TestTapCommand runs `xgate tap --verdict alert --count 5` against a
// gateway on test hosts while a mix of verdicts arrives.
func TestTapCommand(t *testing.T) {
	needRoot(t)
	pair := testenv.New(t, testenv.Options{RxQueues: 2})
	cfg, err := config.Parse("tap.yaml", []byte(`
interface: `+pair.B.Link+`
mode: afxdp
listen: {ports: [9000]}
rules:
  - name: big
    when: amount > 1000
    action: alert
http: {listen: "127.0.0.1:0", token: `+statsToken+`}
`))
	if err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, pair.B, cfg)

	if out, err := run(t, "tap", "--addr", g.HTTPAddr(), "--token", "", "--count", "1", "--duration", "2s"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("tap without the bearer token: %v\n%s", err, out)
	}
	if out, err := run(t, "tap", "--addr", g.HTTPAddr(), "--token", statsToken, "--verdict", "maybe"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("tap --verdict maybe: %v\n%s", err, out)
	}

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := run(t, "tap", "--addr", g.HTTPAddr(), "--token", statsToken, "--verdict", "alert", "--count", "5", "--duration", "10s")
		done <- result{out, err}
	}()
	time.Sleep(300 * time.Millisecond) // the tap connects
	dst := netip.AddrPortFrom(pair.B.Addr, 9000)
	for i := 0; i < 20; i++ {
		for _, p := range []string{`{"user_id":"u1","amount":1}`, `{"user_id":"u3","amount":5000}`} {
			if _, err := pair.A.SendUDP(dst, []byte(p), 1); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("xgate tap did not end")
	}
	if r.err != nil {
		t.Fatalf("%v\n%s", r.err, r.out)
	}
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5 (--count):\n%s", len(lines), r.out)
	}
	for _, l := range lines {
		var tl tap.Line
		if err := json.Unmarshal([]byte(l), &tl); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if tl.Verdict != "alert" || tl.Rule != "big" || string(tl.Event) != `{"user_id":"u3","amount":5000}` || tl.LatencyUs == nil {
			t.Errorf("line %s", l)
		}
	}
}
