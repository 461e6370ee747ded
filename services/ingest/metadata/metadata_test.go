package metadata

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Every secret file and password in testdata contains one of these.
var sentinels = []string{"S3CR3T", "PA55W0RD"}

// project copies testdata/<name> (if it exists) into a fresh directory
// and returns its path; setup may then add generated files.
func project(t *testing.T, name string, setup func(t *testing.T, root string)) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "project")
	src := filepath.Join("testdata", name)
	if _, err := os.Stat(src); err == nil {
		if err := os.CopyFS(root, os.DirFS(src)); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(t, root)
	}
	return root
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

type loadCase struct {
	name    string
	setup   func(t *testing.T, root string)
	check   func(t *testing.T, m *Metadata)
	wantErr []string // substrings of the *Error message; nil: success
}

func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("%s = %s, want %s", what, g, w)
	}
}

// secretsOf shows a secret list as dest → content.
func secretsOf(list []Secret) map[string]string {
	out := map[string]string{}
	for _, s := range list {
		out[s.Dest] = string(s.Content)
	}
	return out
}

var loadCases = []loadCase{
	// --- no metadata ---
	{name: "none", check: func(t *testing.T, m *Metadata) {
		eq(t, "For(main)", m.Variables.For("main"), map[string]string{})
		if len(m.Secrets.For("main")) != 0 || m.RegistryAuth != nil || m.Contract != nil || m.Semver != "" {
			t.Errorf("got %v", m)
		}
		if m.RegistryConfigJSON() != "" {
			t.Error("RegistryConfigJSON without registry secrets")
		}
	}},
	{name: "empty-balena-yml", check: func(t *testing.T, m *Metadata) {
		eq(t, "For(main)", m.Variables.For("main"), map[string]string{})
	}},

	// --- metadata folder and file names ---
	{name: "both-dirs", wantErr: []string{"both .balena/ and .resin/"}},
	{name: "resin-cli-registry", wantErr: []string{"both .balena/ and .resin/", "rename .resin/ to .balena/"}},
	{name: "metadata-not-folder", wantErr: []string{".balena must be a folder"}},
	{name: "two-build-files", wantErr: []string{"several build metadata files: .balena/balena.yml, .balena/balena.json"}},
	{name: "resin-dir", check: func(t *testing.T, m *Metadata) {
		eq(t, "For(main)", m.Variables.For("main"), map[string]string{"FOO": "resin"})
	}},
	{name: "balena-json", check: func(t *testing.T, m *Metadata) {
		eq(t, "For(web)", m.Variables.For("web"), map[string]string{"FOO": "json", "BAR": "json"})
	}},
	{name: "balena-yaml", check: func(t *testing.T, m *Metadata) {
		eq(t, "For(main)", m.Variables.For("main"), map[string]string{"FOO": "yaml"})
	}},
	{name: "metadata-bad-yaml", wantErr: []string{".balena/balena.yml: not valid YAML"}},

	// --- build-variables ---
	{name: "vars-list", check: func(t *testing.T, m *Metadata) {
		eq(t, "For(web)", m.Variables.For("web"), map[string]string{"FOO": "global", "EMPTY": "", "WITH_EQ": "a=b", "BAR": "web"})
		eq(t, "For(db)", m.Variables.For("db"), map[string]string{"FOO": "global", "EMPTY": "", "WITH_EQ": "a=b"})
	}},
	{name: "vars-map", check: func(t *testing.T, m *Metadata) {
		eq(t, "For(web)", m.Variables.For("web"), map[string]string{"FOO": "global", "EMPTY": "", "BAR": "web"})
	}},
	{name: "vars-override", check: func(t *testing.T, m *Metadata) {
		eq(t, "For(web)", m.Variables.For("web"), map[string]string{"FOO": "web", "BAR": "global"})
		eq(t, "For(db)", m.Variables.For("db"), map[string]string{"FOO": "global", "BAR": "global"})
		eq(t, "For(other)", m.Variables.For("other"), map[string]string{"FOO": "global", "BAR": "global"})
	}},
	{name: "vars-not-kv", wantErr: []string{`.balena/balena.yml: build-variables.global[2]: "BAZ" is not KEY=VALUE`}},
	{name: "vars-not-string", wantErr: []string{`.balena/balena.yml: build-variables.services.web.PORT: must be a string, not a number`}},
	{name: "vars-bad-shape", wantErr: []string{`build-variables: must be a mapping with global and/or services, not a list`}},
	{name: "vars-unknown-key", wantErr: []string{`build-variables.service: unknown key`}},

	// --- build-secrets ---
	{name: "secrets-subdirs", check: func(t *testing.T, m *Metadata) {
		eq(t, "For(web)", secretsOf(m.Secrets.For("web")), map[string]string{
			"tls/cert.pem": "S3CR3T-cert", "db.key": "S3CR3T-web-db-key", "web/cert.pem": "S3CR3T-cert"})
		eq(t, "For(db)", secretsOf(m.Secrets.For("db")), map[string]string{
			"db.key": "S3CR3T-global-db-key", "tls/cert.pem": "S3CR3T-cert"})
		// Order: global (minus overridden), then the service's own.
		var dests []string
		for _, s := range m.Secrets.For("web") {
			dests = append(dests, s.Dest)
		}
		eq(t, "For(web) order", dests, []string{"tls/cert.pem", "db.key", "web/cert.pem"})
		if m.Secrets.Empty() {
			t.Error("Empty() with secrets")
		}
	}},
	{name: "secret-missing", wantErr: []string{`.balena/balena.yml: build-secrets.services.web[0].source: "db.key" not found in .balena/secrets/`}},
	{name: "secret-missing-folder", setup: func(t *testing.T, root string) {
		writeFile(t, filepath.Join(root, ".balena/balena.yml"), []byte("build-secrets: {global: [{source: a, dest: a}]}\n"))
	}, wantErr: []string{`build-secrets.global[0].source: "a" not found in .balena/secrets/`}},
	{name: "secret-source-escape", wantErr: []string{`build-secrets.global[0].source: "../balena.yml" must stay inside the secrets folder`}},
	{name: "secret-source-absolute", wantErr: []string{`build-secrets.global[0].source: "/etc/passwd" must be a path relative to the secrets folder`}},
	{name: "secret-dest-escape", wantErr: []string{`build-secrets.global[0].dest: "../../etc/cron.d/evil" must stay inside /run/secrets/`}},
	{name: "secret-dest-absolute", wantErr: []string{`build-secrets.global[0].dest: "/run/secrets/db.key" must be a path relative to /run/secrets/`}},
	{name: "secret-is-dir", wantErr: []string{`build-secrets.global[0].source: .balena/secrets/tls: is a folder`}},
	{name: "secret-bad-entry", wantErr: []string{
		`build-secrets.global[0].dest: missing`,
		`build-secrets.global[1].destination: unknown key`,
		`build-secrets.global[2]: must be a mapping with source and dest, not a string`,
	}},
	{name: "secret-dup-dest", wantErr: []string{`build-secrets.global[1].dest: "same" is already the dest of build-secrets.global[0]`}},
	{name: "secret-dest-conflict", wantErr: []string{`build-secrets.global[0].dest: "certs" is also used as a folder by build-secrets.services.web[0].dest`}},
	{name: "secret-oversized", setup: func(t *testing.T, root string) {
		writeFile(t, filepath.Join(root, ".balena/secrets/big.bin"), bytes.Repeat([]byte("S3CR3T-"), MaxSecretSize/7+1))
	}, wantErr: []string{`build-secrets.global[0].source: .balena/secrets/big.bin: is 1.0 MiB, over the 1 MiB limit`}},
	{name: "secret-at-limit", setup: func(t *testing.T, root string) {
		writeFile(t, filepath.Join(root, ".balena/balena.yml"), []byte("build-secrets: {global: [{source: big.bin, dest: big.bin}]}\n"))
		writeFile(t, filepath.Join(root, ".balena/secrets/big.bin"), bytes.Repeat([]byte("S"), MaxSecretSize))
	}, check: func(t *testing.T, m *Metadata) {
		if len(m.Secrets.Global) != 1 || len(m.Secrets.Global[0].Content) != MaxSecretSize {
			t.Errorf("got %v", m.Secrets.Global)
		}
	}},
	{name: "secret-too-many", setup: func(t *testing.T, root string) {
		var b strings.Builder
		b.WriteString("build-secrets:\n  global:\n")
		for i := range MaxSecrets + 1 {
			fmt.Fprintf(&b, "    - {source: s.key, dest: s%d}\n", i)
		}
		writeFile(t, filepath.Join(root, ".balena/balena.yml"), []byte(b.String()))
		writeFile(t, filepath.Join(root, ".balena/secrets/s.key"), []byte("S3CR3T"))
	}, wantErr: []string{"build-secrets: 101 secrets, over the limit of 100"}},
	{name: "secret-symlink-escape", setup: func(t *testing.T, root string) {
		outside := filepath.Join(filepath.Dir(root), "outside.key")
		writeFile(t, outside, []byte("S3CR3T-outside"))
		symlink(t, outside, filepath.Join(root, ".balena/secrets/link"))
	}, wantErr: []string{`build-secrets.global[0].source: .balena/secrets/link: cannot be read: path escapes from parent`}},
	{name: "secret-symlink-inside", setup: func(t *testing.T, root string) {
		// Inside the project but outside .balena/secrets/.
		symlink(t, "../balena.yml", filepath.Join(root, ".balena/secrets/link"))
	}, wantErr: []string{`.balena/secrets/link: cannot be read: path escapes from parent`}},

	// --- registry secrets ---
	{name: "registry-json", check: func(t *testing.T, m *Metadata) {
		eq(t, "RegistryAuth", m.RegistryAuth, map[string]RegistryCredential{
			DockerHubKey:             {"hubuser", "PA55W0RD-hub"},
			"my-registry.local:5000": {"localuser", "PA55W0RD-local"},
		})
	}},
	{name: "registry-yml", check: func(t *testing.T, m *Metadata) {
		eq(t, "RegistryAuth", m.RegistryAuth, map[string]RegistryCredential{
			DockerHubKey: {"hubuser", "PA55W0RD-hub"},
			"ghcr.io":    {"ghuser", "PA55W0RD-gh"},
		})
	}},
	{name: "registry-hub-keys", check: func(t *testing.T, m *Metadata) {
		// "", index.docker.io and https://docker.io/ are all Docker Hub: "" wins.
		eq(t, "RegistryAuth", m.RegistryAuth, map[string]RegistryCredential{DockerHubKey: {"empty-key", "PA55W0RD-empty"}})
	}},
	{name: "registry-hub-canonical", check: func(t *testing.T, m *Metadata) {
		eq(t, "RegistryAuth", m.RegistryAuth, map[string]RegistryCredential{DockerHubKey: {"canonical", "PA55W0RD-canonical"}})
	}},
	{name: "registry-precedence", check: func(t *testing.T, m *Metadata) {
		// .json and .yml: the .yml wins, as in @balena/compose.
		eq(t, "RegistryAuth", m.RegistryAuth, map[string]RegistryCredential{"reg.example.com": {"from-yml", "PA55W0RD-yml"}})
	}},
	{name: "registry-bad-type", wantErr: []string{`.balena/registry-secrets.yml: ["ghcr.io"].password: must be a string, not a number`}},
	{name: "registry-unknown-key", wantErr: []string{`.balena/registry-secrets.json: ["ghcr.io"].email: unknown key`}},
	{name: "registry-bad-yaml", wantErr: []string{`.balena/registry-secrets.yml: not valid YAML`}},
	{name: "registry-bad-json", wantErr: []string{`.balena/registry-secrets.json: not valid JSON at line 1, column 58`}},
	{name: "registry-bad-shape", wantErr: []string{`.balena/registry-secrets.json: must be a mapping of registry hosts to {username, password}, not a list`}},
	{name: "registry-space-key", wantErr: []string{`["my registry"]: a registry address cannot contain spaces`}},

	// --- release contract ---
	{name: "contract-valid", check: func(t *testing.T, m *Metadata) {
		eq(t, "Semver", m.Semver, "1.2.3")
		eq(t, "Contract", m.Contract, map[string]any{
			"name": "My fleet", "type": "sw.application", "version": "1.2.3", "description": "A test",
			"data": map[string]any{"defaultDeviceType": "raspberrypi4-64", "supportedDeviceTypes": []any{"raspberrypi4-64", "intel-nuc"}, "count": 3},
		})
		if n, ok := m.Contract["data"].(map[string]any)["count"].(json.Number); !ok || n != "3" {
			t.Errorf("count = %#v, want json.Number(3)", m.Contract["data"].(map[string]any)["count"])
		}
	}},
	{name: "contract-block-json", check: func(t *testing.T, m *Metadata) {
		eq(t, "Semver", m.Semver, "2.0.0-rc.1+build.5")
		eq(t, "Contract", m.Contract, map[string]any{"type": "sw.block", "version": "v2.0.0-rc.1+build.5", "data": map[string]any{"n": 10}})
	}},
	{name: "contract-no-version", check: func(t *testing.T, m *Metadata) {
		eq(t, "Semver", m.Semver, "")
		eq(t, "Contract", m.Contract, map[string]any{"type": "sw.application", "name": "unversioned"})
	}},
	{name: "contract-bad-type", wantErr: []string{`balena.yml: type: "sw.app" is not an allowed release type (sw.application, sw.block)`}},
	{name: "contract-no-type", wantErr: []string{`balena.yml: type: missing`}},
	{name: "contract-bad-semver", wantErr: []string{`balena.yml: version: "1.2" is not a valid semver`}},
	{name: "contract-semver-number", wantErr: []string{`balena.yml: version: must be a semver string such as "1.2.3", not a number`}},
	{name: "contract-leading-zero", wantErr: []string{`balena.yml: version: "01.2.3" is not a valid semver: major: "01" has a leading zero`}},
	{name: "contract-two-files", wantErr: []string{"several release contract files at the project root: balena.yml, balena.json"}},
	{name: "contract-not-mapping", wantErr: []string{"balena.yml: the release contract must be a mapping"}},
}

