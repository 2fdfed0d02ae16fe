package deploy

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/testenv"
)

var (
	debOnce sync.Once
	debPath string
	debErr  string
)

// debPackage runs `make deb` once into this package's build directory.
func debPackage(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("needs dpkg-deb")
	}
	bin := releaseBinary(t)
	debOnce.Do(func() {
		out := filepath.Join(buildDir, "xgate.deb")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "make", "-s", "deb", "BIN="+bin, "DEB_STAGE="+filepath.Join(buildDir, "stage"), "DEB_OUT="+out)
		cmd.Dir = repoRoot(t)
		if b, err := cmd.CombinedOutput(); err != nil {
			debErr = "make deb: " + err.Error() + "\n" + string(b)
			return
		}
		debPath = out
	})
	if debErr != "" {
		t.Fatal(debErr)
	}
	return debPath
}

// debFiles is what the package installs (directories aside).
var debFiles = []string{
	"/etc/xgate/xgate.yaml",
	"/lib/systemd/system/xgate.service",
	"/usr/bin/xgate",
	"/usr/lib/sysusers.d/xgate.conf",
	"/usr/lib/xgate/xgate-lab",
	"/usr/share/bash-completion/completions/xgate",
	"/usr/share/doc/xgate/changelog.gz",
	"/usr/share/doc/xgate/copyright",
	"/usr/share/doc/xgate/examples/grafana-xgate.json",
	"/usr/share/doc/xgate/examples/lists/partners.txt",
	"/usr/share/doc/xgate/examples/lists/risk_tier.csv",
	"/usr/share/doc/xgate/examples/lists/vip.txt",
	"/usr/share/doc/xgate/examples/xgate-rules.yml",
	"/usr/share/doc/xgate/examples/xgate.yaml",
	"/usr/share/fish/vendor_completions.d/xgate.fish",
	"/usr/share/lintian/overrides/xgate",
	"/usr/share/zsh/vendor-completions/_xgate",
}

// TestDebContents: `make deb` builds a package with the binary, the unit,
// the conffile, the system user, the docs, a man page per command and the
// completions, and lintian finds no error in it.
func TestDebContents(t *testing.T) {
	deb := debPackage(t)
	out := run(t, "", "dpkg-deb", "-c", deb)
	var files, man []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || strings.HasPrefix(f[0], "d") {
			continue
		}
		p := strings.TrimPrefix(f[5], ".")
		if strings.HasPrefix(p, "/usr/share/man/man1/") {
			man = append(man, strings.TrimPrefix(p, "/usr/share/man/man1/"))
			continue
		}
		files = append(files, p)
	}
	slices.Sort(files)
	if !slices.Equal(files, debFiles) {
		t.Errorf("package files:\n  %s\nwant:\n  %s", strings.Join(files, "\n  "), strings.Join(debFiles, "\n  "))
	}
	for _, page := range []string{"xgate.1.gz", "xgate-run.1.gz", "xgate-validate.1.gz", "xgate-reload.1.gz", "xgate-stats.1.gz"} {
		if !slices.Contains(man, page) {
			t.Errorf("no man page %s (have %v)", page, man)
		}
	}
	if slices.Contains(man, "xgate-docs.1.gz") {
		t.Errorf("the hidden docs command has a man page")
	}
	if c := strings.TrimSpace(run(t, "", "dpkg-deb", "-I", deb, "conffiles")); c != "/etc/xgate/xgate.yaml" {
		t.Errorf("conffiles %q, want /etc/xgate/xgate.yaml", c)
	}
	want := strings.TrimSpace(run(t, repoRoot(t), "sh", "tools/version.sh", "--deb"))
	if v := strings.TrimSpace(run(t, "", "dpkg-deb", "-f", deb, "Version")); v != want {
		t.Errorf("package version %q, want %q", v, want)
	}
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Log("lintian not installed (make deps-test installs it): skipped")
		return
	}
	lint, _ := exec.Command("lintian", deb).CombinedOutput() // exit status 1 also for warnings
	for _, l := range strings.Split(string(lint), "\n") {
		if strings.HasPrefix(l, "E: ") {
			t.Errorf("lintian: %s", l)
		}
	}
}

// dpkgRoot installs, removes and purges packages in a directory of its own
// (dpkg --root, maintainer scripts run chroot-less with $DPKG_ROOT).
type dpkgRoot struct {
	t    *testing.T
	root string
	seed map[string]bool // what the root held before the package
}

func newDpkgRoot(t *testing.T, dir string) *dpkgRoot {
	t.Helper()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc", "usr/sbin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{
		"var/lib/dpkg/status": "",
		"etc/passwd":          "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"etc/group":           "root:x:0:\nnogroup:x:65534:\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := &dpkgRoot{t: t, root: root}
	r.seed = r.files()
	return r
}

// files lists every path under the root but dpkg's own database.
func (r *dpkgRoot) files() map[string]bool {
	out := map[string]bool{}
	_ = filepath.WalkDir(r.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(r.root, p)
		if rel == "." || strings.HasPrefix(rel, "var/lib/dpkg/") {
			return nil
		}
		out[rel] = true
		return nil
	})
	return out
}

