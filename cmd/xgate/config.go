package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/xgate/xgate/gateway/config"

	"github.com/spf13/cobra"
)

// defaultConfig is where run and validate read the configuration without -c
// (the package installs it there).
const defaultConfig = "/etc/xgate/xgate.yaml"

// configFlags adds -c and --expand-env.
func configFlags(cmd *cobra.Command, path *string, expand *bool) {
	cmd.Flags().StringVarP(path, "config", "c", defaultConfig, "configuration file (YAML); - reads it from stdin")
	cmd.Flags().BoolVar(expand, "expand-env", false, "replace ${VAR} in configuration values with the environment's VAR (off: a ${ is an error)")
}

// loadConfig reads the configuration from path, or from stdin for "-"
// (stdin is read once: a reload of such a daemon keeps its rules and says
// so). Every error is a configError (exit code 6).
func loadConfig(stdin io.Reader, path string, expand bool) (*config.Config, error) {
	var lookup func(string) (string, bool)
	if expand {
		lookup = os.LookupEnv
	}
	var data []byte
	var err error
	name := path
	if path == "-" {
		if stdin == nil {
			return nil, &configError{errors.New("the configuration came from stdin (-c -), which cannot be read again: restart xgate to change it")}
		}
		name = "stdin"
		data, err = io.ReadAll(io.LimitReader(stdin, config.MaxSize+1))
	} else {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			data, err = io.ReadAll(io.LimitReader(f, config.MaxSize+1))
			f.Close()
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && path == defaultConfig {
			err = fmt.Errorf("%w (the default; -c names another file)", err)
		}
		return nil, &configError{fmt.Errorf("read config: %w", err)}
	}
	cfg, err := config.ParseEnv(name, data, lookup)
	if err != nil {
		return nil, &configError{err}
	}
	return cfg, nil
}

// newLogger is the daemon's logger: text (key=value, the default) or json.
func newLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, &usageError{fmt.Errorf("--log-format %q: want text or json", format)}
}
