package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigEnv: ${VAR} in a value is an error naming the flag that turns
// interpolation on; with a lookup it takes the variable's value, an unset
// variable is an error, $${ is a literal ${, and errors carry the line.
func TestConfigEnv(t *testing.T) {
	const yml = "listen: {ports: [9000]}\nrules:\n  - {name: r, when: 'src == \"${SRC}\"', action: drop}\n"
	_, err := ParseConfig("c.yaml", []byte(yml))
	if err == nil || !strings.Contains(err.Error(), "c.yaml:3:") || !strings.Contains(err.Error(), "--expand-env") {
		t.Fatalf("${SRC} without expansion: %v", err)
	}
	env := map[string]string{"SRC": "10.0.0.1"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c, err := ParseConfigEnv("c.yaml", []byte(yml), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Rules[0].When; got != `src == "10.0.0.1"` {
		t.Errorf("expanded rule %q", got)
	}
	delete(env, "SRC")
	if _, err := ParseConfigEnv("c.yaml", []byte(yml), lookup); err == nil || !strings.Contains(err.Error(), "SRC is not set") {
		t.Errorf("unset variable: %v", err)
	}
	for _, lk := range []func(string) (string, bool){nil, lookup} {
		c, err := ParseConfigEnv("c.yaml", []byte("listen: {ports: [9000]}\ngateway_id: \"a$${b}\"\n"), lk)
		if err != nil || c.GatewayID != "a${b}" {
			t.Errorf("$${ literal: %v %q", err, c.GatewayID)
		}
	}
	for _, bad := range []string{"${", "${1X}", "${A-B}"} {
		if _, err := ParseConfigEnv("c.yaml", []byte("listen: {ports: [9000]}\ngateway_id: \""+bad+"\"\n"), lookup); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// A plain ${P} resolves as what it expands to.
	env["P"] = "9001"
	if c, err := ParseConfigEnv("c.yaml", []byte("listen:\n  ports:\n    - ${P}\n"), lookup); err != nil || c.Listen.Ports[0] != 9001 {
		t.Errorf("port from the environment: %v", err)
	}
	// Comments are not values.
	if _, err := ParseConfig("c.yaml", []byte("# ${NOT_A_VALUE}\nlisten: {ports: [9000]}\n")); err != nil {
		t.Errorf("${ in a comment: %v", err)
	}
}

// TestHTTPTokenFile: http.token_file supplies the token (its first line)
// and its checks; with http.token too, unreadable or short, it is an error.
func TestHTTPTokenFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(good, []byte("0123456789abcdef01\nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "listen: {ports: [9000]}\nhttp: {listen: \"0.0.0.0:9100\", "
	c, err := ParseConfig("c.yaml", []byte(base+"token_file: "+good+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Token != "0123456789abcdef01" {
		t.Errorf("token %q", c.HTTP.Token)
	}
	for what, yml := range map[string]string{
		"both":    base + "token: 0123456789abcdef01, token_file: " + good + "}\n",
		"missing": base + "token_file: " + filepath.Join(dir, "none") + "}\n",
		"short":   base + "token_file: " + short + "}\n",
	} {
		if _, err := ParseConfig("c.yaml", []byte(yml)); err == nil {
			t.Errorf("%s: accepted", what)
		} else if !strings.Contains(err.Error(), "http.token") {
			t.Errorf("%s: %v does not name the key", what, err)
		}
	}
}