func TestLoad(t *testing.T) {
	for _, tc := range loadCases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Load(project(t, tc.name, tc.setup))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				tc.check(t, m)
				return
			}
			var ue *Error
			if !errors.As(err, &ue) {
				t.Fatalf("Load error = %v (%T), want *Error", err, err)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(ue.Msg, want) {
					t.Errorf("error:\n%s\nwant it to contain:\n%s", ue.Msg, want)
				}
			}
		})
	}
}

// Every fixture is used by a case, so none is left untested.
func TestFixturesUsed(t *testing.T) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tc := range loadCases {
		names[tc.name] = true
	}
	for _, e := range entries {
		if !names[e.Name()] {
			t.Errorf("testdata/%s has no case in loadCases", e.Name())
		}
	}
}

// No output of the package — String, fmt in any verb, slog, JSON, error
// messages — shows a secret's content or a password.
func TestNoLeaks(t *testing.T) {
	for _, tc := range loadCases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Load(project(t, tc.name, tc.setup))
			var outs []string
			if err != nil {
				outs = append(outs, err.Error(), fmt.Sprintf("%+v", err))
			} else {
				outs = append(outs, renderings(t, m)...)
			}
			for _, out := range outs {
				for _, s := range leakForms() {
					if strings.Contains(out, s) {
						t.Fatalf("output leaks %q:\n%s", s, out)
					}
				}
			}
		})
	}
}

