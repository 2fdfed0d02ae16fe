package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/xgate/xgate/gateway/host"

	"github.com/spf13/cobra"

	"github.com/xgate/xgate/gateway"
)

const defaultPidFile = "/run/xgate.pid"

func newRun() *cobra.Command {
	var cfgPath, pidFile, logFormat string
	var debug, expandEnv bool
	cmd := &cobra.Command{
		Use:   "run -c FILE",
		Short: "Run the gateway with a configuration file",
		Long: `run attaches the XDP program to the configured interface, opens the receive
path (AF_XDP sockets, an SO_REUSEPORT group per NUMA node, or plain UDP
sockets when not root), and decides every event until SIGINT or SIGTERM.
SIGHUP (or xgate reload) re-reads the file and swaps the rules atomically;
a bad file is rejected and the running rules stay.`,
		Example: "  sudo xgate run -c /etc/xgate/xgate.yaml\n  sudo xgate run -c examples/xgate.yaml --pid-file /run/xgate.pid",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, level)
			if err != nil {
				return err
			}
			cfg, err := loadConfig(cmd.InOrStdin(), cfgPath, expandEnv)
			if err != nil {
				return err
			}
			gateway.Version, gateway.Revision = version, commit
			// After setup the daemon drops every capability (DropCaps) and
			// tells systemd it is ready (Type=notify).
			// One daemon per pid file, locked before anything is attached.
			if pidFile != "" {
				pf, err := host.LockPidFile(pidFile)
				switch {
				case errors.Is(err, host.ErrLocked):
					return err
				case err != nil:
					log.Warn("cannot write the pid file; xgate reload will not find this process", "path", pidFile, "error", err)
				default:
					defer pf.Release()
				}
			}
			g, err := gateway.New(cfg, gateway.Options{Logger: log, DropCaps: true, OnReady: func() {
				if err := sdNotify("READY=1", "STATUS=receiving"); err != nil {
					log.Warn("cannot notify systemd", "error", err)
				}
			}})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					_ = sdNotify("RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", monotonicUsec()))
					next, err := loadConfig(nil, cfgPath, expandEnv)
					if err == nil {
						err = g.Reload(next)
					}
					status := "STATUS=receiving; reloaded"
					if err != nil {
						log.Error("reload rejected; the running rules stay", "error", err)
						status = "STATUS=receiving; reload rejected, the running rules stay (see the log)"
					}
					_ = sdNotify("READY=1", status)
				}
			}()
			go func() {
				<-ctx.Done()
				_ = sdNotify("STOPPING=1", "STATUS=stopping")
			}()
			return g.Run(ctx)
		},
	}
	configFlags(cmd, &cfgPath, &expandEnv)
	cmd.Flags().StringVar(&pidFile, "pid-file", defaultPidFile, "where to write the process id for xgate reload (\"\" = none)")
	cmd.Flags().BoolVar(&debug, "debug", false, "log at debug level")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log as text (key=value) or json (one object a line)")
	return cmd
}

func newValidate() *cobra.Command {
	var cfgPath string
	var checkHost, asJSON, expandEnv bool
	cmd := &cobra.Command{
		Use:   "validate -c FILE",
		Short: "Check a configuration file and compile its rules",
		Long: `validate parses the file, checks every key and value and compiles the rules,
printing every error with its file, line and key. With --host it also checks
this host: the interface exists, the privileges and kernel features the
configured mode needs, the receive path mode auto would take, and every
kernel feature with what it makes xgate do.`,
		Example: "  xgate validate -c examples/xgate.yaml\n  sudo xgate validate -c /etc/xgate/xgate.yaml --host",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.InOrStdin(), cfgPath, expandEnv)
			if err != nil {
				return err
			}
			out := validateReport{Config: cfgPath, Rules: len(cfg.Rules), Sinks: len(cfg.Sinks)}
			if checkHost {
				out.Problems, out.Notes = gateway.CheckSetup(cfg)
				out.Features = host.HostFeatures()
			}
			var err2 error
			if len(out.Problems) > 0 {
				err2 = fmt.Errorf("host checks failed:\n  %s", strings.Join(out.Problems, "\n  "))
			}
			out.OK = err2 == nil
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), out); err != nil {
					return err
				}
				return err2
			}
			for _, n := range out.Notes {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			if checkHost {
				fmt.Fprintln(cmd.OutOrStdout(), "features (xgate features --interface IF also tries the interface):")
				printFeatures(cmd.OutOrStdout(), &host.InterfaceReport{Features: out.Features})
			}
			if err2 != nil {
				return err2
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d rules, %d sinks)\n", cfgPath, len(cfg.Rules), len(cfg.Sinks))
			return nil
		},
	}
	configFlags(cmd, &cfgPath, &expandEnv)
	cmd.Flags().BoolVar(&checkHost, "host", false, "also check the interface, privileges and kernel features")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// validateReport is xgate validate --json.
type validateReport struct {
	Config   string        `json:"config"`
	OK       bool          `json:"ok"`
	Rules    int           `json:"rules"`
	Sinks    int           `json:"sinks"`
	Problems []string      `json:"problems,omitempty"`
	Notes    []string      `json:"notes,omitempty"`
	Features host.Features `json:"features,omitempty"`
}

func newReload() *cobra.Command {
	var pidFile string
	cmd := &cobra.Command{
		Use:     "reload",
		Short:   "Tell a running gateway to re-read its configuration (SIGHUP)",
		Example: "  sudo xgate reload\n  sudo xgate reload --pid-file /run/xgate.pid",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pid, err := readPid(pidFile)
			if err != nil {
				return err
			}
			if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
				return fmt.Errorf("signal xgate (pid %d): %w", pid, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sent SIGHUP to xgate (pid %d); its log says whether the new rules took\n", pid)
			return nil
		},
	}
	cmd.Flags().StringVar(&pidFile, "pid-file", defaultPidFile, "the pid file xgate run wrote")
	return cmd
}

// readPid reads a pid file and checks the process is an xgate.
func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("no pid file at %s: is xgate running (with --pid-file %s)?", path, path)
	}
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: %q is not a process id", path, strings.TrimSpace(string(b)))
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return 0, fmt.Errorf("pid file %s names process %d, which is not running (stale pid file?)", path, pid)
	}
	if name := strings.TrimSpace(string(comm)); !strings.HasPrefix(name, "xgate") {
		return 0, fmt.Errorf("pid file %s names process %d (%s), which is not xgate", path, pid, name)
	}
	return pid, nil
}
