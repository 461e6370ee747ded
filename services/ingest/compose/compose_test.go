package compose

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// secret is set in the test's environment: no composition may contain it.
const (
	secretEnv = "OBB_COMPOSE_TEST_SECRET"
	secret    = "leaked-from-the-builder"
)

// Valid projects: testdata/<dir>/composition.golden.json holds Raw (the
// release.composition), services.golden.json the Services and Warnings.
var valid = []struct {
	dir, file string
	rule      string
}{
	{"image-only", "", "image-only service (Build nil); unset command not stored as null; default network kept as compose-go adds it"},
	{"build-short", "", "build: <dir> short form; context relative; no dockerfile when not given"},
	{"build-long", "", "build long form: context cleaned, dockerfile as given, args/labels as strings, target, extra_hosts host:ip; image+build -> build.tags"},
	{"build-root", "", "build: . -> context \".\""},
	{"compose-yaml", "docker-compose.yaml", "the .yaml file name"},
	{"bind-features", "", "allowed bind mounts -> io.balena.features.* labels, removed from volumes; named volumes short syntax with :ro; tmpfs volumes -> tmpfs"},
	{"journal-partial", "", "journal-logs needs all three mounts: partial set removed, warned, no label"},
	{"short-syntax", "", "ports, devices, depends_on long -> short; extra_hosts host:ip; ports name/app_protocol/mode warned"},
	{"strings", "", "labels, environment, build.args as string maps; null -> \"\""},
	{"removed-keys", "", "container_name and expose removed with a warning; no version; null entrypoint/command removed"},
	{"interpolation", "", "no interpolation from the process environment; ${VAR:-default} applies"},
	{"env-file", "", "env_file and label_file inside the project merged, then removed"},
	{"contract", "", "image contract from io.balena.features.requires.* labels; unknown kind warned"},
	{"contract-new-fields", "", "compose fields legacy supervisors ignore -> sw.spec requirement"},
	{"private-label", "", "io.balena.private* labels warned (service and build)"},
	{"networks-volumes", "", "bridge/default network and local volume kept; project names removed"},
	{"extends-local", "", "extends within the file; YAML anchors and x- fragments"},
	{"profiles", "", "services kept whatever their profiles"},
	{"network-mode", "", "network_mode service: and volumes_from add short depends_on"},
}

func TestParseValid(t *testing.T) {
	t.Setenv(secretEnv, secret)
	for _, tc := range valid {
		t.Run(tc.dir, func(t *testing.T) {
			file := tc.file
			if file == "" {
				file = "docker-compose.yml"
			}
			dir := filepath.Join("testdata", tc.dir)
			c, err := Parse(dir, file)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			raw := marshal(t, c.Raw)
			golden(t, filepath.Join(dir, "composition.golden.json"), raw)
			golden(t, filepath.Join(dir, "services.golden.json"), marshal(t, struct {
				Services []Service
				Warnings []string
			}{c.Services, c.Warnings}))

			if bytes.Contains(raw, []byte(secret)) {
				t.Errorf("the composition holds the builder's environment")
			}
			checkComposition(t, dir, c)
		})
	}
}

