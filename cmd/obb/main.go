// Command obb is open-balena-builder: `obb serve all` runs the ingest,
// scheduler, executor and release services in one process; `obb serve
// ingest release` (any subset) runs some of them; `obb version` prints the
// version.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/open-balena-builder/builder/platform/config"
	"github.com/open-balena-builder/builder/platform/redact"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "obb:", err)
		os.Exit(1)
	}
}

func usage() error {
	return fmt.Errorf(`usage:
  obb serve [--config FILE] all | SERVICE...   SERVICE: ingest, scheduler, executor, release
  obb version`)
}

func run(args []string) error {
	if len(args) == 0 {
		return usage()
	}
	switch args[0] {
	case "version":
		fmt.Println("obb", version)
		return nil
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		cfgPath := fs.String("config", os.Getenv("OBB_CONFIG"), "YAML config file (optional)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		services, err := parseServices(fs.Args())
		if err != nil {
			return err
		}
		cfg, err := config.Load(*cfgPath, os.Getenv)
		if err != nil {
			return fmt.Errorf("invalid configuration:\n%w", err)
		}
		logger := newLogger(cfg.LogLevel)
		// compose-go reports through logrus' global logger; what it says
		// reaches users as the composition's warnings instead.
		logrus.SetOutput(io.Discard)
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return serve(ctx, cfg, services, logger)
	}
	return usage()
}

func parseServices(args []string) (map[string]bool, error) {
	if len(args) == 0 {
		return nil, usage()
	}
	out := map[string]bool{}
	for _, a := range args {
		switch a {
		case "all":
			for _, s := range []string{"ingest", "scheduler", "executor", "release"} {
				out[s] = true
			}
		case "ingest", "scheduler", "executor", "release":
			out[a] = true
		default:
			return nil, fmt.Errorf("unknown service %q (ingest, scheduler, executor, release or all)", a)
		}
	}
	return out, nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l, ReplaceAttr: redact.ReplaceAttr}))
}
