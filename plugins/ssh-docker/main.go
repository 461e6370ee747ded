// Command ssh-docker is the executor plugin for Docker hosts reached over
// SSH (endpoint ssh://user@host[:port]): the docker-tcp driver's builds and
// pushes, with the Engine API tunnelled through `docker system dial-stdio`
// on the remote host. The executor starts it through go-plugin; run by hand
// it only prints a hint.
package main

import (
	"log/slog"
	"os"

	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/ssh-docker/driver"
)

func main() {
	level := new(slog.LevelVar)
	if os.Getenv("OBB_PLUGIN_DEBUG") != "" {
		level.Set(slog.LevelDebug)
	}
	logger := sdk.NewLogger(os.Stderr, level)
	sdk.Serve(driver.New(logger))
}
