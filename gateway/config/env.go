package config

import (
	"fmt"
	"strings"

	"github.com/xgate/xgate/gateway/sink/output"
	"go.yaml.in/yaml/v3"
)

// ${VAR} in configuration values. Off by default: a value with "${" is an
// error that says how to turn it on, so a placeholder is never silently
// kept as text (a token "${TOKEN}" that is not one). With a lookup
// (xgate run/validate --expand-env) ${NAME} takes the variable's value, and
// an unset variable is an error. "$${" is a literal "${" either way.

// expandEnv rewrites or rejects the ${…} of every scalar under n.
func expandEnv(file string, n *yaml.Node, lookup func(string) (string, bool)) []*FieldError {
	var errs []*FieldError
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
			v, err := expandValue(n.Value, lookup)
			if err != nil {
				errs = append(errs, &FieldError{File: file, Line: n.Line, Msg: err.Error()})
			} else {
				n.Value = v
				if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
					n.Tag = "" // a plain ${PORT} resolves as what it expands to (an integer)
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return errs
}

func expandValue(s string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString("${")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("%q: ${ without a closing }: write $${ for a literal ${", s)
		}
		name := s[i+2 : i+end]
		if !validEnvName(name) {
			return "", fmt.Errorf("%q: ${%s} is not an environment variable name (letters, digits, _): write $${ for a literal ${", s, name)
		}
		if lookup == nil {
			return "", fmt.Errorf("%q: ${%s} is not expanded: run xgate with --expand-env to take %s from the environment, or write $${ for a literal ${", s, name, name)
		}
		v, ok := lookup(name)
		if !ok {
			return "", fmt.Errorf("%q: environment variable %s is not set (--expand-env)", s, name)
		}
		b.WriteString(v)
		i += end + 1
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// readTokenFile reads http.token_file into HTTP.Token (its first line), so
// that the token's checks apply to it; a secret stays out of the config.
func (c *Config) readTokenFile(k *configChecker) {
	if c.HTTP.TokenFile == "" {
		return
	}
	if c.HTTP.Token != "" {
		k.errf("http.token_file", "set http.token or http.token_file, not both")
		return
	}
	t, err := output.Secret("", c.HTTP.TokenFile)
	if err != nil {
		k.errf("http.token_file", "%v (a file whose first line is the token, readable by the daemon's user)", err)
		return
	}
	c.HTTP.Token = t
}
