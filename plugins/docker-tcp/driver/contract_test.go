package driver_test

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/docker-tcp/driver"
	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
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

// buildPlugin builds the plugin binary from main.go into a temp dir.
func buildPlugin(t *testing.T) string {
	t.Helper()
	start := time.Now()
	bin := filepath.Join(t.TempDir(), "docker-tcp")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = ".." // plugins/docker-tcp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// testLogger logs to t until the test ends (plugin processes may still
// write while they are being killed).
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}