// stray lists what the root holds beyond its seed, except the user
// database files the system user is recorded in (Debian keeps system users).
func (r *dpkgRoot) stray() []string {
	var out []string
	for p := range r.files() {
		if r.seed[p] || slices.Contains([]string{"etc/shadow", "etc/gshadow", "etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "etc/.pwd.lock"}, p) {
			continue
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func (r *dpkgRoot) dpkg(args ...string) {
	r.t.Helper()
	run(r.t, "", "dpkg", append([]string{"--root=" + r.root, "--force-script-chrootless", "--force-not-root",
		"--log=/dev/null", "--force-unsafe-io"}, args...)...)
}

// userID reads a user's uid and gid from the root's /etc/passwd.
func (r *dpkgRoot) userID(name string) (int, int) {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.root, "etc/passwd"))
	if err != nil {
		r.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) >= 7 && f[0] == name {
			uid, _ := strconv.Atoi(f[2])
			gid, _ := strconv.Atoi(f[3])
			return uid, gid
		}
	}
	r.t.Fatalf("no user %s in the root's /etc/passwd:\n%s", name, b)
	return 0, 0
}

// TestDebInstall installs the package into a root of its own, checks the
// system user, the state directory and the installed config (valid but for
// interface:, with the message that says so); starts the installed binary
// as that user with the unit's capabilities on a test host (setpriv, as
// systemd would, the config's paths moved into the root), sends traffic,
// reads /metrics, reloads, checks that no capability is left, stops it;
// then removes the package (only the conffile and the data stay) and
// purges it (nothing stays but the system user's entry).
func TestDebInstall(t *testing.T) {
	needRoot(t, "dpkg", "setpriv", "ip")
	deb := debPackage(t)
	dir := sharedDir(t)
	r := newDpkgRoot(t, dir)
	r.dpkg("--install", deb)

	uid, gid := r.userID("xgate")
	if uid == 0 || uid >= 65534 {
		t.Errorf("xgate uid %d: want a system user", uid)
	}
	st, err := os.Stat(filepath.Join(r.root, "var/lib/xgate"))
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Sys().(*syscall.Stat_t); int(s.Uid) != uid || int(s.Gid) != gid || st.Mode().Perm() != 0o750 {
		t.Errorf("/var/lib/xgate: owner %d:%d mode %v, want %d:%d 0750", s.Uid, s.Gid, st.Mode().Perm(), uid, gid)
	}
	bin := filepath.Join(r.root, "usr/bin/xgate")
	conf := filepath.Join(r.root, "etc/xgate/xgate.yaml")
	out, err := exec.Command(bin, "validate", "-c", conf).CombinedOutput()
	if code := exitOf(err); code != 6 || !strings.Contains(string(out), "interface: empty: set the NIC to attach to") ||
		strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Errorf("installed config: exit %d, %q; want exit 6 and only the interface to set", code, out)
	}

	// Start it as the unit would.
	pair := testenv.New(t, testenv.Options{RxQueues: 1})
	unit := unitKeys(t, filepath.Join(r.root, "lib/systemd/system/xgate.service"))
	if unit["User"][0] != "xgate" {
		t.Fatalf("unit User=%v", unit["User"])
	}
	var caps []string
	for _, c := range strings.Fields(unit["AmbientCapabilities"][0]) {
		caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	pins := mountBPFFS(t, dir)
	if err := os.Chown(pins, uid, gid); err != nil { // the unit's ExecStartPre
		t.Fatal(err)
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	yml := strings.Replace(string(b), `interface: ""`, "interface: "+pair.B.Link, 1)
	yml = strings.ReplaceAll(yml, "/var/lib/xgate/", filepath.Join(r.root, "var/lib/xgate")+"/")
	yml = strings.Replace(yml, "path: /sys/fs/bpf/xgate", "path: "+filepath.Join(pins, "xgate"), 1)
	yml = strings.Replace(yml, "listen:\n  ports: [9000]", "queues: 1\nafxdp: {frame_size: 2048, rx_ring: 1024, fill_ring: 1024, frames: 2048}\nlisten:\n  ports: [9000]", 1)
	runConf := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(runConf, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(runConf); err != nil {
		t.Fatalf("the installed config with an interface: %v", err)
	}
	argv := []string{"setpriv", "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups",
		"--inh-caps=-all,+" + strings.Join(caps, ",+"), "--ambient-caps=-all,+" + strings.Join(caps, ",+"),
		"--bounding-set=-all,+" + strings.Join(caps, ",+"), "--", bin, "run", "-c", runConf, "--pid-file", ""}
	d := startDaemon(t, nil, append([]string{"ip", "netns", "exec", pair.B.NS}, argv...)...)
	d.WaitReceiving(20 * time.Second)
	sendEvents(t, pair, 9000, 1, "click", 30)
	waitCount(t, filepath.Join(r.root, "var/lib/xgate/events.ndjson"), 1, 30)
	waitMetric(t, pair.B, `xgate_events_total{verdict="pass"}`, 30)
	if err := syscall.Kill(d.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.WaitLogged("reloaded rules", 5*time.Second)
	ps := procStatus(t, "/proc/"+strconv.Itoa(d.Pid)+"/status")
	if ps["CapEff"] != "0000000000000000" || ps["NoNewPrivs"] != "1" || !strings.HasPrefix(ps["Uid"], strconv.Itoa(uid)) {
		t.Errorf("installed daemon after setup: Uid %s CapEff %s NoNewPrivs %s", ps["Uid"], ps["CapEff"], ps["NoNewPrivs"])
	}
	if err := syscall.Kill(d.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	// Remove: the conffile and the data stay; purge: nothing stays.
	r.dpkg("--remove", "xgate")
	if got, want := r.stray(), []string{"etc/xgate", "etc/xgate/xgate.yaml", "var/lib/xgate", "var/lib/xgate/alerts.ndjson", "var/lib/xgate/events.ndjson"}; !slices.Equal(got, want) {
		t.Errorf("after remove: %v, want %v", got, want)
	}
	r.dpkg("--purge", "xgate")
	if got := r.stray(); len(got) > 0 {
		t.Errorf("after purge, files left: %v", got)
	}
}

func exitOf(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
