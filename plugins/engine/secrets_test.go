package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/registry"
	"github.com/moby/buildkit/session/auth"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

type tarEntry struct {
	name, body, link string
	typ              byte
}

func makeTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Linkname: e.link, ModTime: time.Unix(1700000000, 0)}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readTar(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read rewritten tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = string(b)
	}
}

func TestRewriteDockerfileInContext(t *testing.T) {
	big := strings.Repeat("x", 300<<10) // more than one pipe write
	upper := func(b []byte) []byte { return bytes.ToUpper(b) }
	tests := []struct {
		name    string
		names   []string
		entries []tarEntry
		want    map[string]string
	}{
		{"default name, ./ prefix", []string{"Dockerfile", "dockerfile"},
			[]tarEntry{{name: "./src/", typ: tar.TypeDir}, {name: "./big.bin", body: big}, {name: "./Dockerfile", body: "run a\n"}, {name: "./src/Dockerfile", body: "run b\n"}},
			map[string]string{"./src/": "", "./big.bin": big, "./Dockerfile": "RUN A\n", "./src/Dockerfile": "run b\n"}},
		{"custom path", []string{contextPath("sub/Dockerfile.arm")},
			[]tarEntry{{name: "Dockerfile", body: "run a\n"}, {name: "sub/Dockerfile.arm", body: "run b\n"}},
			map[string]string{"Dockerfile": "run a\n", "sub/Dockerfile.arm": "RUN B\n"}},
		{"no Dockerfile: unchanged", []string{"Dockerfile"},
			[]tarEntry{{name: "a", body: "x"}},
			map[string]string{"a": "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rw := rewriteDockerfile(bytes.NewReader(makeTar(t, tc.entries)), tc.names, upper)
			defer rw.Close()
			got := readTar(t, rw)
			if rw.Err() != nil {
				t.Fatalf("Err() = %v", rw.Err())
			}
			if len(got) != len(tc.want) {
				t.Errorf("entries %d, want %d", len(got), len(tc.want))
			}
			for name, body := range tc.want {
				if got[name] != body {
					t.Errorf("%s = %.40q, want %.40q", name, got[name], body)
				}
			}
		})
	}
}

func TestRewriteDockerfileInContextErrors(t *testing.T) {
	t.Run("symlinked Dockerfile", func(t *testing.T) {
		src := makeTar(t, []tarEntry{{name: "real", body: "RUN a\n"}, {name: "Dockerfile", typ: tar.TypeSymlink, link: "real"}})
		rw := rewriteDockerfile(bytes.NewReader(src), []string{"Dockerfile"}, func(b []byte) []byte { return b })
		defer rw.Close()
		_, err := io.ReadAll(rw)
		if err == nil || !errors.Is(rw.Err(), sdk.ErrInvalidArgument) || !strings.Contains(rw.Err().Error(), "not a regular file") {
			t.Fatalf("read: %v, Err() = %v; want an invalid-argument error", err, rw.Err())
		}
	})
	t.Run("broken tar", func(t *testing.T) {
		rw := rewriteDockerfile(strings.NewReader(strings.Repeat("garbage!", 100)), []string{"Dockerfile"}, func(b []byte) []byte { return b })
		defer rw.Close()
		if _, err := io.ReadAll(rw); err == nil || rw.Err() == nil {
			t.Fatalf("read: %v, Err() = %v; want errors", err, rw.Err())
		}
	})
	t.Run("closed early", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write(makeTar(t, []tarEntry{{name: "a", body: strings.Repeat("y", 1<<20)}}))
			_ = pw.Close()
		}()
		rw := rewriteDockerfile(pr, []string{"Dockerfile"}, func(b []byte) []byte { return b })
		buf := make([]byte, 10)
		if _, err := io.ReadFull(rw, buf); err != nil {
			t.Fatal(err)
		}
		_ = rw.Close()
		time.Sleep(10 * time.Millisecond)
		if rw.Err() != nil {
			t.Errorf("Err() after Close = %v, want nil (the build stopped reading)", rw.Err())
		}
	})
}

