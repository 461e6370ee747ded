package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-balena-builder/builder/platform/hostrules"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadSeedVariables(t *testing.T) {
	c, err := Load("", env(map[string]string{
		"BALENA_TLD":               "example.com",
		"DOCKER_HOST_AMD64":        "tcp://10.0.0.1:2375",
		"DOCKER_HOST_ARM64":        "tcp://10.0.0.2:2375",
		"DOCKER_BUILDKIT":          "0",
		"TOKEN_AUTH_BUILDER_TOKEN": "builder-secret",
		"DELTA_HOST":               "delta.example.com",
		"OBB_BUILD_NETWORK":        "none",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.APIURL != "https://api.example.com" || c.RegistryHost != "registry2.example.com" || c.DeltaURL != "https://delta.example.com" {
		t.Errorf("derived hosts wrong: %+v", c)
	}
	if len(c.Hosts) != 2 || c.Hosts[0].Name != "amd64" || c.Hosts[1].NativeArchs[0] != "aarch64" || c.BuildKit {
		t.Errorf("hosts wrong: %+v", c.Hosts)
	}
	for _, h := range c.Hosts {
		if h.NetworkMode != "none" {
			t.Errorf("host %s network_mode %q, want none (OBB_BUILD_NETWORK)", h.Name, h.NetworkMode)
		}
	}
}

func TestLoadErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no api", map[string]string{"DOCKER_HOST_AMD64": "unix:///x", "TOKEN_AUTH_BUILDER_TOKEN": "t", "REGISTRY2_HOST": "r"}, "API_HOST"},
		{"no host", map[string]string{"BALENA_TLD": "x.io", "TOKEN_AUTH_BUILDER_TOKEN": "t"}, "DOCKER_HOST_AMD64"},
		{"no builder token", map[string]string{"BALENA_TLD": "x.io", "DOCKER_HOST_AMD64": "unix:///x"}, "TOKEN_AUTH_BUILDER_TOKEN"},
		{"bad buildkit", map[string]string{"BALENA_TLD": "x.io", "DOCKER_BUILDKIT": "maybe"}, "DOCKER_BUILDKIT"},
		{"bad scheme", map[string]string{"BALENA_TLD": "x.io", "TOKEN_AUTH_BUILDER_TOKEN": "t", "DOCKER_HOST_AMD64": "http://x:2375"}, "hosts[0].endpoint"},
		{"bad network", map[string]string{"BALENA_TLD": "x.io", "TOKEN_AUTH_BUILDER_TOKEN": "t", "DOCKER_HOST_AMD64": "unix:///x", "OBB_BUILD_NETWORK": "-bad net"}, "hosts[0].network_mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load("", env(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want mention of %s", err, tt.want)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "obb.yaml")
	os.WriteFile(p, []byte(`
balena_tld: example.com
hosts:
  - name: arm-1
    endpoint: tcp://10.0.0.3:2376
    tls_ca: /etc/obb/ca.pem
    tls_cert: /etc/obb/cert.pem
    tls_key: /etc/obb/key.pem
    native_archs: [aarch64]
    max_concurrent: 4
    network_mode: build-net_1.a
  - name: arm-2
    endpoint: tcp://10.0.0.4:2375
    allow_plaintext: true
    native_archs: [aarch64]
`), 0o600)
	c, err := Load(p, env(map[string]string{"TOKEN_AUTH_BUILDER_TOKEN": "t"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Hosts) != 2 || c.Hosts[0].MaxConcurrent != 4 || c.Hosts[1].MaxConcurrent != 2 || c.Hosts[1].Plugin != "docker-tcp" ||
		c.Hosts[0].NetworkMode != "build-net_1.a" || c.Hosts[1].NetworkMode != "" {
		t.Errorf("hosts = %+v", c.Hosts)
	}
	os.WriteFile(p, []byte("hosts:\n  - name: plain\n    endpoint: tcp://10.0.0.9:2375\n    native_archs: [amd64]\n"), 0o600)
	if _, err := Load(p, env(map[string]string{"TOKEN_AUTH_BUILDER_TOKEN": "t", "BALENA_TLD": "x.io"})); err == nil || !strings.Contains(err.Error(), "hosts[0].endpoint") || !strings.Contains(err.Error(), "allow_plaintext") {
		t.Errorf("a plaintext tcp host from the file was accepted: %v", err)
	}
	os.WriteFile(p, []byte("hosts:\n  - name: odd\n    endpoint: unix:///x.sock\n    ssh_key: /k\n    native_archs: [amd64]\n"), 0o600)
	if _, err := Load(p, env(map[string]string{"TOKEN_AUTH_BUILDER_TOKEN": "t", "BALENA_TLD": "x.io"})); err == nil || !strings.Contains(err.Error(), "ssh_key, ssh_certificate and ssh_known_hosts are for ssh://") {
		t.Errorf("ssh material on a unix host was accepted: %v", err)
	}
	os.WriteFile(p, []byte("hosts:\n  - name: ssh\n    plugin: ssh-docker\n    endpoint: ssh://b@10.0.0.5\n    ssh_key: /k\n    ssh_known_hosts: /kh\n    native_archs: [amd64]\n"), 0o600)
	if c, err := Load(p, env(map[string]string{"TOKEN_AUTH_BUILDER_TOKEN": "t", "BALENA_TLD": "x.io"})); err != nil || c.Hosts[0].SSHKey != "/k" || c.Hosts[0].SSHKnownHosts != "/kh" {
		t.Errorf("ssh host: %+v %v", c.Hosts, err)
	}
	for _, tc := range []struct{ yaml, wantErr string }{
		{"  - name: bk\n    plugin: buildkit\n    endpoint: unix:///run/buildkit/buildkitd.sock\n    native_archs: [amd64]\n", ""},
		{"  - name: bk\n    plugin: buildkit\n    endpoint: tcp://10.0.0.7:1234\n    tls_ca: /ca\n    tls_cert: /c\n    tls_key: /k\n    native_archs: [aarch64]\n", ""},
		{"  - name: bk\n    plugin: buildkit\n    endpoint: tcp://10.0.0.7:1234\n    native_archs: [amd64]\n", "allow_plaintext"},
		{"  - name: bk\n    plugin: buildkit\n    endpoint: tcp://10.0.0.7:1234\n    tls_ca: /ca\n    tls_cert: /c\n    native_archs: [amd64]\n", "tls_cert and tls_key go together"},
		{"  - name: bk\n    plugin: buildkit\n    endpoint: ssh://b@10.0.0.5\n    ssh_key: /k\n    ssh_known_hosts: /kh\n    native_archs: [amd64]\n", "tcp:// or unix://"},
		{"  - name: bk\n    plugin: buildkit\n    endpoint: unix:///b.sock\n    network_mode: mynet\n    native_archs: [amd64]\n", "hosts[0].network_mode"},
	} {
		os.WriteFile(p, []byte("hosts:\n"+tc.yaml), 0o600)
		c, err := Load(p, env(map[string]string{"TOKEN_AUTH_BUILDER_TOKEN": "t", "BALENA_TLD": "x.io"}))
		switch {
		case tc.wantErr == "" && (err != nil || c.Hosts[0].Plugin != "buildkit"):
			t.Errorf("buildkit host %q: %+v %v", tc.yaml, c, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("buildkit host %q: err %v, want one naming %q", tc.yaml, err, tc.wantErr)
		}
	}
	os.WriteFile(p, []byte("hostz: []\n"), 0o600)
	if _, err := Load(p, env(nil)); err == nil || !strings.Contains(err.Error(), "hostz") {
		t.Errorf("unknown field not named: %v", err)
	}
}

func TestValidNetworkMode(t *testing.T) {
	for m, want := range map[string]bool{
		"": true, "none": true, "host": true, "default": true, "bridge": true, "my-net_1.x": true, "0net": true,
		"-net": false, ".net": false, "my net": false, "net/1": false, "net:x": false, "container:abc": false,
	} {
		if got := hostrules.ValidNetworkMode(m); got != want {
			t.Errorf("ValidNetworkMode(%q) = %v, want %v", m, got, want)
		}
	}
}

func TestDockerTLSConvention(t *testing.T) {
	certs := t.TempDir()
	armCerts := t.TempDir()
	for _, d := range []string{certs, armCerts} {
		for _, f := range []string{"ca.pem", "cert.pem", "key.pem"} {
			if err := os.WriteFile(filepath.Join(d, f), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	base := map[string]string{"BALENA_TLD": "x.io", "TOKEN_AUTH_BUILDER_TOKEN": "t",
		"DOCKER_HOST_AMD64": "tcp://10.0.0.1:2376", "DOCKER_HOST_ARM64": "tcp://10.0.0.2:2376"}
	with := func(m map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	tests := []struct {
		name         string
		env          map[string]string
		amdCA, armCA string // "" : plaintext
		err          string
	}{
		{"plaintext as the original builder", base, "", "", ""},
		{"DOCKER_TLS_VERIFY for both", with(map[string]string{"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": certs}), certs, certs, ""},
		{"per architecture", with(map[string]string{"DOCKER_TLS_VERIFY_ARM64": "1", "DOCKER_CERT_PATH_ARM64": armCerts}), "", armCerts, ""},
		{"per architecture wins", with(map[string]string{"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": certs, "DOCKER_CERT_PATH_ARM64": armCerts}), certs, armCerts, ""},
		{"verify off", with(map[string]string{"DOCKER_TLS_VERIFY": "0", "DOCKER_CERT_PATH": certs}), "", "", ""},
		{"missing files", with(map[string]string{"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": t.TempDir()}), "", "", "DOCKER_CERT_PATH"},
		{"not a boolean", with(map[string]string{"DOCKER_TLS_VERIFY": "yes please"}), "", "", "DOCKER_TLS_VERIFY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load("", env(tt.env))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want mention of %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range []string{tt.amdCA, tt.armCA} {
				h := c.Hosts[i]
				if want == "" {
					if h.TLSCA != "" || !h.AllowPlaintext {
						t.Errorf("%s: TLS %q plaintext %v, want plaintext", h.Name, h.TLSCA, h.AllowPlaintext)
					}
					continue
				}
				if h.TLSCA != filepath.Join(want, "ca.pem") || h.TLSCert != filepath.Join(want, "cert.pem") || h.TLSKey != filepath.Join(want, "key.pem") || h.AllowPlaintext {
					t.Errorf("%s: %+v, want the files of %s", h.Name, h, want)
				}
			}
		})
	}
}

func TestLimitsFromTheEnvironment(t *testing.T) {
	c, err := Load("", env(map[string]string{"BALENA_TLD": "x.io", "TOKEN_AUTH_BUILDER_TOKEN": "t", "DOCKER_HOST_AMD64": "unix:///x",
		"OBB_MAX_CONTEXT_BYTES": "1000", "OBB_MAX_EXPANSION_RATIO": "50", "OBB_UPLOAD_TIMEOUT": "5m", "OBB_UPLOAD_MIN_RATE": "10",
		"OBB_UPLOAD_RATE_WINDOW": "2s", "OBB_MAX_BUILDS": "7", "OBB_MAX_BUILDS_PER_USER": "1", "OBB_MAX_LOG_BYTES": "4096",
		"OBB_MAX_LOG_LINE_BYTES": "100", "OBB_ADMIN_ADDR": "127.0.0.1:1", "OBB_ADMIN_TOKEN": "op", "OBB_SHUTDOWN_GRACE": "90s"}))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Limits
	if l.MaxContextBytes != 1000 || l.MaxExpansionRatio != 50 || l.UploadTimeout.Minutes() != 5 || l.UploadMinRate != 10 ||
		l.UploadRateWindow.Seconds() != 2 || l.MaxBuilds != 7 || l.MaxBuildsPerUser != 1 || l.MaxLogBytes != 4096 || l.MaxLogLineBytes != 100 {
		t.Errorf("limits = %+v", l)
	}
	if c.ShutdownGrace.Seconds() != 90 {
		t.Errorf("shutdown grace %v", c.ShutdownGrace)
	}
	if c.Listen.Admin != "127.0.0.1:1" || c.AdminToken != "op" {
		t.Errorf("admin = %q %q", c.Listen.Admin, c.AdminToken)
	}
	for _, bad := range []map[string]string{{"OBB_UPLOAD_TIMEOUT": "soon"}, {"OBB_MAX_BUILDS": "-1"}, {"OBB_MAX_CONTEXT_BYTES": "4G"},
		{"OBB_MAX_BUILDS_PER_USER": "0"}, {"OBB_TLS_CA": "/x"}} {
		m := map[string]string{"BALENA_TLD": "x.io", "TOKEN_AUTH_BUILDER_TOKEN": "t", "DOCKER_HOST_AMD64": "unix:///x"}
		var key string
		for k, v := range bad {
			m[k], key = v, k
		}
		if _, err := Load("", env(m)); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(key, "OBB_")) {
			t.Errorf("%v: err = %v, want it named", bad, err)
		}
	}
}
