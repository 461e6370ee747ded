package pluginstack

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	"github.com/open-balena-builder/builder/tests/harness"
)

// BuildPlugin builds the plugin main package in dir (relative to the
// repository's root, e.g. "plugins/docker-tcp") into a temp dir and returns
// the binary's path.
func BuildPlugin(t *testing.T, dir string) string {
	t.Helper()
	start := time.Now()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(root, dir)
	dir = abs
	bin := filepath.Join(t.TempDir(), filepath.Base(abs))
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// TestLogger logs to t until the test ends (plugin processes may still
// write while they are being killed).
func TestLogger(t *testing.T) *slog.Logger {
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

// RunContracts runs the executor contract suite against a plugin twice,
// with the classic builder (env as given) and with BuildKit (network_mode
// none: the test daemon has no bridge), each three ways: the driver made by
// newDriver called directly, through the in-process go-plugin harness (the
// real gRPC boundary), and as the plugin process bin started with
// sdk.Launch.
func RunContracts(t *testing.T, env sdktest.Env, bin string, newDriver func(*slog.Logger) sdk.Executor) {
	buildkit := env
	buildkit.Host = proto.CloneOf(env.Host)
	buildkit.Host.Buildkit, buildkit.Host.NetworkMode = true, "none"
	for name, e := range map[string]sdktest.Env{"classic": env, "buildkit": buildkit} {
		t.Run(name, func(t *testing.T) { RunContractWays(t, e, bin, newDriver) })
	}
}

// RunContractWays runs the executor contract suite against a plugin for
// one env, three ways: the driver made by newDriver called directly,
// through the in-process go-plugin harness (the real gRPC boundary), and
// as the plugin process bin started with sdk.Launch.
func RunContractWays(t *testing.T, env sdktest.Env, bin string, newDriver func(*slog.Logger) sdk.Executor) {
	t.Run("direct", func(t *testing.T) {
		sdktest.RunContract(t, func(t *testing.T) sdk.Executor { return newDriver(TestLogger(t)) }, env)
	})
	t.Run("grpc", func(t *testing.T) {
		sdktest.RunContract(t, func(t *testing.T) sdk.Executor { return sdktest.Serve(t, newDriver(TestLogger(t))) }, env)
	})
	t.Run("process", func(t *testing.T) {
		sdktest.RunContract(t, func(t *testing.T) sdk.Executor {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := sdk.Launch(ctx, bin, TestLogger(t))
			if err != nil {
				t.Fatalf("launch: %v", err)
			}
			t.Cleanup(c.Kill)
			return c.Executor
		}, env)
	})
}
