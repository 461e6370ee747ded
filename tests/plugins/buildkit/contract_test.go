package buildkit

import (
	"log/slog"
	"testing"

	"github.com/open-balena-builder/builder/plugins/buildkit/driver"
	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/tests/pluginstack"
)

// TestContract runs the executor contract against a real buildkitd (OCI
// worker, runc) and the token-auth registry, three ways: the driver called
// directly, through the in-process go-plugin harness (the real gRPC
// boundary), and as a plugin process built from main.go and started with
// sdk.Launch. buildkitd has no image store (sdktest.Env.NoImageStore): the
// suite checks the pushed images by pulling them into the stack's dockerd.
func TestContract(t *testing.T) {
	s := startStack(t)
	bin := pluginstack.BuildPlugin(t, "plugins/buildkit")
	pluginstack.RunContractWays(t, s.env(), bin, func(l *slog.Logger) sdk.Executor { return driver.New(l) })
}