// checkComposition holds what is true of every composition.
func checkComposition(t *testing.T, root string, c *Composition) {
	t.Helper()
	for _, k := range []string{"version", "name", "secrets", "configs"} {
		if _, ok := c.Raw[k]; ok {
			t.Errorf("Raw has %q", k)
		}
	}
	services, _ := c.Raw["services"].(map[string]any)
	if len(services) != len(c.Services) {
		t.Errorf("%d services in Raw, %d in Services", len(services), len(c.Services))
	}
	for i, s := range c.Services {
		if i > 0 && c.Services[i-1].Name >= s.Name {
			t.Errorf("Services not sorted: %q before %q", c.Services[i-1].Name, s.Name)
		}
		if _, ok := services[s.Name]; !ok {
			t.Errorf("service %q not in Raw", s.Name)
		}
		if s.Build == nil && s.Image == "" {
			t.Errorf("service %q: neither build nor image", s.Name)
		}
		if s.Labels == nil || s.Environment == nil {
			t.Errorf("service %q: nil labels or environment", s.Name)
		}
		if s.Build != nil {
			ctx := filepath.FromSlash(s.Build.Context)
			if s.Build.Context != "." && (!filepath.IsLocal(ctx) || strings.Contains(s.Build.Context, `\`) || filepath.Clean(ctx) != ctx) {
				t.Errorf("service %q: context %q not a clean path inside the root", s.Name, s.Build.Context)
			}
		}
	}
}

// Invalid projects: the whole message, naming the file, the service (or
// network, volume) and the key.
var invalid = []struct {
	dir, want string
}{
	{"reject-denied-service-key", `docker-compose.yml: service "web": "deploy" is not supported by balena`},
	{"reject-denied-build-key", `docker-compose.yml: service "web": "build.ssh" is not supported by balena`},
	{"reject-bind-mount", `docker-compose.yml: service "web": bind mount "/home:/home" is not allowed (only /var/run/balena-engine.sock, /var/run/docker.sock, /run/dbus, /sys, /proc, /lib/modules, /lib/firmware, /var/log/journal, /run/log/journal, /etc/machine-id)`},
	{"reject-bind-mount-relative", `docker-compose.yml: service "web": bind mount "./html:/usr/share/nginx/html:ro" is not allowed (only /var/run/balena-engine.sock, /var/run/docker.sock, /run/dbus, /sys, /proc, /lib/modules, /lib/firmware, /var/log/journal, /run/log/journal, /etc/machine-id)`},
	{"reject-remote-context-url", `docker-compose.yml: service "web": "build.context" "https://github.com/example/web.git#main": remote build contexts are not supported by balena: use a directory of the project`},
	{"reject-remote-context-git", `docker-compose.yml: service "web": "build.context" "git@github.com:example/web.git": remote build contexts are not supported by balena: use a directory of the project`},
	{"reject-context-outside", `docker-compose.yml: service "web": "build.context" "../other-project": outside the project`},
	{"reject-dockerfile-outside", `docker-compose.yml: service "web": "build.dockerfile" "../../Dockerfile": outside the project`},
	{"reject-network-driver", `docker-compose.yml: network "mesh": "driver" "overlay" is not supported by balena (only bridge or default)`},
	{"reject-network-external", `docker-compose.yml: network "outside": "external" is not supported by balena`},
	{"reject-network-attachable", `docker-compose.yml: network "shared": "attachable" is not supported by balena`},
	{"reject-network-ipv6", `docker-compose.yml: network "v6": "enable_ipv6" is not supported by balena`},
	{"reject-volume-driver", `docker-compose.yml: volume "data": "driver" "nfs" is not supported by balena (only local or default)`},
	{"reject-volume-external", `docker-compose.yml: volume "data": "external" is not supported by balena`},
	{"reject-top-level-secrets", `docker-compose.yml: top-level "secrets" is not supported by balena`},
	{"reject-top-level-configs", `docker-compose.yml: top-level "configs" is not supported by balena`},
	{"reject-service-name-invalid", `validating docker-compose.yml: services additional properties 'my web' not allowed`},
	{"reject-service-name-dash", `docker-compose.yml: service "-web": a service name must start with a letter or digit, have only letters, digits, '.', '_' and '-', and be at most 63 characters`},
	{"reject-service-name-long", `docker-compose.yml: service "a234567890123456789012345678901234567890123456789012345678901234": a service name must start with a letter or digit, have only letters, digits, '.', '_' and '-', and be at most 63 characters`},
	{"reject-no-image-no-build", `docker-compose.yml: service "web": needs "image" or "build"`},
	{"reject-include", `docker-compose.yml: "include" is not supported by balena: the composition must be this one file`},
	{"reject-extends-file", `docker-compose.yml: service "web": "extends.file" is not supported by balena: a service can only extend another service of this file`},
	{"reject-env-file-outside", `docker-compose.yml: service "web": "env_file" "../outside.env": outside the project`},
	{"reject-label-file-outside", `docker-compose.yml: service "web": "label_file" "../outside.env": outside the project`},
	{"reject-contract-semver", `docker-compose.yml: service "web": label "io.balena.features.requires.sw.supervisor": "not-valid" is not a valid semver range`},
	{"reject-contract-arch", `docker-compose.yml: service "web": label "io.balena.features.requires.arch.sw": "x86_64" is not an architecture balena knows (aarch64, rpi, amd64, armv7hf, i386)`},
	{"reject-depends-on-healthy", `docker-compose.yml: service "web": "depends_on" "db" with condition "service_healthy" is not supported by balena: a service can only wait for another to start`},
	{"reject-devices-cdi", `docker-compose.yml: service "web": "devices" "nvidia.com/gpu=all": CDI device names are not supported by balena`},
	{"reject-security-opt", `docker-compose.yml: service "web": "security_opt" "seccomp:unconfined" is not supported by balena (only no-new-privileges)`},
	{"reject-network-mode-container", `docker-compose.yml: service "web": "network_mode" "container:abc123" is not supported by balena: a service cannot share another container's namespace`},
	{"reject-anonymous-volume", `docker-compose.yml: service "web": "volumes" "/var/cache/nginx": anonymous volumes are not supported by balena: name the volume and declare it under the top-level volumes`},
	{"reject-volume-options", `docker-compose.yml: service "web": "volumes" "/data": volume options (long syntax) are not supported by balena`},
	{"reject-pids-limit", `docker-compose.yml: service "web": "pids_limit" -1 is not supported by balena: the limit cannot be negative`},
	{"reject-yaml-syntax", `failed to parse docker-compose.yml: yaml: while parsing a block mapping at line 1, column 3: line 3, column 4: did not find expected key`},
	{"reject-unknown-key", `validating docker-compose.yml: services.web: unknown key "colour"`},
	{"reject-no-services", `docker-compose.yml: no services`},
	{"reject-undefined-volume", `docker-compose.yml: service "web" refers to undefined volume data: invalid compose project`},
	{"reject-required-variable", `docker-compose.yml: error while interpolating services.web.image: required variable TAG is missing a value: TAG must be set`},
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range invalid {
		t.Run(tc.dir, func(t *testing.T) {
			_, err := Parse(filepath.Join("testdata", tc.dir), "docker-compose.yml")
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %T %v, want an *Error", err, err)
			}
			if ce.Msg != tc.want {
				t.Errorf("got  %s\nwant %s", ce.Msg, tc.want)
			}
			if strings.Contains(ce.Msg, "leaked") {
				t.Errorf("the message shows a file's content from outside the project")
			}
		})
	}
}

// Every key of balena's deny lists is refused by name.
func TestDeniedKeys(t *testing.T) {
	service := map[string]string{
		"blkio_config": "{weight: 300}", "configs": "[cfg]", "cpu_count": "2",
		"cpu_percent": "50", "cpu_period": "100000", "credential_spec": "{file: spec.json}",
		"deploy": "{replicas: 1}", "develop": "{watch: [{path: ., action: rebuild}]}",
		"external_links": "[other]", "gpus": "all", "isolation": "default", "links": "[db]",
		"logging": "{driver: json-file}", "mem_swappiness": "10", "memswap_limit": "1g",
		"oom_kill_disable": "true", "platform": "linux/arm64", "pull_policy": "always",
		"runtime": "runc", "scale": "2", "secrets": "[token]", "stdin_open": "true",
		"storage_opt": "{size: 1G}",
		"models":      "[llm]",
		"provider":    "{type: model}", "use_api_socket": "true", "pre_start": "[{image: alpine}]",
	}
	build := map[string]string{
		"additional_contexts": "{base: ./base}", "cache_to": "[type=inline]",
		"dockerfile_inline": "FROM alpine", "entitlements": "[network.host]",
		"isolation": "default", "network": "host", "no_cache": "true",
		"platforms": "[linux/amd64]", "privileged": "true", "pull": "true",
		"secrets": "[token]", "ssh": "[default]", "tags": "[web:1]", "ulimits": "{nofile: 1024}",
	}
	for _, list := range [][]string{deniedServiceKeys, deniedServiceKeysExtra} {
		for _, k := range list {
			t.Run(k, func(t *testing.T) {
				v, ok := service[k]
				if !ok {
					t.Fatalf("no test value for %q", k)
				}
				want := `docker-compose.yml: service "web": "` + k + `" is not supported by balena`
				expectError(t, "services:\n  web:\n    image: nginx\n    "+k+": "+v+"\n", want)
			})
		}
	}
	for _, k := range deniedBuildKeys {
		t.Run("build."+k, func(t *testing.T) {
			v, ok := build[k]
			if !ok {
				t.Fatalf("no test value for %q", k)
			}
			want := `docker-compose.yml: service "web": "build.` + k + `" is not supported by balena`
			expectError(t, "services:\n  web:\n    build:\n      context: .\n      "+k+": "+v+"\n", want)
		})
	}
	top := map[string]string{
		"secrets": "{file: ./token}", "configs": "{file: ./nginx.conf}",
		"models": "{model: ai/smollm2}", "jobs": "{image: alpine, triggers: {manual: true}}",
	}
	for _, k := range deniedTopLevel {
		t.Run("top-level."+k, func(t *testing.T) {
			want := `docker-compose.yml: top-level "` + k + `" is not supported by balena`
			expectError(t, "services:\n  web:\n    image: nginx\n"+k+":\n  x: "+top[k]+"\n", want)
		})
	}
}

// Symlinks do not lead a compose file, an env_file or a build context out
// of the project.
func TestSymlinksOutside(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.env"), []byte("SECRET=leaked\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "docker-compose.yml"), []byte("services: {web: {image: nginx}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, link, target, compose, want string
	}{
		{"env_file", "app.env", filepath.Join(outside, "secret.env"),
			"services:\n  web:\n    image: nginx\n    env_file: app.env\n",
			`docker-compose.yml: service "web": "env_file" "./app.env": a symlink that leads outside the project`},
		{"label_file", "app.labels", filepath.Join(outside, "secret.env"),
			"services:\n  web:\n    image: nginx\n    label_file: app.labels\n",
			`docker-compose.yml: service "web": "label_file" "./app.labels": a symlink that leads outside the project`},
		{"context", "app", outside,
			"services:\n  web:\n    build: ./app\n",
			`docker-compose.yml: service "web": "build.context" "./app": a symlink that leads outside the project`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.Symlink(tt.target, filepath.Join(root, tt.link)); err != nil {
				t.Fatal(err)
			}
			writeCompose(t, root, tt.compose)
			_, err := Parse(root, "docker-compose.yml")
			var ce *Error
			if !errors.As(err, &ce) || ce.Msg != tt.want {
				t.Fatalf("got %v\nwant %s", err, tt.want)
			}
		})
	}
	t.Run("compose file", func(t *testing.T) {
		root := t.TempDir()
		if err := os.Symlink(filepath.Join(outside, "docker-compose.yml"), filepath.Join(root, "docker-compose.yml")); err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(root, "docker-compose.yml"); err == nil {
			t.Fatal("read a compose file outside the project")
		}
	})
}

func TestParseArguments(t *testing.T) {
	root := t.TempDir()
	writeCompose(t, root, "services: {web: {image: nginx}}\n")
	for _, name := range []string{"../docker-compose.yml", "sub/docker-compose.yml", "", "."} {
		if _, err := Parse(root, name); err == nil || errors.As(err, new(*Error)) {
			t.Errorf("file %q: got %v, want a plain error", name, err)
		}
	}
	if _, err := Parse(root, "docker-compose.yaml"); err == nil || errors.As(err, new(*Error)) {
		t.Errorf("missing file: got %v, want a plain error", err)
	}
	big := "services: {web: {image: nginx}}\n" + strings.Repeat("# padding\n", MaxFileSize/10+1)
	writeCompose(t, root, big)
	expectErrorIn(t, root, `docker-compose.yml: larger than 1048576 bytes`)
}

func expectError(t *testing.T, compose, want string) {
	t.Helper()
	root := t.TempDir()
	writeCompose(t, root, compose)
	expectErrorIn(t, root, want)
}

func expectErrorIn(t *testing.T, root, want string) {
	t.Helper()
	_, err := Parse(root, "docker-compose.yml")
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %T %v, want an *Error", err, err)
	}
	if ce.Msg != want {
		t.Errorf("got  %s\nwant %s", ce.Msg, want)
	}
}

func writeCompose(t *testing.T, root, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, "docker-compose.yml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// marshal is the golden files' format: indented, keys sorted, and <, >, &
// as they are (readable version ranges).
func marshal(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	e.SetIndent("", "  ")
	if err := e.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// golden compares got with the file, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
