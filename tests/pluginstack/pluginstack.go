// Package pluginstack starts what an executor plugin's contract suite
// (plugins/sdk/sdktest) needs: scripts/deps.sh, a private dockerd with
// busybox loaded, the open-balena-api stand-in as the registry's token realm
// and a token-auth registry, all stopped when the test ends.
package pluginstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/internal/apistandin"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	"github.com/open-balena-builder/builder/tests/harness"
	"github.com/open-balena-builder/builder/tests/stack"
)

// Stack is a running dockerd, registry and API stand-in.
type Stack struct {
	Dockerd *stack.Dockerd
	// RegistryAddr is the registry's "127.0.0.1:PORT".
	RegistryAddr string
	// BuilderToken logs in to the registry's token realm as the builder
	// (user "builder"), which may pull and push every repository.
	BuilderToken string

	tokens *harness.TokenSource
}

// Start brings the stack up; name labels the dockerd.
func Start(t testing.TB, name string) *Stack {
	t.Helper()
	// On a clean machine scripts/deps.sh also builds buildkitd (minutes).
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cache, err := harness.Deps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	port, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &Stack{RegistryAddr: fmt.Sprintf("127.0.0.1:%d", port), BuilderToken: RandomHex(t, 16)}
	api, err := apistandin.New(apistandin.Config{RegistryHost: s.RegistryAddr, Issuer: "api.obb.test", BuilderToken: s.BuilderToken})
	if err != nil {
		t.Fatalf("api stand-in: %v", err)
	}
	apiSrv := httptest.NewServer(api)
	t.Cleanup(apiSrv.Close)
	s.tokens = &harness.TokenSource{APIURL: apiSrv.URL, Registry: s.RegistryAddr, BuilderToken: s.BuilderToken}

	reg, err := stack.StartRegistryAt(ctx, "", s.RegistryAddr, stack.TokenAuth{
		Realm: apiSrv.URL + "/auth/v1/token", Service: s.RegistryAddr, Issuer: "api.obb.test", RootCertPEM: api.CertPEM(),
	}, t.Logf)
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	t.Cleanup(func() {
		if err := reg.Stop(); err != nil {
			t.Errorf("stop registry: %v", err)
		}
	})
	if s.Dockerd, err = stack.StartDockerd(ctx, "", name, t.Logf); err != nil {
		t.Fatalf("dockerd: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dockerd log tail:\n%s\nregistry log tail:\n%s", s.Dockerd.LogTail(40), reg.LogTail(40))
		}
		if err := s.Dockerd.Stop(); err != nil {
			t.Errorf("stop dockerd: %v", err)
		}
	})
	if err := stack.LoadBusybox(ctx, s.Dockerd.Host(), "amd64", filepath.Join(cache, "busybox-amd64")); err != nil {
		t.Fatalf("load busybox: %v", err)
	}
	return s
}

// Env is the contract suite's environment for a plugin reaching the
// stack's dockerd through host.
func (s *Stack) Env(host *pluginv1.HostConfig) sdktest.Env {
	return sdktest.Env{
		Host:       host,
		DockerHost: s.Dockerd.Host(),
		Platform:   "linux/amd64",
		ImageRef:   func(t *testing.T) string { return s.RegistryAddr + "/v2/" + RandomHex(t, 16) },
		RegistryToken: func(t *testing.T, repo string) string {
			t.Helper()
			tok, err := s.tokens.Token(repo, "pull,push")
			if err != nil {
				t.Fatal(err)
			}
			return tok
		},
		HostProcesses: LocalProcesses, // the private dockerd runs on this machine
	}
}

// Token returns a registry token, as the builder, with pull and push on
// every repository of repos ("v2/<hash>"), as services/release hands a job.
func (s *Stack) Token(t testing.TB, repos ...string) string {
	t.Helper()
	q := url.Values{"service": {s.RegistryAddr}}
	for _, r := range repos {
		q.Add("scope", "repository:"+r+":pull,push")
	}
	req, err := http.NewRequest(http.MethodGet, s.tokens.APIURL+"/auth/v1/token?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("builder", s.BuilderToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("registry token: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("registry token: %s: %v", resp.Status, err)
	}
	return body.Token
}

// LocalProcesses returns the command lines (arguments joined by spaces) of
// this machine's processes that contain marker.
func LocalProcesses(t *testing.T, marker string) []string {
	t.Helper()
	paths, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the process has ended
		}
		if cmd := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")); strings.Contains(cmd, marker) {
			out = append(out, cmd)
		}
	}
	return out
}

// RandomHex returns n random bytes as hex.
func RandomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
