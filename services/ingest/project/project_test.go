package project

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var pi4 = Target{AppName: "myapp", DeviceType: "raspberrypi4-64", Arch: "aarch64", Commit: "abc123"}

func TestResolve(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		dockerfile string
		wantSource string
		wantDF     string
		wantType   string
		wantBody   string
		wantErr    string
	}{
		{"plain", map[string]string{"Dockerfile": "FROM busybox"}, "", "Dockerfile", "Dockerfile", TypeStandard, "FROM busybox", ""},
		{"template wins over plain", map[string]string{"Dockerfile": "FROM x", "Dockerfile.template": "FROM %%BALENA_ARCH%%-%%BALENA_MACHINE_NAME%%"}, "", "Dockerfile.template", "Dockerfile", TypeTemplate, "FROM aarch64-raspberrypi4-64", ""},
		{"arch wins over template", map[string]string{"Dockerfile.template": "x", "Dockerfile.aarch64": "FROM %%RESIN_ARCH%%"}, "", "Dockerfile.aarch64", "Dockerfile", TypeArchSpecific, "FROM aarch64", ""},
		{"device type wins over arch", map[string]string{"Dockerfile.aarch64": "x", "Dockerfile.raspberrypi4-64": "FROM %%BALENA_SERVICE_NAME%% %%BALENA_RELEASE_HASH%% %%BALENA_APP_NAME%%"}, "", "Dockerfile.raspberrypi4-64", "Dockerfile", TypeArchSpecific, "FROM main abc123 myapp", ""},
		{"explicit", map[string]string{"Dockerfile": "x", "deploy/Dockerfile.prod": "FROM prod"}, "deploy/Dockerfile.prod", "deploy/Dockerfile.prod", "deploy/Dockerfile.prod", TypeStandard, "FROM prod", ""},
		{"explicit template", map[string]string{"Dockerfile-alt.template": "FROM %%BALENA_ARCH%%"}, "Dockerfile-alt", "Dockerfile-alt.template", "Dockerfile-alt", TypeTemplate, "FROM aarch64", ""},
		{"explicit missing", map[string]string{"Dockerfile": "x"}, "nope", "", "", "", "", `--dockerfile "nope": no such file`},
		{"explicit escapes", map[string]string{"Dockerfile": "x"}, "../Dockerfile", "", "", "", "", "must be a path inside the project"},
		{"nothing", map[string]string{"README": "x"}, "", "", "", "", "", "no Dockerfile found"},
		{"node", map[string]string{"package.json": "{}"}, "", "", "", "", "", "package.json"},
		{"compose", map[string]string{"docker-compose.yml": "services: {}"}, "", "", "", "", "", "docker-compose.yml"},
		{"both metadata dirs", map[string]string{"Dockerfile": "x", ".balena/balena.yml": "", ".resin/resin.yml": ""}, "", "", "", "", "", "both .balena/ and .resin/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			write(t, root, tt.files)
			plan, err := Resolve(root, tt.dockerfile, pi4)
			if tt.wantErr != "" {
				var pe *Error
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want a project error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := plan.Render(root, pi4); err != nil {
				t.Fatal(err)
			}
			s := plan.Services[0]
			if s.Name != "main" || s.Source != tt.wantSource || s.Dockerfile != tt.wantDF || s.ProjectType != tt.wantType || string(s.Content) != tt.wantBody {
				t.Errorf("got %+v (content %q)", s, s.Content)
			}
		})
	}
}

func TestDefaultComposition(t *testing.T) {
	c := DefaultComposition("")
	main := c["services"].(map[string]any)["main"].(map[string]any)
	if main["network_mode"] != "host" || main["build"].(map[string]any)["context"] != "." {
		t.Errorf("default composition wrong: %v", main)
	}
	if _, ok := main["build"].(map[string]any)["dockerfile"]; ok {
		t.Error("dockerfile set without --dockerfile")
	}
	if DefaultComposition("Dockerfile.alt")["services"].(map[string]any)["main"].(map[string]any)["build"].(map[string]any)["dockerfile"] != "Dockerfile.alt" {
		t.Error("--dockerfile not in composition")
	}
}
