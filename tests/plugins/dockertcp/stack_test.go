package dockertcp

import (
	"testing"

	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	"github.com/open-balena-builder/builder/tests/pluginstack"
)

// registryLogin is a user name and password the test registry's token
// realm (the API stand-in) takes: the builder's, which may pull and push
// every repository.
type registryLogin struct {
	registry, username, password string
}

// startStack starts a private dockerd with busybox, the API stand-in and a
// token-auth registry (all stopped when t ends) and returns the contract
// suite's Env, the plugin reaching the dockerd on its unix socket, and a
// login for the registry.
func startStack(t *testing.T) (sdktest.Env, registryLogin) {
	t.Helper()
	s := pluginstack.Start(t, "docker-tcp-test")
	env := s.Env(&pluginv1.HostConfig{Name: "docker-tcp-test", Endpoint: s.Dockerd.Host()})
	return env, registryLogin{registry: s.RegistryAddr, username: "builder", password: s.BuilderToken}
}

func randomHex(t *testing.T, n int) string { return pluginstack.RandomHex(t, n) }
