// Package deploy holds what installs xgate on a host — the systemd unit
// (xgate.service), the packaged configuration (xgate.yaml), the Debian
// package's description (nfpm.yaml) and maintainer scripts — and the tests
// that prove them: the release build is static and carries its version, the
// daemon runs with only the capabilities it names and drops them after
// setup, the unit verifies, and the package builds, installs, starts and
// uninstalls cleanly.
package deploy
