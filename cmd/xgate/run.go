package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xgate/xgate/gateway/host"

	"github.com/spf13/cobra"

	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/gateway/preflight"
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
					defer os.Remove(reloadResultPath(pidFile))
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
					read := configMtime(cfgPath) // the version of the file this reload reads
					next, err := loadConfig(nil, cfgPath, expandEnv)
					if err == nil {
						err = g.Reload(next)
					} else {
						g.ReloadFailed(err)
					}
					res := g.LastReload()
					status := "STATUS=receiving; reloaded"
					switch {
					case err != nil:
						log.Error("reload rejected; the running rules stay", "error", err)
						status = "STATUS=receiving; reload rejected, the running rules stay (see the log)"
					case len(res.RestartNeeded) > 0:
						status = "STATUS=receiving; reloaded, but " + strings.Join(res.RestartNeeded, ", ") + " need a restart"
					}
					if pidFile != "" {
						if err := writeReloadResult(reloadResultPath(pidFile), res, cfgPath, read); err != nil {
							log.Warn("cannot write the reload result; xgate reload will not see it", "error", err)
						}
					}
					_ = sdNotify("READY=1", status)
				}
			}()
			// STOPPING=1 as the stop begins; waited for, so that a quick
			// stop cannot end the process before it is sent.
			stopping := make(chan struct{})
			go func() {
				<-ctx.Done()
				_ = sdNotify("STOPPING=1", "STATUS=stopping")
				close(stopping)
			}()
			err = g.Run(ctx)
			if ctx.Err() != nil {
				<-stopping
			}
			return err
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
				out.Problems, out.Notes = preflight.CheckSetup(cfg)
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
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Tell a running gateway to re-read its configuration (SIGHUP) and wait for the outcome",
		Long: `reload sends SIGHUP to the xgate of the pid file and waits for its answer,
which the daemon writes beside the pid file (FILE.reload.json, without .pid).
Exit status: 0 when every change is in force, 3 when the rules were reloaded
but some changed keys need a restart (it names them), 6 when the file was
rejected and the running rules stay, 1 when no answer came within --wait.`,
		Example: "  sudo xgate reload\n  sudo xgate reload --pid-file /run/xgate.pid --wait 30s",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pid, err := readPid(pidFile)
			if err != nil {
				return err
			}
			path := reloadResultPath(pidFile)
			before, _ := readReloadResult(path)
			if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
				return fmt.Errorf("signal xgate (pid %d): %w", pid, err)
			}
			if wait <= 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "sent SIGHUP to xgate (pid %d); its log says whether the new rules took\n", pid)
				return nil
			}
			// The file as this call leaves it: a result of a reload that
			// read an older version (an earlier SIGHUP's, which this one
			// coalesced with) is not this call's answer.
			res, err := awaitReload(cmd.Context(), path, pid, before, configMtime(before.Config), wait,
				func() { _ = syscall.Kill(pid, syscall.SIGHUP) })
			if err != nil {
				return fmt.Errorf("sent SIGHUP to xgate (pid %d), but %w; its log says whether the new rules took", pid, err)
			}
			switch {
			case !res.Applied:
				return &configError{fmt.Errorf("reload rejected, the running rules stay: %s", res.Error)}
			case len(res.RestartNeeded) > 0:
				fmt.Fprintf(cmd.OutOrStdout(), "reloaded (pid %d); these changes need a restart: %s\n", pid, strings.Join(res.RestartNeeded, ", "))
				return &restartError{res.RestartNeeded}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "reloaded (pid %d): every change is in force\n", pid)
			return nil
		},
	}
	cmd.Flags().StringVar(&pidFile, "pid-file", defaultPidFile, "the pid file xgate run wrote")
	cmd.Flags().DurationVar(&wait, "wait", 10*time.Second, "how long to wait for the daemon's answer (0: send the signal and return)")
	return cmd
}

// restartError is a reload whose changed keys need a restart.
type restartError struct{ keys []string }

func (e *restartError) Error() string {
	return "restart needed for " + strings.Join(e.keys, ", ")
}

// reloadResult is the file the daemon writes after each reload: its pid
// tells a restarted daemon's results from the last one's.
type reloadResult struct {
	Pid int `json:"pid"`
	// Config is the file the daemon reloads, ConfigMtimeNs the
	// modification time it had when this reload read it: SIGHUPs
	// coalesce, and xgate reload takes a result only if it read the file
	// as the caller left it.
	Config        string `json:"config,omitempty"`
	ConfigMtimeNs int64  `json:"config_mtime_ns,omitempty"`
	gateway.ReloadResult
}

// configMtime is path's modification time in ns, 0 for stdin or when it
// cannot be read.
func configMtime(path string) int64 {
	if path == "" || path == "-" {
		return 0
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.ModTime().UnixNano()
}

// reloadResultPath is where the daemon of pidFile writes its reload
// results: /run/xgate.pid → /run/xgate.reload.json.
func reloadResultPath(pidFile string) string {
	return strings.TrimSuffix(pidFile, ".pid") + ".reload.json"
}

// writeReloadResult replaces path with r, atomically (a new file renamed
// over it: a symbolic link at path is replaced, never followed).
func writeReloadResult(path string, r *gateway.ReloadResult, config string, mtimeNs int64) error {
	b, err := json.Marshal(reloadResult{Pid: os.Getpid(), Config: config, ConfigMtimeNs: mtimeNs, ReloadResult: *r})
	if err != nil {
		return err
	}
	// A new file of an unpredictable name (O_EXCL): nothing put at a
	// name in advance can stand in for it or keep it from being written.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("reload result %s: %w", path, err)
	}
	tmp := f.Name()
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("reload result %s: %w", path, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err = errors.Join(err, f.Close()); err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("reload result %s: %w", path, err)
	}
	return nil
}

// readReloadResult reads the daemon's last reload result.
func readReloadResult(path string) (reloadResult, error) {
	var r reloadResult
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	return r, err
}

// awaitReload waits until the daemon pid writes a result other than
// before (another pid or sequence number) of a reload that read the config
// at least as new as mtimeNs (0: any). A newer result of an older read (a
// reload already running when the signal came) gets one more signal.
func awaitReload(ctx context.Context, path string, pid int, before reloadResult, mtimeNs int64, wait time.Duration,
	resignal func()) (reloadResult, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	resent := false
	for {
		if r, err := readReloadResult(path); err == nil && r.Pid == pid && (r.Pid != before.Pid || r.Seq != before.Seq) {
			if r.ConfigMtimeNs >= mtimeNs || mtimeNs == 0 || r.ConfigMtimeNs == 0 {
				return r, nil
			}
			if !resent {
				resent = true
				before = r
				resignal()
			}
		}
		select {
		case <-ctx.Done():
			return reloadResult{}, fmt.Errorf("no answer in %s (%s not written)", wait, path)
		case <-tick.C:
		}
	}
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
	// The daemon holds its pid file's lock: a name alone could be anyone's.
	if holder := host.PidFileHolder(path); holder != pid {
		return 0, fmt.Errorf("pid file %s names process %d, which does not hold its lock (stale pid file, or not the daemon)", path, pid)
	}
	return pid, nil
}
