package driver_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/docker-tcp/driver"
	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
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

	buildkit := env
	buildkit.Host = &pluginv1.HostConfig{Name: env.Host.GetName(), Endpoint: env.Host.GetEndpoint(), Buildkit: true, NetworkMode: "none"}
	t.Run("classic", func(t *testing.T) { runContract(t, env, bin) })
	t.Run("buildkit", func(t *testing.T) { runContract(t, buildkit, bin) })
	t.Run("NetworkMode", func(t *testing.T) { testNetworkMode(t, env) })
	t.Run("RegistryConfig", func(t *testing.T) { testRegistryConfig(t, env, login) })
}

func runContract(t *testing.T, env sdktest.Env, bin string) {
	t.Run("direct", func(t *testing.T) {
		sdktest.RunContract(t, func(t *testing.T) sdk.Executor { return driver.New(testLogger(t)) }, env)
	})
	t.Run("grpc", func(t *testing.T) {
		sdktest.RunContract(t, func(t *testing.T) sdk.Executor { return sdktest.Serve(t, driver.New(testLogger(t))) }, env)
	})
	t.Run("process", func(t *testing.T) {
		sdktest.RunContract(t, func(t *testing.T) sdk.Executor {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := sdk.Launch(ctx, bin, testLogger(t))
			if err != nil {
				t.Fatalf("launch: %v", err)
			}
			t.Cleanup(c.Kill)
			return c.Executor
		}, env)
	})
}

func buildPlugin(t *testing.T) string { return pluginstack.BuildPlugin(t, "..") }

func testLogger(t *testing.T) *slog.Logger { return pluginstack.TestLogger(t) }
