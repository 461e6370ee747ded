// Package deploy checks the files that put the builder into an openBalena
// installation: the compose overlay loads on top of open-balena's
// composition (compose-go, the loader docker compose itself uses), refers
// only to variables the builder reads, and the Helm values and haproxy
// snippet are what the README says.
package deploy

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"gopkg.in/yaml.v3"

	"github.com/open-balena-builder/builder/tests/harness"
)

func root(t *testing.T) string {
	t.Helper()
	r, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func load(t *testing.T, env map[string]string) (*cli.ProjectOptions, error) {
	t.Helper()
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	return cli.NewProjectOptions(
		[]string{"testdata/open-balena.yml", filepath.Join(root(t), "deploy", "compose", "docker-compose.builder.yml")},
		cli.WithName("openbalena"), cli.WithEnv(list), cli.WithWorkingDirectory("."))
}

func TestComposeOverlayAddsTheBuilder(t *testing.T) {
	opts, err := load(t, map[string]string{"DNS_TLD": "example.com", "TOKEN_AUTH_BUILDER_TOKEN": "0123abcd"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("the overlay does not load on open-balena's composition: %v", err)
	}
	b, ok := p.Services["builder"]
	if !ok {
		t.Fatal("no builder service")
	}
	env := func(k string) string {
		if v := b.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	if env("BALENA_TLD") != "example.com" || env("TOKEN_AUTH_BUILDER_TOKEN") != "0123abcd" || env("DOCKER_HOST_AMD64") != "tcp://docker:2376" ||
		env("DOCKER_TLS_VERIFY") != "1" || env("SSL_CERT_DIR") != "/certs" {
		t.Errorf("environment: %v", b.Environment)
	}
	if b.User != "65532:65532" || b.Image != "open-balena-builder:latest" || b.HealthCheck == nil || strings.Join(b.HealthCheck.Test, " ") != "CMD /usr/local/bin/obb ping" {
		t.Errorf("service: user %q image %q healthcheck %+v", b.User, b.Image, b.HealthCheck)
	}
	for _, want := range []string{"api", "docker"} {
		if _, ok := b.DependsOn[want]; !ok {
			t.Errorf("builder does not depend on %s", want)
		}
	}
	mounts := map[string]string{}
	for _, v := range b.Volumes {
		mounts[v.Target] = v.Source
		if _, ok := p.Volumes[v.Source]; !ok {
			t.Errorf("volume %q is not declared", v.Source)
		}
	}
	if mounts["/var/lib/obb"] != "obb-data" || mounts["/certs"] != "certs-data" || mounts["/docker-pki/client"] != "builder-certs-client" {
		t.Errorf("mounts: %v", mounts)
	}

	// Without open-balena's DNS_TLD the overlay says what is missing.
	opts, _ = load(t, map[string]string{"TOKEN_AUTH_BUILDER_TOKEN": "x"})
	if _, err := opts.LoadProject(context.Background()); err == nil || !strings.Contains(err.Error(), "DNS_TLD") {
		t.Errorf("without DNS_TLD: %v", err)
	}
}

// Every variable the overlay sets is one the builder reads (documented in
// the README's configuration tables), or Go's SSL_CERT_DIR.
func TestComposeOverlaySetsOnlyBuilderVariables(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root(t), "deploy", "compose", "docker-compose.builder.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{"SSL_CERT_DIR": true}
	for _, m := range regexp.MustCompile("`((?:OBB|DOCKER|BALENA|API|DELTA|TOKEN|REGISTRY2)_[A-Z0-9_]+)`").FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = true
	}
	for k := range doc.Services["builder"].Environment {
		if !documented[k] {
			t.Errorf("the overlay sets %s, which the README does not document", k)
		}
	}
}

func TestHelmValuesSwapTheImage(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root(t), "deploy", "helm", "values-builder.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Builder struct {
			Enabled bool `yaml:"enabled"`
			Image   struct {
				Repository string `yaml:"repository"`
				Tag        string `yaml:"tag"`
			} `yaml:"image"`
			Service struct {
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"service"`
		} `yaml:"builder"`
	}
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if !v.Builder.Enabled || v.Builder.Image.Repository != "open-balena-builder" || v.Builder.Service.Annotations["haproxy-ingress.github.io/timeout-server"] != "6h" {
		t.Errorf("values: %+v", v.Builder)
	}
}

func TestHaproxySnippetRoutesBuilderHost(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root(t), "deploy", "compose", "haproxy-builder.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	for _, want := range []string{`hdr_beg(host) -i "builder."`, "use_backend builder-backend", "backend builder-backend", "timeout server 6h", "server builder builder:80", "option httpchk GET /ping"} {
		if !strings.Contains(s, want) {
			t.Errorf("haproxy snippet lacks %q", want)
		}
	}
}
