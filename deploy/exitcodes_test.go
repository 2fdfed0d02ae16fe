package deploy

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestExitCodes: the daemon's exit code says what kind of failure stopped
// it (README "Exit codes"; the unit's RestartPreventExitStatus= lists 2, 4
// and 6): a bad flag 2, a bad configuration 6, a missing capability 4, a
// runtime failure (the HTTP port taken) 1.
func TestExitCodes(t *testing.T) {
	bin := releaseBinary(t)
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		dir = sharedDir(t) // the unprivileged case reads its config
	}
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	sink := filepath.Join(dir, "passed.ndjson")
	udp, err := net.ListenPacket("udp", "127.0.0.1:0") // a free UDP port for the plain path
	if err != nil {
		t.Fatal(err)
	}
	udpPort := udp.LocalAddr().(*net.UDPAddr).Port
	udp.Close()
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"usage", []string{"run", "--no-such-flag"}, 2, "unknown flag"},
		{"config missing", []string{"run", "-c", filepath.Join(dir, "none.yaml")}, 6, "no such file"},
		{"config invalid", []string{"run", "-c", file("bad.yaml", "listen: {ports: [9000]}\nmode: fast\n")}, 6, "bad.yaml:2"},
		{"validate invalid", []string{"validate", "-c", file("bad2.yaml", "nope: 1\n")}, 6, "nope"},
		{"runtime", []string{"run", "--pid-file", "", "-c", file("busy.yaml",
			"listen: {ports: ["+strconv.Itoa(udpPort)+"], address: 127.0.0.1}\nhttp: {listen: \""+taken.Addr().String()+"\"}\nprobes: {enabled: false}\nsinks: [{type: file, path: "+sink+", what: passed}]\n")}, 1, "address already in use"},
	}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("setpriv"); err == nil {
			cfg := file("socket.yaml", "interface: lo\nmode: socket\nlisten: {ports: [9000]}\npin: {path: \""+filepath.Join(dir, "pins")+"\"}\nhttp: {listen: \"\"}\n")
			cases = append(cases, struct {
				name string
				args []string
				code int
				msg  string
			}{"privilege", setprivArgs(nil, bin, "run", "--pid-file", "", "-c", cfg), 4, "missing capabilities: CAP_BPF (to load the XDP program)"})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			argv := append([]string{bin}, c.args...)
			if c.args[0] == "setpriv" {
				argv = c.args
			}
			cmd := exec.Command(argv[0], argv[1:]...)
			done := make(chan struct{})
			var out []byte
			var err error
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("xgate %v did not exit within 20s", c.args)
			}
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != c.code || !strings.Contains(string(out), c.msg) {
				t.Errorf("xgate %v: exit code %d (want %d), output %q (want it to contain %q)", c.args, code, c.code, out, c.msg)
			}
		})
	}
}
