// Package boundary fails the build when the code's import structure breaks
// the architecture: services meet only through their proto clients (cmd/obb
// is the one composition root), plugins see the plugin SDK and nothing of
// the services, platform is below both, and only the release service (and
// the root that wires it) holds the clients of open-balena-api, its registry
// token endpoint and the delta server.
package boundary

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/open-balena-builder/builder/tests/harness"
)

const mod = "github.com/open-balena-builder/builder/"

// patterns are the production code: the builder's module and its API
// (tests/ and tools/ aside). internal/apistandin is a test double: it
// imports nothing of the builder.
var patterns = []string{"./...", "./proto/..."}

// engineLibrary is the Engine-API executor the Docker plugins are made of;
// no plugin may import another plugin.
const engineLibrary = mod + "plugins/engine"

// part is "services/ingest", "plugins/sdk", "platform", "proto", "cmd/obb".
func part(pkg string) string {
	rel := strings.TrimPrefix(pkg, mod)
	seg := strings.Split(rel, "/")
	switch seg[0] {
	case "services", "plugins", "cmd":
		if len(seg) > 1 {
			return seg[0] + "/" + seg[1]
		}
	}
	return seg[0]
}

// violation says why pkg may not import imp ("" when it may).
func violation(pkg, imp string) string {
	if !strings.HasPrefix(imp, mod) {
		return ""
	}
	from, to := part(pkg), part(imp)
	if from == to {
		return ""
	}
	switch {
	case from == "proto":
		return "proto imports nothing of the builder"
	case from == "platform" && to != "proto":
		return "platform is below services and plugins"
	case strings.HasPrefix(from, "services/") && strings.HasPrefix(to, "services/"):
		return "a service meets another only through its proto client"
	case strings.HasPrefix(from, "services/") && strings.HasPrefix(to, "plugins/") && to != "plugins/sdk":
		return "a service runs plugins through the SDK, never their code"
	case strings.HasPrefix(from, "plugins/") && strings.HasPrefix(to, "services/"):
		return "a plugin sees no service"
	case strings.HasPrefix(from, "plugins/") && strings.HasPrefix(to, "plugins/") && to != "plugins/sdk" &&
		!(imp == engineLibrary || strings.HasPrefix(imp, engineLibrary+"/")):
		return "a plugin builds on the SDK (and the engine library), not on another plugin"
	case strings.HasPrefix(from, "plugins/") && to == "cmd/obb", strings.HasPrefix(from, "services/") && to == "cmd/obb":
		return "nothing imports the composition root"
	case to == "internal" && from != "internal":
		return "the API stand-in is for tests only"
	case strings.HasPrefix(from, "services/") && (imp == mod+"platform/config" || strings.HasPrefix(imp, mod+"platform/config/")):
		return "a service gets what it needs in its own Config (cmd/obb reads the configuration)"
	}
	// The API, token endpoint and delta clients: the release service and
	// the root that wires it only.
	for _, c := range []string{mod + "services/release/openbalena", mod + "services/release/delta"} {
		if (imp == c || strings.HasPrefix(imp, c+"/")) && from != "services/release" && from != "cmd/obb" {
			return "only the release service talks to open-balena-api and the delta server"
		}
	}
	return ""
}

func TestImportBoundaries(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", append([]string{"list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}"}, patterns...)...)
	cmd.Dir = root
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, errb.String())
	}
	pkgs := 0
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		pkgs++
		for _, imp := range f[1:] {
			if why := violation(f[0], imp); why != "" {
				t.Errorf("%s imports %s: %s", strings.TrimPrefix(f[0], mod), strings.TrimPrefix(imp, mod), why)
			}
		}
	}
	if pkgs < 40 {
		t.Errorf("go list saw only %d packages", pkgs)
	}
}

// The rules themselves, on imports that must and must not pass.
func TestViolation(t *testing.T) {
	tests := []struct {
		pkg, imp string
		bad      bool
	}{
		{"services/ingest", "services/scheduler", true},
		{"services/ingest/gateway", "services/ingest/upload", false},
		{"services/ingest", "services/release/openbalena", true},
		{"services/ingest", "proto/builder/ingest/v1", false},
		{"services/executor", "plugins/sdk", false},
		{"services/executor", "plugins/engine", true},
		{"plugins/ssh-docker/driver", "plugins/engine", false},
		{"plugins/ssh-docker/driver", "plugins/docker-tcp", true},
		{"plugins/buildkit/driver", "plugins/ssh-docker/driver", true},
		{"plugins/buildkit/driver", "services/release", true},
		{"platform/hub", "services/ingest", true},
		{"platform/rpc", "proto/builder/build/v1", false},
		{"proto/builder/build/v1", "platform/hub", true},
		{"cmd/obb", "services/release/openbalena", false},
		{"services/release", "services/release/delta", false},
		{"services/scheduler", "cmd/obb", true},
		{"services/ingest", "github.com/other/thing", false},
		{"services/release", "internal/apistandin", true},
		{"services/executor", "platform/config", true},
		{"cmd/obb", "platform/config", false},
	}
	for _, tt := range tests {
		imp := tt.imp
		if !strings.Contains(imp, ".") {
			imp = mod + imp
		}
		if got := violation(mod+tt.pkg, imp) != ""; got != tt.bad {
			t.Errorf("violation(%s, %s) = %v, want %v", tt.pkg, tt.imp, got, tt.bad)
		}
	}
}