// leakForms are the sentinels as text, hex (%x), decimal bytes (%d, %v of
// a []byte) and base64 (JSON of a []byte; secret files start with one).
func leakForms() []string {
	var forms []string
	for _, s := range sentinels {
		dec := strings.Trim(fmt.Sprint([]byte(s)), "[]")
		forms = append(forms, s, hex.EncodeToString([]byte(s)), strings.ToUpper(hex.EncodeToString([]byte(s))), dec,
			strings.ReplaceAll(dec, " ", ","), base64.StdEncoding.EncodeToString([]byte(s))[:8])
	}
	return forms
}

func renderings(t *testing.T, m *Metadata) []string {
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, m), fmt.Sprintf(verb, *m),
			fmt.Sprintf(verb, m.Secrets), fmt.Sprintf(verb, m.Secrets.For("web")), fmt.Sprintf(verb, m.RegistryAuth))
	}
	outs = append(outs, m.String(), fmt.Sprint(m.Secrets.Global), fmt.Sprint(slices.Collect(maps.Values(m.RegistryAuth))))
	for _, v := range []any{m, *m, m.Secrets, m.RegistryAuth} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(b))
	}
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		slog.New(h).Info("metadata", "m", m, "secrets", m.Secrets, "first", m.Secrets.For("web"), "auth", m.RegistryAuth)
	}
	return append(outs, buf.String())
}

