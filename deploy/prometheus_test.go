package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestAlertRules checks the shipped alerting rules with promtool: they
// parse, and each alert fires on a case built to fire it and stays quiet
// on one built not to (deploy/prometheus/xgate-rules.test.yml).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("needs promtool (make test installs the prometheus package)")
	}
	dir := filepath.Join(repoRoot(t), "deploy", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "xgate-rules.yml"},
		{"test", "rules", "xgate-rules.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestAlertRulesNameRealMetrics catches a rule that watches a metric the
// daemon does not export (a renamed metric leaves an alert that never fires).
func TestAlertRulesNameRealMetrics(t *testing.T) {
	root := repoRoot(t)
	rules, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "xgate-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(root, "gateway", "metrics", "metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`desc\("([a-z0-9_]+)"`).FindAllStringSubmatch(string(src), -1) {
		exported["xgate_"+m[1]] = true
	}
	if len(exported) < 20 {
		t.Fatalf("found only %d metric descriptors in gateway/metrics/metrics.go: the pattern no longer matches", len(exported))
	}
	var used []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(rules), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") || strings.Contains(line, "runbook:") || strings.Contains(line, "summary:") {
			continue
		}
		for _, name := range regexp.MustCompile(`xgate_[a-z0-9_]+`).FindAllString(line, -1) {
			if !seen[name] {
				seen[name] = true
				used = append(used, name)
			}
		}
	}
	sort.Strings(used)
	if len(used) < 9 {
		t.Fatalf("rules name only %d metrics: %v", len(used), used)
	}
	for _, name := range used {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !exported[name] && !exported[base] {
			t.Errorf("rule watches %s, which the daemon does not export", name)
		}
	}
}
