package sink

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLS (tls) configures TLS to a Kafka or NATS server. TLS is on when Enable
// or any other field is set (with the system's roots when CAFile is empty).
type TLS struct {
	Enable             bool   // enable
	CAFile             string // ca_file: PEM roots to verify the server with
	CertFile, KeyFile  string // cert_file, key_file: client certificate (both or neither)
	ServerName         string // server_name; default: the host of the address dialled
	InsecureSkipVerify bool   // insecure_skip_verify: do not verify the server (tests only)
}

// On reports whether TLS is wanted.
func (t TLS) On() bool {
	return t.Enable || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// checkTLS checks what can be checked without reading the files.
func checkTLS(t TLS) (field, msg string) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return "tls.cert_file", "want both cert_file and key_file (a client certificate), or neither"
	}
	return "", ""
}

// config reads the files and makes the client's TLS configuration.
func (t TLS) config() (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify,
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca_file %s: no PEM certificate in it", t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
