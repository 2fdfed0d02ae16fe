package nats

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/xgate/xgate/gateway/sink/output"
)

// Config configures a NATS JetStream sink (the sink's Spec.NATS). Zero
// values take the defaults (Defaults). Its config keys are the sink's own:
// urls, subject, stream, create_stream, stream_subjects, max_pending,
// ack_timeout, user, password, password_file, token_file, creds_file.
type Config struct {
	URLs []string // nats://host:port (tls:// for TLS); required
	// Subject is the subject template, e.g. xgate.events.{key}; required.
	// Placeholders: {key}, {verdict}, {rule}.
	Subject string
	// Stream must exist and take the template's subjects, unless
	// CreateStream: then it is created (file storage, the server's
	// defaults otherwise) with StreamSubjects (default: the template with
	// every token that holds a placeholder as '*').
	Stream         string
	CreateStream   bool
	StreamSubjects []string
	MaxPending     int           // publishes awaiting an ack, at most (default 4096)
	AckTimeout     time.Duration // a publish without an ack this long is retried (default 5s)
	// Credentials: a user and password (or password file), a token file,
	// or a credentials file (JWT and NKey seed).
	User, Password, PasswordFile string
	TokenFile                    string
	CredsFile                    string
}

const (
	natsDefaultMaxPending = 4096
	natsDefaultAckTimeout = 5 * time.Second
	natsStartTimeout      = 10 * time.Second
	natsRetryWait         = 100 * time.Millisecond // between tries of one record
	natsMaxToken          = 256                    // bytes of a key or rule in a subject
	// natsMaxSubject bounds the subjects a template makes: the server
	// closes a connection whose protocol line (subject, reply inbox and
	// sizes) passes its max_control_line, 4 KiB by default.
	natsMaxSubject = 2048
)

// Keys are the keys only nats sinks have.
var Keys = []output.Key[Config]{
	{Name: "urls", Set: func(n *Config) bool { return len(n.URLs) > 0 }},
	{Name: "subject", Set: func(n *Config) bool { return n.Subject != "" }},
	{Name: "stream", Set: func(n *Config) bool { return n.Stream != "" }},
	{Name: "create_stream", Set: func(n *Config) bool { return n.CreateStream }},
	{Name: "stream_subjects", Set: func(n *Config) bool { return len(n.StreamSubjects) > 0 }},
	{Name: "max_pending", Set: func(n *Config) bool { return n.MaxPending != 0 }},
	{Name: "ack_timeout", Set: func(n *Config) bool { return n.AckTimeout != 0 }},
	{Name: "user", Set: func(n *Config) bool { return n.User != "" }},
	{Name: "password", Set: func(n *Config) bool { return n.Password != "" }},
	{Name: "password_file", Set: func(n *Config) bool { return n.PasswordFile != "" }},
	{Name: "token_file", Set: func(n *Config) bool { return n.TokenFile != "" }},
	{Name: "creds_file", Set: func(n *Config) bool { return n.CredsFile != "" }},
}

// Check checks n (the sink checks its tls): the first problem, as the
// config key and the message. given reports whether the config file set
// a key (see the sink's Check); nats sinks have no use for it.
func Check(n *Config, _ func(string) bool) (key, msg string) {
	if len(n.URLs) == 0 {
		return "urls", "missing: want at least one server URL, e.g. nats://127.0.0.1:4222"
	}
	for _, u := range n.URLs {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || p.Scheme != "nats" && p.Scheme != "tls" {
			return "urls", fmt.Sprintf("%q: want nats://host:port or tls://host:port", u)
		}
	}
	tmpl, err := parseSubjectTemplate(n.Subject)
	if err != nil {
		return "subject", err.Error()
	}
	if err := validStreamName(n.Stream); err != nil {
		return "stream", err.Error()
	}
	if len(n.StreamSubjects) > 0 && !n.CreateStream {
		return "stream_subjects", "only with create_stream: true (xgate does not change an existing stream)"
	}
	for _, s := range n.StreamSubjects {
		if err := validSubjectFilter(s); err != nil {
			return "stream_subjects", err.Error()
		}
	}
	if len(n.StreamSubjects) > 0 && !subjectsCover(n.StreamSubjects, tmpl.wildcard()) {
		return "stream_subjects", fmt.Sprintf("%v do not take every subject of %s", n.StreamSubjects, n.Subject)
	}
	if n.MaxPending < 0 || n.MaxPending > 1<<20 {
		return "max_pending", fmt.Sprintf("%d: want 1..%d", n.MaxPending, 1<<20)
	}
	if n.AckTimeout < 0 {
		return "ack_timeout", fmt.Sprintf("%v: want a positive duration", n.AckTimeout)
	}
	auth := 0
	if n.User != "" {
		auth++
		if (n.Password == "") == (n.PasswordFile == "") {
			return "password", "a user wants exactly one of password and password_file"
		}
	} else if n.Password != "" || n.PasswordFile != "" {
		return "user", "missing: a password goes with a user"
	}
	if n.TokenFile != "" {
		auth++
	}
	if n.CredsFile != "" {
		auth++
	}
	if auth > 1 {
		return "user", "want one of user/password, token_file and creds_file"
	}
	return "", ""
}

// Defaults fills in n's defaults.
func Defaults(n *Config) {
	if n.CreateStream && len(n.StreamSubjects) == 0 {
		if tmpl, err := parseSubjectTemplate(n.Subject); err == nil {
			n.StreamSubjects = []string{tmpl.wildcard()}
		}
	}
	n.MaxPending = cmp.Or(n.MaxPending, natsDefaultMaxPending)
	n.AckTimeout = cmp.Or(n.AckTimeout, natsDefaultAckTimeout)
}

func validStreamName(s string) error {
	if s == "" {
		return errors.New("missing: want the JetStream stream that stores the subjects")
	}
	if len(s) > 255 || strings.ContainsAny(s, " \t\r\n.*>/\\") {
		return fmt.Errorf("%q: a stream name has no whitespace, '.', '*', '>', '/' or '\\'", s)
	}
	return nil
}