func TestStringOfSecrets(t *testing.T) {
	m, err := Load(project(t, "secrets-subdirs", func(t *testing.T, root string) {
		writeFile(t, filepath.Join(root, ".balena/registry-secrets.json"), []byte(`{"ghcr.io":{"username":"u","password":"PA55W0RD"},"x.io":{"username":"v"}}`))
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := `build-variables: none; build-secrets: global[/run/secrets/db.key (20 bytes) /run/secrets/tls/cert.pem (11 bytes)] web[/run/secrets/db.key (17 bytes) /run/secrets/web/cert.pem (11 bytes)]; registry-secrets: ghcr.io (user "u", password [REDACTED]), x.io (user "v", no password); contract: none`
	if got := m.String(); got != want {
		t.Errorf("String:\n%s\nwant\n%s", got, want)
	}
}

func TestString(t *testing.T) {
	for name, want := range map[string]string{
		"none":           "build-variables: none; build-secrets: none; registry-secrets: none; contract: none",
		"vars-override":  "build-variables: global[BAR FOO] web[FOO]; build-secrets: none; registry-secrets: none; contract: none",
		"registry-yml":   `build-variables: none; build-secrets: none; registry-secrets: ghcr.io (user "ghuser", password [REDACTED]), https://index.docker.io/v1/ (user "hubuser", password [REDACTED]); contract: none`,
		"contract-valid": "build-variables: none; build-secrets: none; registry-secrets: none; contract: sw.application 1.2.3",
	} {
		m, err := Load(project(t, name, nil))
		if err != nil {
			t.Fatal(err)
		}
		if got := m.String(); got != want {
			t.Errorf("%s: String:\n%s\nwant\n%s", name, got, want)
		}
	}
}

func TestRegistryConfigJSON(t *testing.T) {
	m, err := Load(project(t, "registry-json", nil))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]map[string]string
	if err := json.Unmarshal([]byte(m.RegistryConfigJSON()), &got); err != nil {
		t.Fatal(err)
	}
	eq(t, "X-Registry-Config", got, map[string]map[string]string{
		"https://index.docker.io/v1/": {"username": "hubuser", "password": "PA55W0RD-hub", "serveraddress": "https://index.docker.io/v1/"},
		"my-registry.local:5000":      {"username": "localuser", "password": "PA55W0RD-local", "serveraddress": "my-registry.local:5000"},
	})
}

func TestStripMetadata(t *testing.T) {
	for name, want := range map[string]bool{
		".balena":                         true,
		".balena/":                        true,
		".balena/balena.yml":              true,
		".balena/secrets/db.key":          true,
		".balena/qemu-execve":             true, // removed too, unlike @balena/compose
		"./.balena/registry-secrets.json": true,
		".resin/resin.yml":                true,
		"/.resin/x":                       true,
		"sub/.balena/balena.yml":          false, // only at the context root
		".balenarc":                       false,
		".balena.yml":                     false,
		"balena.yml":                      false,
		"Dockerfile":                      false,
		"src/.resin":                      false,
	} {
		if got := StripMetadata(name); got != want {
			t.Errorf("StripMetadata(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestParseSemver(t *testing.T) {
	for in, want := range map[string]string{
		"1.2.3":                      "1.2.3",
		"0.0.0":                      "0.0.0",
		" v1.2.3 ":                   "1.2.3",
		"1.0.0-alpha.1":              "1.0.0-alpha.1",
		"1.0.0-0.3.7":                "1.0.0-0.3.7",
		"1.0.0-x-y-z.--":             "1.0.0-x-y-z.--",
		"1.0.0+20130313144700":       "1.0.0+20130313144700",
		"1.0.0-beta+exp.sha.5114f85": "1.0.0-beta+exp.sha.5114f85",
		"1.0.0+001":                  "1.0.0+001",
		"2147483647.0.0":             "2147483647.0.0",
		"1.2":                        "",
		"1.2.3.4":                    "",
		"01.2.3":                     "",
		"1.02.3":                     "",
		"1.2.3-01":                   "",
		"1.2.3-":                     "",
		"1.2.3+":                     "",
		"1.2.3-a..b":                 "",
		"1.2.3-a_b":                  "",
		"vv1.2.3":                    "",
		"=1.2.3":                     "",
		"1.2.x":                      "",
		"2147483648.0.0":             "",
		"":                           "",
		"-1.2.3":                     "",
	} {
		got, err := parseSemver(in)
		if want == "" && err == nil {
			t.Errorf("parseSemver(%q) = %q, want an error", in, got)
		}
		if want != "" && (err != nil || got != want) {
			t.Errorf("parseSemver(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
}

func TestLoadNoProject(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing"))
	var ue *Error
	if err == nil || errors.As(err, &ue) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want a plain not-exist error", err)
	}
}
