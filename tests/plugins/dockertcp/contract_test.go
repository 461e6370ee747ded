package dockertcp

import (
	"log/slog"
	"testing"

	"github.com/open-balena-builder/builder/plugins/engine"
	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/tests/pluginstack"
)

// TestContract runs the executor contract against a real dockerd and
// registry, once with the classic builder (the daemon's default network)
// and once with BuildKit (network_mode none: the test daemon has no bridge),
// each three ways: the driver called directly, through the in-process
// go-plugin harness (the real gRPC boundary), and as a plugin process built
// from main.go and started with sdk.Launch.
func TestContract(t *testing.T) {
	env, login := startStack(t)
	bin := buildPlugin(t)

	pluginstack.RunContracts(t, env, bin, func(l *slog.Logger) sdk.Executor { return engine.New(l) })
	t.Run("NetworkMode", func(t *testing.T) { testNetworkMode(t, env) })
	t.Run("RegistryConfig", func(t *testing.T) { testRegistryConfig(t, env, login) })
}

func buildPlugin(t *testing.T) string { return pluginstack.BuildPlugin(t, "plugins/docker-tcp") }
