//go:build linux

package baseline

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestRules(t *testing.T) {
	s := newServer(DecodeJSON)
	src := netip.MustParseAddr("10.0.0.1")
	now := time.Unix(1700000000, 0)
	// 250 payments of 300 from one user in one instant: 200 pass the
	// per-user bucket, 50 are dropped; the velocity sum passes 50000 at
	// the 167th, so 34 alert.
	for i := 0; i < 250; i++ {
		s.decide(&Event{UserID: "u-1", Amount: 300, EventType: "payment"}, src, now)
	}
	if s.dropped.Load() != 50 || s.passed.Load() != 200 || s.alerts.Load() != 34 {
		t.Errorf("passed %d dropped %d alerts %d, want 200, 50, 34", s.passed.Load(), s.dropped.Load(), s.alerts.Load())
	}
	// 65 s later the window is empty again and the bucket full.
	later := now.Add(65 * time.Second)
	s.decide(&Event{UserID: "u-1", Amount: 20000, EventType: "payment"}, src, later)
	if s.alerts.Load() != 35 || s.passed.Load() != 201 {
		t.Errorf("after the window: alerts %d passed %d, want 35 (big-payment), 201", s.alerts.Load(), s.passed.Load())
	}
	// A flooding source: 10000 tokens, then blocked.
	flood := netip.MustParseAddr("10.0.0.2")
	for i := 0; i < 10010; i++ {
		s.decide(&Event{UserID: "u-x" + string(rune('a'+i%20)) + string(rune('a'+i/20%26)), EventType: "login"}, flood, later)
	}
	if s.blocks.Load() == 0 {
		t.Error("flooding source not blocked")
	}
}

// TestServe: each yardstick reads datagrams off its socket, decides the
// good one and counts the broken ones as decode errors.
func TestServe(t *testing.T) {
	for name, listen := range map[string]func(string, int, int) (*Server, error){"encoding/json": Listen, "gjson": ListenGJSON} {
		t.Run(name, func(t *testing.T) { testServe(t, listen) })
	}
}

func testServe(t *testing.T, listen func(string, int, int) (*Server, error)) {
	s, err := listen("127.0.0.1:0", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Serve()
	defer s.Close()
	c, err := net.DialUDP("udp4", nil, s.conns[0].LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range []string{`{"user_id":"u-1","amount":5,"event_type":"payment"}`, `{"user_id":`, `{"amount":"x","user_id":"u"}`, `{"amount":1}`} {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Decided+st.DecodeErrors+st.SocketDrops == 4 {
			if st.Decided != 1 || st.DecodeErrors != 3 {
				t.Errorf("%+v, want 1 decided, 3 decode errors", st)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%+v after 2 s, want 4 datagrams", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDecodersAgree: the gjson decoder accepts and rejects what
// encoding/json does and reads the same values, so the two yardsticks run
// the rules on the same events.
func TestDecodersAgree(t *testing.T) {
	for _, in := range []string{
		`{"event_id":"e-1","user_id":"u-48213","amount":1234.56,"currency":"USD","event_type":"payment","ts":1732550400123,"ip":"203.0.113.7"}`,
		`{"user_id":"u-1","amount":5,"event_type":"payment"}`,
		`{"user_id":"u-1","amount":null,"event_type":"login","extra":{"a":[1,2,{"b":null}]}}`,
		`{"user_id":"u-1","amount":1e3}`,
		`{"user_id":`,
		`{"amount":"x","user_id":"u"}`,
		`{"amount":1}`,
		`{"user_id":""}`,
		`{"user_id":7}`,
		`{"user_id":"u","event_type":5}`,
		`{"user_id":"u","ip":["x"]}`,
		`{"user_id":"u","ts":"soon"}`,
		`not json`,
		`{"user_id":"u"} trailing`,
		``,
	} {
		var a, b Event
		ea, eb := DecodeJSON([]byte(in), &a), DecodeGJSON([]byte(in), &b)
		if (ea == nil) != (eb == nil) {
			t.Errorf("%s: encoding/json %v, gjson %v", in, ea, eb)
			continue
		}
		if ea == nil && a != b {
			t.Errorf("%s: encoding/json %+v, gjson %+v", in, a, b)
		}
	}
}
