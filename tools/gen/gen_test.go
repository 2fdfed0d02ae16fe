package gen

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestKindsAreWhatTheySay(t *testing.T) {
	g, err := New(Config{Users: 50, BadShare: 0.5, Seed: 7, BigShare: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	var seen [NumKinds]int
	for i := 0; i < 5000; i++ {
		ev, kind := g.Append(nil)
		seen[kind]++
		var m map[string]any
		err := json.Unmarshal(ev, &m)
		switch kind {
		case Valid:
			if err != nil {
				t.Fatalf("valid event does not parse: %s: %v", ev, err)
			}
			if _, ok := m["amount"].(float64); !ok || !strings.HasPrefix(m["user_id"].(string), "u-") {
				t.Fatalf("valid event fields: %s", ev)
			}
		case MissingKey:
			if err != nil || m["user_id"] != nil {
				t.Fatalf("missing-key event: %s", ev)
			}
		case WrongType:
			if _, ok := m["amount"].(string); err != nil || !ok {
				t.Fatalf("wrong-type event: %s", ev)
			}
		case BadJSON, TrailingJunk:
			if err == nil {
				t.Fatalf("%v event parses: %s", kind, ev)
			}
		}
	}
	for k, n := range seen {
		if n == 0 {
			t.Errorf("kind %v never generated", Kind(k))
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{{Users: -1}, {ZipfS: 0.5}, {BadShare: 2}, {BigShare: -1}} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
