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

func TestResolveComposeWithMetadata(t *testing.T) {
	root := t.TempDir()
	write(t, root, map[string]string{
		"docker-compose.yml": `services:
  web:
    build: ./web
    labels:
      io.balena.features.dbus: "1"
    environment:
      MODE: prod
  db:
    image: busybox
  api:
    build:
      context: .
      dockerfile: api.Dockerfile
      args:
        A: from-compose
        C: kept
      target: final
`,
		"web/Dockerfile.template": "FROM busybox\nRUN echo %%BALENA_SERVICE_NAME%% on %%BALENA_MACHINE_NAME%%\n",
		"api.Dockerfile":          "FROM busybox\n",
		".balena/balena.yml": `build-variables:
  global: [B=global]
  services:
    api: [A=from-balena-yml]
    ghost: [X=1]
build-secrets:
  services:
    api:
      - source: token
        dest: app/token
`,
		".balena/secrets/token": "s3cret",
		"balena.yml":            "type: sw.application\nversion: 1.2.3\nname: demo\n",
	})
	plan, err := Resolve(root, "", pi4)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Render(root, pi4); err != nil {
		t.Fatal(err)
	}
	got := map[string]Service{}
	for _, s := range plan.Services {
		got[s.Name] = s
	}
	if len(got) != 3 {
		t.Fatalf("services %v", plan.Services)
	}
	if db := got["db"]; db.PullImage != "busybox" || db.ProjectType != ProjectTypeExternal || len(db.Secrets) != 0 {
		t.Errorf("db = %+v", db)
	}
	web := got["web"]
	if web.Context != "web" || web.Source != "Dockerfile.template" || string(web.Content) != "FROM busybox\nRUN echo web on raspberrypi4-64\n" ||
		web.Environment["MODE"] != "prod" || web.Labels["io.balena.features.dbus"] != "1" || web.BuildArgs["B"] != "global" {
		t.Errorf("web = %+v (content %q)", web, web.Content)
	}
	api := got["api"]
	if api.Dockerfile != "api.Dockerfile" || api.Target != "final" || api.BuildArgs["A"] != "from-balena-yml" || api.BuildArgs["B"] != "global" || api.BuildArgs["C"] != "kept" {
		t.Errorf("api = %+v", api)
	}
	if len(api.Secrets) != 1 || api.Secrets[0].Dest != "app/token" || string(api.Secrets[0].Content) != "s3cret" {
		t.Errorf("api secrets = %v", api.Secrets)
	}
	if plan.Semver != "1.2.3" || plan.Contract["type"] != "sw.application" {
		t.Errorf("release contract %v semver %q", plan.Contract, plan.Semver)
	}
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], "build-variables.services.ghost") {
		t.Errorf("warnings %v", plan.Warnings)
	}
	if _, ok := plan.Composition["services"].(map[string]any)["db"]; !ok {
		t.Errorf("composition %v", plan.Composition)
	}
}

func TestResolveComposeErrorsNameTheService(t *testing.T) {
	root := t.TempDir()
	write(t, root, map[string]string{"docker-compose.yml": "services:\n  web:\n    build: ./web\n", "web/README": "no dockerfile"})
	_, err := Resolve(root, "", pi4)
	var pe *Error
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), `service "web"`) || !strings.Contains(err.Error(), "no Dockerfile found") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Resolve(root, "Dockerfile", pi4); err == nil || !strings.Contains(err.Error(), "--dockerfile cannot be used") {
		t.Errorf("--dockerfile with compose: %v", err)
	}
}