func TestValidateSpecSecrets(t *testing.T) {
	spec := func(buildkit bool, secrets ...*pluginv1.Secret) *pluginv1.BuildSpec {
		return &pluginv1.BuildSpec{JobId: "j", ImageRef: "127.0.0.1:5000/v2/abc", Secrets: secrets,
			Host: &pluginv1.HostConfig{Name: "amd-1", Endpoint: "unix:///x", Buildkit: buildkit}}
	}
	sec := func(dest string, n int) *pluginv1.Secret {
		return &pluginv1.Secret{Dest: dest, Content: bytes.Repeat([]byte("s"), n)}
	}

	err := validateSpec(spec(false, sec("app/token", 5)))
	want := `build secrets need BuildKit: host "amd-1" uses the classic builder; set DOCKER_BUILDKIT=1 or buildkit: true for this host`
	if !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
		t.Errorf("classic host with secrets: %v; want %q wrapping ErrInvalidArgument", err, want)
	}
	if err := validateSpec(spec(false)); err != nil {
		t.Errorf("classic host without secrets: %v", err)
	}
	pull := spec(false, sec("app/token", 5))
	pull.PullImage = "busybox:1.36"
	if err := validateSpec(pull); err != nil {
		t.Errorf("pull_image on a classic host, secrets unused: %v", err)
	}
	pull.PullImage = "Not A Ref"
	if err := validateSpec(pull); !errors.Is(err, sdk.ErrInvalidArgument) {
		t.Errorf("pull_image %q: %v, want ErrInvalidArgument", pull.PullImage, err)
	}

	for _, tc := range []struct {
		secrets []*pluginv1.Secret
		ok      bool
	}{
		{[]*pluginv1.Secret{sec("app/token", 5), sec("key", 0), sec("a.b_c-d", maxSecretSize)}, true},
		{[]*pluginv1.Secret{sec("", 1)}, false},
		{[]*pluginv1.Secret{sec("/abs", 1)}, false},
		{[]*pluginv1.Secret{sec("a/../b", 1)}, false},
		{[]*pluginv1.Secret{sec("./a", 1)}, false},
		{[]*pluginv1.Secret{sec("a,b", 1)}, false},
		{[]*pluginv1.Secret{sec("a b", 1)}, false},
		{[]*pluginv1.Secret{sec("a/", 1)}, false},
		{[]*pluginv1.Secret{sec("a", 1), sec("a", 2)}, false},
		{[]*pluginv1.Secret{sec("big", maxSecretSize+1)}, false},
	} {
		err := validateSpec(spec(true, tc.secrets...))
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, sdk.ErrInvalidArgument) {
			t.Errorf("secrets %v: %v (valid %v)", tc.secrets[0].GetDest(), err, tc.ok)
		}
	}
}

func TestRegistryConfig(t *testing.T) {
	const cfg = `{
		"registry.example.com": {"username": "u1", "password": "p1"},
		"https://Other.example.com:5000/v2/": {"auth": "dTI6cDI6eA=="},
		"docker.io": {"username": "hub", "password": "hp"},
		"id.example.com": {"identitytoken": "tok"}
	}`
	auths, err := ParseRegistryConfig("j", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"registry.example.com":        "u1:p1",
		"other.example.com:5000":      "u2:p2:x",
		"registry-1.docker.io":        "hub:hp",
		"docker.io":                   "hub:hp",
		"https://index.docker.io/v1/": "hub:hp",
		"unknown.example.com":         "",
	} {
		ac, _ := auths.Lookup(host)
		got := ac.Username + ":" + ac.Password
		if got == ":" {
			got = ""
		}
		if got != want {
			t.Errorf("lookup(%s) = %q, want %q", host, got, want)
		}
	}
	daemon := auths.ForDaemon()
	if daemon[dockerHubKey].Username != "hub" || daemon["registry.example.com"].Password != "p1" || len(daemon) != 5 {
		t.Errorf("forDaemon() = %d entries, hub %q", len(daemon), daemon[dockerHubKey].Username)
	}

	p := &AuthProvider{auths: auths}
	for host, want := range map[string]*auth.CredentialsResponse{
		"registry.example.com": {Username: "u1", Secret: "p1"},
		"id.example.com":       {Secret: "tok"},
		"nowhere.example.com":  {},
	} {
		got, err := p.Credentials(context.Background(), &auth.CredentialsRequest{Host: host})
		if err != nil || got.GetUsername() != want.GetUsername() || got.GetSecret() != want.GetSecret() {
			t.Errorf("Credentials(%s) = %v, %v; want %v", host, got, err, want)
		}
	}

	if a, err := ParseRegistryConfig("j", ""); a != nil || err != nil {
		t.Errorf("empty registry_config: %v, %v", a, err)
	}
	for _, bad := range []string{`{"r": {"password": "hunter2"`, `["hunter2"]`, `{"r": {"auth": "aHVudGVyMg=="}}`} {
		_, err := ParseRegistryConfig("j", bad)
		if !errors.Is(err, sdk.ErrInvalidArgument) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("registry_config %.12q…: %v; want ErrInvalidArgument without the content", bad, err)
		}
	}
}

