package sshdocker

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"google.golang.org/protobuf/proto"

	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	"github.com/open-balena-builder/builder/plugins/ssh-docker/driver"
	"github.com/open-balena-builder/builder/tests/pluginstack"
)

// TestContract runs the executor contract against a real dockerd and
// registry reached over a private sshd (docker system dial-stdio), once
// with the classic builder and once with BuildKit (network_mode none: the
// test daemon has no bridge), each three ways: the driver called directly,
// through the in-process go-plugin harness, and as a plugin process built
// from main.go. Then the host key checks.
func TestContract(t *testing.T) {
	env, sshd := startStack(t)
	bin := buildPlugin(t)

	pluginstack.RunContracts(t, env, bin, func(l *slog.Logger) sdk.Executor { return driver.New(l) })
	t.Run("HostKey", func(t *testing.T) { testHostKey(t, env, sshd) })
}

// testHostKey checks that a host whose key is not the one in known_hosts,
// or is not in it at all, fails Health with a message about the host key,
// directly and across the plugin boundary; and that the same host with
// the right known_hosts is healthy.
func testHostKey(t *testing.T, env sdktest.Env, sshd *testSSHD) {
	dir := t.TempDir()
	wrong := filepath.Join(dir, "known_hosts.wrong")
	other := writeKey(t, filepath.Join(dir, "other_key"))
	if err := os.WriteFile(wrong, []byte(knownhosts.Line([]string{knownhosts.Normalize(sshd.Addr)}, other)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(dir, "known_hosts.empty")
	if err := os.WriteFile(unknown, []byte("# nothing known\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	execs := map[string]sdk.Executor{
		"direct": driver.New(pluginstack.TestLogger(t)),
		"grpc":   sdktest.Serve(t, driver.New(pluginstack.TestLogger(t))),
	}
	for name, exec := range execs {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := exec.Health(ctx, env.Host); err != nil {
				t.Fatalf("Health with the right known_hosts = %v, want nil", err)
			}
			for _, c := range []struct {
				knownHosts string
				want       []string
			}{
				{wrong, []string{"host key mismatch", ssh.FingerprintSHA256(sshd.HostKey), ssh.FingerprintSHA256(other)}},
				{unknown, []string{"unknown host", "host key", ssh.FingerprintSHA256(sshd.HostKey), unknown}},
			} {
				host := proto.CloneOf(env.Host)
				host.SshKnownHosts = c.knownHosts
				err := exec.Health(ctx, host)
				if err == nil {
					t.Errorf("Health with %s = nil, want a host key error", filepath.Base(c.knownHosts))
					continue
				}
				t.Logf("Health with %s: %v", filepath.Base(c.knownHosts), err)
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Health with %s = %q, want it to mention %q", filepath.Base(c.knownHosts), err, w)
					}
				}
				if _, err := exec.Capabilities(ctx, host); err == nil || !strings.Contains(err.Error(), "host key") {
					t.Errorf("Capabilities with %s = %v, want a host key error", filepath.Base(c.knownHosts), err)
				}
			}
			host := proto.CloneOf(env.Host)
			host.SshKnownHosts = filepath.Join(dir, "no-such-known_hosts")
			// Over gRPC an unhealthy host is sdk.ErrUnhealthy with the
			// plugin's message; a direct call keeps the sentinel.
			err := exec.Health(ctx, host)
			if err == nil || !strings.Contains(err.Error(), "known_hosts") || (name == "direct" && !errors.Is(err, sdk.ErrInvalidArgument)) {
				t.Errorf("Health with a missing known_hosts = %v, want an invalid-argument error naming known_hosts", err)
			}
		})
	}
}

func buildPlugin(t *testing.T) string { return pluginstack.BuildPlugin(t, "plugins/ssh-docker") }
