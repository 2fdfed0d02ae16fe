// Package config is xgate's configuration: the types with their defaults
// (types.go), the YAML decoder that remembers the line of every key
// (decode.go), and the checks that name file, line and key for every
// problem, compiling the rules with the engine and sizing their state
// against the memory budget without allocating it (check.go). A Config
// that validates is one the gateway runs; environment interpolation is
// opt-in (env.go). Bad configurations live under testdata, one test walks
// them.
package config
