package main

import (
	"errors"
	"os"
	"strings"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/bpf"
)

// Exit codes, the LSB's (which systemd also names): the unit's
// RestartPreventExitStatus= lists the ones a restart cannot fix.
const (
	exitOK        = 0
	exitFailure   = 1 // a runtime failure: a restart may help
	exitUsage     = 2 // bad flags or arguments
	exitRestart   = 3 // xgate reload: reloaded, but changed keys need a restart
	exitPrivilege = 4 // a missing capability or permission
	exitConfig    = 6 // the configuration is missing or invalid
)

// configError marks an error of reading or validating the configuration.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// usageError marks a command-line error.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// exitCode maps an error of a command to the process's exit code.
func exitCode(err error) int {
	var ce *configError
	var fe *config.FieldError
	var ue *usageError
	var re *restartError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &re):
		return exitRestart
	case errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command"):
		return exitUsage
	case errors.As(err, &ce) || errors.As(err, &fe):
		return exitConfig
	case errors.Is(err, os.ErrPermission) || errors.Is(err, bpf.ErrPermission):
		return exitPrivilege
	}
	return exitFailure
}
