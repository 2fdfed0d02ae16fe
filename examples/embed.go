// Package examples holds the example configuration, embedded so that
// programs (xgate demo) run the very file the documentation shows.
package examples

import "embed"

// ConfigName is the example configuration's path in the repository, for
// messages and errors.
const ConfigName = "examples/xgate.yaml"

// Config is the text of examples/xgate.yaml. Callers must not modify it.
//
//go:embed xgate.yaml
var Config []byte

// Lists are the files under examples/lists that the example's lists: name
// (relative to the example, as lists/NAME), for programs that run the
// embedded example outside the repository.
//
//go:embed lists
var Lists embed.FS
