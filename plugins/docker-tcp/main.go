// Command docker-tcp is the executor plugin that builds on a remote Docker
// daemon (tcp:// with optional TLS, or unix://) with the classic builder and
// pushes from there. The executor starts it through go-plugin; run by hand
// it only prints a hint.
package main

import (
	"log/slog"
	"os"

	"github.com/open-balena-builder/builder/plugins/engine"
	"github.com/open-balena-builder/builder/plugins/sdk"
)

func main() {
	level := new(slog.LevelVar)
	if os.Getenv("OBB_PLUGIN_DEBUG") != "" {
		level.Set(slog.LevelDebug)
	}
	logger := sdk.NewLogger(os.Stderr, level)
	sdk.Serve(engine.New(logger))
}
