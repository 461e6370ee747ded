package driver_test

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
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	"github.com/open-balena-builder/builder/tests/apistandin"
	"github.com/open-balena-builder/builder/tests/stack"
)

// startStack installs the dependencies (scripts/deps.sh, then
// testdata/sshd-deps.sh), then starts a private dockerd with busybox
// loaded, the API stand-in (registry token realm), a token-auth registry
// and a private sshd whose sessions reach that dockerd, all stopped when t
// ends. It returns the contract suite's Env, whose host is the sshd's
// ssh:// endpoint, and the sshd.
func startStack(t *testing.T) (sdktest.Env, *testSSHD) {
	t.Helper()
	runDeps(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	port, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	regAddr := fmt.Sprintf("127.0.0.1:%d", port)
	builderToken := randomHex(t, 16)
	api, err := apistandin.New(apistandin.Config{RegistryHost: regAddr, Issuer: "api.obb.test", BuilderToken: builderToken})
	if err != nil {
		t.Fatalf("api stand-in: %v", err)
	}
	apiSrv := httptest.NewServer(api)
	t.Cleanup(apiSrv.Close)

	reg, err := stack.StartRegistryAt(ctx, "", regAddr, stack.TokenAuth{
		Realm: apiSrv.URL + "/auth/v1/token", Service: regAddr, Issuer: "api.obb.test", RootCertPEM: api.CertPEM(),
	}, t.Logf)
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	t.Cleanup(func() {
		if err := reg.Stop(); err != nil {
			t.Errorf("stop registry: %v", err)
		}
	})

	d, err := stack.StartDockerd(ctx, "", "ssh-docker-test", t.Logf)
	if err != nil {
		t.Fatalf("dockerd: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dockerd log tail:\n%s\nregistry log tail:\n%s", d.LogTail(40), reg.LogTail(40))
		}
		if err := d.Stop(); err != nil {
			t.Errorf("stop dockerd: %v", err)
		}
	})
	if err := stack.LoadBusybox(ctx, d.Host(), "amd64", filepath.Join(cacheDir(t), "busybox-amd64")); err != nil {
		t.Fatalf("load busybox: %v", err)
	}

	sshd := startSSHD(t, d.Host())

	return sdktest.Env{
		Host:       sshHost(sshd),
		DockerHost: d.Host(),
		Platform:   "linux/amd64",
		ImageRef:   func(t *testing.T) string { return regAddr + "/v2/" + randomHex(t, 16) },
		RegistryToken: func(t *testing.T, repo string) string {
			return registryToken(t, apiSrv.URL, regAddr, builderToken, repo)
		},
		HostProcesses: localProcesses, // the private dockerd runs on this machine
	}, sshd
}

// sshHost is the HostConfig of the daemon behind sshd: ssh_private_key is the SSH
// private key, ssh_certificate its public half, ssh_known_hosts the known_hosts file.
func sshHost(sshd *testSSHD) *pluginv1.HostConfig {
	return &pluginv1.HostConfig{Name: "ssh-docker-test", Endpoint: sshd.Endpoint(), SshPrivateKey: sshd.ClientKey, SshCertificate: sshd.ClientPub, SshKnownHosts: sshd.KnownHosts}
}

// localProcesses returns the command lines (arguments joined by spaces) of
// this machine's processes that contain marker.
func localProcesses(t *testing.T, marker string) []string {
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

// registryToken asks the stand-in for a pull/push token for repo, as the
// builder does (Basic builder:<TOKEN_AUTH_BUILDER_TOKEN>).
func registryToken(t *testing.T, apiURL, service, builderToken, repo string) string {
	t.Helper()
	q := url.Values{"service": {service}, "scope": {"repository:" + repo + ":pull,push"}}
	req, err := http.NewRequest(http.MethodGet, apiURL+"/auth/v1/token?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("builder", builderToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	var body struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.Token == "" {
		t.Fatalf("token request: status %d, err %v", resp.StatusCode, err)
	}
	return body.Token
}

func runDeps(t *testing.T) {
	t.Helper()
	start := time.Now()
	out, err := exec.Command("bash", filepath.Join(repoRoot(t), "scripts", "deps.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/deps.sh: %v\n%s", err, out)
	}
	t.Logf("deps.sh (%s): %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
}

// repoRoot is the monorepo root (the test runs in plugins/ssh-docker/driver).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// cacheDir is where scripts/deps.sh puts the busybox binaries.
func cacheDir(t *testing.T) string {
	if c := os.Getenv("OBB_CACHE"); c != "" {
		return c
	}
	return filepath.Join(repoRoot(t), ".cache")
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
