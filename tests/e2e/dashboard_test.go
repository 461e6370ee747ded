package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/open-balena-builder/builder/tests/harness"
)

var metricName = regexp.MustCompile(`\b((?:obb|go|process)_[a-zA-Z0-9_]+)\b`)

// exprs returns every "expr" of the dashboard's panels.
func exprs(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && k == "expr" {
				out = append(out, s)
				continue
			}
			out = append(out, exprs(e)...)
		}
	case []any:
		for _, e := range x {
			out = append(out, exprs(e)...)
		}
	}
	return out
}

// The Grafana dashboard uses only metric names the builder exports (read
// from a running builder's /metrics after a push).
func TestGrafanaDashboardUsesExportedMetrics(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	if res := push(t, f, project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo dashboard\n"}), harness.PushOptions{}); res.IsError {
		t.Fatalf("push:\n%s", res.Text())
	}
	resp, err := harness.Call(http.MethodGet, env.AdminURL+"/metrics", harness.AdminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	exported := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, kind, _ := strings.Cut(name, " ")
			exported[name] = true
			if kind == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					exported[name+s] = true
				}
			}
		}
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "obb-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	used := map[string]bool{}
	for _, e := range exprs(dash) {
		for _, m := range metricName.FindAllStringSubmatch(e, -1) {
			used[m[1]] = true
		}
	}
	if len(used) < 8 {
		t.Errorf("the dashboard uses only %d metrics: %v", len(used), used)
	}
	var missing []string
	for m := range used {
		if !exported[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		var names []string
		for n := range exported {
			if strings.HasPrefix(n, "obb_") {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		t.Errorf("the dashboard uses metrics the builder does not export: %v\nexported: %v", missing, names)
	}
}