func TestBuildOptionsTargetAndAuth(t *testing.T) {
	spec := &pluginv1.BuildSpec{JobId: "j", ImageRef: "r/v2/x", Target: "first", Host: &pluginv1.HostConfig{}}
	auths := RegistryAuths{"registry.example.com": registry.AuthConfig{Username: "u", Password: "p"}}
	for _, bk := range []bool{false, true} {
		spec.Host.Buildkit = bk
		o := buildOptions(spec, auths)
		if o.Target != "first" || o.AuthConfigs["registry.example.com"].Password != "p" {
			t.Errorf("buildkit=%v: target %q, auth configs %d", bk, o.Target, len(o.AuthConfigs))
		}
	}
	if o := buildOptions(spec, nil); o.AuthConfigs != nil {
		t.Errorf("no registry_config: auth configs %v", o.AuthConfigs)
	}
}

func TestPullHelpers(t *testing.T) {
	if got := shortReason(errors.New("Error response from daemon: Get \"https://registry-1.docker.io/v2/\": no such host\nmore")); got != `Get "https://registry-1.docker.io/v2/": no such host` {
		t.Errorf("shortReason = %q", got)
	}
	if got := shortReason(errors.New(strings.Repeat("x", 300))); len(got) > 210 {
		t.Errorf("shortReason of 300 bytes: %d bytes", len(got))
	}
	for _, tc := range []struct {
		platform, os, arch, variant string
		want                        bool
	}{
		{"linux/amd64", "linux", "amd64", "", true},
		{"linux/arm64/v8", "linux", "arm64", "", true},
		{"linux/arm/v7", "linux", "arm", "v7", true},
		{"linux/arm/v7", "linux", "arm", "v6", false},
		{"linux/arm64/v8", "linux", "amd64", "", false},
		{"linux/amd64", "", "amd64", "", true},
	} {
		if got := samePlatform(tc.platform, tc.os, tc.arch, tc.variant); got != tc.want {
			t.Errorf("samePlatform(%s, %s/%s/%s) = %v", tc.platform, tc.os, tc.arch, tc.variant, got)
		}
	}
}

func TestDockerfileNames(t *testing.T) {
	// Only the name the daemon builds when it is there: a later lowercase
	// dockerfile is not what the daemon reads.
	if got := dockerfileNames(&pluginv1.BuildSpec{}); strings.Join(got, ",") != "Dockerfile" {
		t.Errorf("default: %v", got)
	}
	if got := dockerfileNames(&pluginv1.BuildSpec{Dockerfile: "./Dockerfile"}); strings.Join(got, ",") != "Dockerfile" {
		t.Errorf("./Dockerfile: %v", got)
	}
	if got := dockerfileNames(&pluginv1.BuildSpec{Dockerfile: "./sub//Dockerfile.x"}); strings.Join(got, ",") != "sub/Dockerfile.x" {
		t.Errorf("custom: %v", got)
	}
}
