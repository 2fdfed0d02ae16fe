package nats

import (
	"reflect"
	"testing"
	"time"
)

// TestCheck: each config's first problem, as the config key and the
// message the config file's error carries.
func TestCheck(t *testing.T) {
	ok := func() Config {
		return Config{URLs: []string{"nats://127.0.0.1:4222"}, Subject: "xgate.events.{key}", Stream: "EVENTS"}
	}
	for _, c := range []struct {
		name     string
		edit     func(n *Config)
		key, msg string
	}{
		{"valid", func(*Config) {}, "", ""},
		{"no urls", func(n *Config) { n.URLs = nil }, "urls", "missing: want at least one server URL, e.g. nats://127.0.0.1:4222"},
		{"http url", func(n *Config) { n.URLs = []string{"http://x:1"} }, "urls", `"http://x:1": want nats://host:port or tls://host:port`},
		{"wildcard subject", func(n *Config) { n.Subject = "a.*" }, "subject", `"a.*": a subject to publish to has no wildcards`},
		{"stream name", func(n *Config) { n.Stream = "a.b" }, "stream", `"a.b": a stream name has no whitespace, '.', '*', '>', '/' or '\'`},
		{"subjects without create", func(n *Config) { n.StreamSubjects = []string{"xgate.>"} }, "stream_subjects", "only with create_stream: true (xgate does not change an existing stream)"},
		{"subjects too narrow", func(n *Config) { n.CreateStream, n.StreamSubjects = true, []string{"other.>"} }, "stream_subjects", "[other.>] do not take every subject of xgate.events.{key}"},
		{"max_pending", func(n *Config) { n.MaxPending = -1 }, "max_pending", "-1: want 1..1048576"},
		{"password without user", func(n *Config) { n.Password = "p" }, "user", "missing: a password goes with a user"},
		{"two credentials", func(n *Config) { n.User, n.Password, n.TokenFile = "u", "p", "/t" }, "user", "want one of user/password, token_file and creds_file"},
	} {
		n := ok()
		c.edit(&n)
		if key, msg := Check(&n, nil); key != c.key || msg != c.msg {
			t.Errorf("%s: %s: %s\nwant %s: %s", c.name, key, msg, c.key, c.msg)
		}
	}
}

func TestDefaults(t *testing.T) {
	n := Config{Subject: "xgate.{verdict}.x{key}", Stream: "S", CreateStream: true}
	Defaults(&n)
	want := Config{Subject: n.Subject, Stream: "S", CreateStream: true, StreamSubjects: []string{"xgate.*.*"},
		MaxPending: 4096, AckTimeout: 5 * time.Second}
	if !reflect.DeepEqual(n, want) {
		t.Fatalf("defaults %+v\nwant %+v", n, want)
	}
	// Set values stay.
	n = Config{Subject: "a", Stream: "S", MaxPending: 7, AckTimeout: time.Second}
	Defaults(&n)
	if n.MaxPending != 7 || n.AckTimeout != time.Second || n.StreamSubjects != nil {
		t.Fatalf("defaults changed what was set: %+v", n)
	}
}
