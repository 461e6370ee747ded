// Command buildkit is the executor plugin for standalone BuildKit daemons
// (buildkitd reached at tcp:// with mTLS or unix://): Dockerfile builds with
// buildkitd's built-in frontend, build secrets and registry credentials
// through the BuildKit session, a registry cache per fleet and service, and
// the push straight from buildkitd to the registry. The executor starts it
// through go-plugin; run by hand it only prints a hint.
package main

import (
	"log/slog"
	"os"

	"github.com/open-balena-builder/builder/plugins/buildkit/driver"
	"github.com/open-balena-builder/builder/plugins/sdk"
)

func main() {
	level := new(slog.LevelVar)
	if os.Getenv("OBB_PLUGIN_DEBUG") != "" {
		level.Set(slog.LevelDebug)
	}
	logger := sdk.NewLogger(os.Stderr, level)
	sdk.Serve(driver.New(logger))
}
