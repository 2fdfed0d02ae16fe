package deploy

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLicenses: the MIT license covers the Go code, bpf/LICENSE the BPF C
// as MIT OR GPL-2.0-only, which is what every program's license section
// ("Dual MIT/GPL") tells the kernel; a C file with another license string
// would need another license file.
func TestLicenses(t *testing.T) {
	root := repoRoot(t)
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if l := read("LICENSE"); !strings.HasPrefix(l, "MIT License") || !strings.Contains(l, "bpf/LICENSE") {
		t.Errorf("LICENSE: want the MIT license pointing at bpf/LICENSE for the C")
	}
	if l := read("bpf/LICENSE"); !strings.Contains(l, "SPDX-License-Identifier: MIT OR GPL-2.0-only") {
		t.Errorf("bpf/LICENSE: want SPDX MIT OR GPL-2.0-only")
	}
	if l := read("bpf/LICENSE.GPL-2.0"); !strings.Contains(l, "GNU GENERAL PUBLIC LICENSE") || !strings.Contains(l, "Version 2, June 1991") {
		t.Errorf("bpf/LICENSE.GPL-2.0: not the GPL version 2")
	}
	cs, _ := filepath.Glob(filepath.Join(root, "bpf", "*.c"))
	if len(cs) == 0 {
		t.Fatal("no BPF C files found")
	}
	re := regexp.MustCompile(`SEC\("license"\)\s*=\s*"([^"]*)"`)
	for _, c := range cs {
		b, err := os.ReadFile(c)
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindSubmatch(b)
		if m == nil {
			t.Errorf("%s: no license section", filepath.Base(c))
			continue
		}
		if string(m[1]) != "Dual MIT/GPL" {
			t.Errorf("%s: license %q, bpf/LICENSE covers \"Dual MIT/GPL\"", filepath.Base(c), m[1])
		}
	}
	if cl := read("CHANGELOG.md"); !strings.Contains(cl, "\n## [0.2.0]") {
		t.Errorf("CHANGELOG.md has no 0.2.0 entry")
	}
}

// TestVersionScript runs tools/version.sh in a scratch repository through
// a release's life: before any tag, on the tag, after it, with changes;
// and checks that the Debian versions sort in that order.
func TestVersionScript(t *testing.T) {
	root := repoRoot(t)
	script := filepath.Join(root, "tools", "version.sh")
	dir := t.TempDir()
	git := func(args ...string) string {
		return strings.TrimSpace(run(t, dir, "git", append([]string{"-c", "user.name=t", "-c", "user.email=t@t",
			"-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...))
	}
	version := func(deb bool) string {
		args := []string{script}
		if deb {
			args = append(args, "--deb")
		}
		return strings.TrimSpace(run(t, dir, "sh", args...))
	}
	// Not a git checkout: the CHANGELOG's newest release.
	if err := os.WriteFile(filepath.Join(dir, "CHANGELOG.md"), []byte("# Changelog\n\n## [Unreleased]\n\n## [0.2.0]\n\n## [0.1.0]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := version(false); v != "v0.2.0-dev" {
		t.Errorf("outside git: %q, want v0.2.0-dev", v)
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-qm", "one")
	h := git("rev-parse", "--short=7", "HEAD")
	var debs []string
	check := func(what, want, wantDeb string) {
		t.Helper()
		if v := version(false); v != want {
			t.Errorf("%s: %q, want %q", what, v, want)
		}
		d := version(true)
		if d != wantDeb {
			t.Errorf("%s: deb %q, want %q", what, d, wantDeb)
		}
		debs = append(debs, d)
	}
	check("no tag", "v0.2.0-dev+g"+h, "0.2.0~dev+g"+h)
	git("tag", "v0.2.0")
	check("on the tag", "v0.2.0", "0.2.0")
	if err := os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", "x")
	git("commit", "-qm", "two")
	h = git("rev-parse", "--short=7", "HEAD")
	check("after the tag", "v0.2.0-1-g"+h, "0.2.0+1.g"+h)
	if err := os.WriteFile(filepath.Join(dir, "x"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("changed", "v0.2.0-1-g"+h+"-dirty", "0.2.0+1.g"+h+".dirty")
	if _, err := exec.LookPath("dpkg"); err == nil {
		for i := 1; i < len(debs); i++ {
			if err := exec.Command("dpkg", "--compare-versions", debs[i-1], "lt", debs[i]).Run(); err != nil {
				t.Errorf("Debian versions out of order: %s is not before %s", debs[i-1], debs[i])
			}
		}
	}
}

// TestStaticBuild: `make build` gives a static executable (no interpreter,
// no shared libraries) that reports the version tools/version.sh derives.
func TestStaticBuild(t *testing.T) {
	bin := releaseBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a %v program header: not static", bin, p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", bin, libs)
	}
	if _, err := exec.LookPath("ldd"); err == nil {
		out, _ := exec.Command("ldd", bin).CombinedOutput() // ldd exits 1 for a static binary
		if !strings.Contains(string(out), "not a dynamic executable") {
			t.Errorf("ldd %s: %q, want \"not a dynamic executable\"", bin, out)
		}
	}
	want := strings.TrimSpace(run(t, repoRoot(t), "sh", "tools/version.sh"))
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out := run(t, "", bin, args...)
		if !strings.HasPrefix(out, "xgate "+want+" (commit ") {
			t.Errorf("xgate %s: %q, want the version %s", args[0], out, want)
		}
	}
}

// TestReadmeInstall: the README's "Install on a host" comes next to the
// quick start and names what the unit grants and prevents.
func TestReadmeInstall(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, "\n## Install on a host\n"), strings.Index(s, "\n## Running the gateway\n")
	if i < 0 || j < i || strings.Index(s, "\n## Quick start\n") > i {
		t.Fatal("README: want \"## Install on a host\" after Quick start, before Running the gateway")
	}
	sec := s[i:j]
	for _, c := range unitCaps {
		if !strings.Contains(sec, "CAP_"+strings.ToUpper(c)) {
			t.Errorf("the install section does not name CAP_%s", strings.ToUpper(c))
		}
	}
	for _, w := range []string{"RestartPreventExitStatus=2 4 6", "CapEff:", "make deb", "apt purge", "token_file", "--expand-env", "NO_COLOR"} {
		if !strings.Contains(sec, w) {
			t.Errorf("the install section does not mention %q", w)
		}
	}
	if !strings.Contains(s, "Exit codes") || !strings.Contains(s, "6 the\nconfiguration is missing or invalid") {
		t.Errorf("README: the exit codes are not documented")
	}
}
