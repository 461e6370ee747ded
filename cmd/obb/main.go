// Command obb is open-balena-builder: `obb serve all` runs the ingest,
// scheduler, executor and release services in one process; `obb serve
// ingest release` (any subset) runs some of them; `obb version` prints the
// version; `obb certs` makes the CA and certificate of the services' mTLS;
// `obb builds ...` and `obb hosts ...` are the operator's commands.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/open-balena-builder/builder/platform/certs"
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
  obb certs [--dir DIR] [--hosts NAME,IP,...] [--days N]
                                               a CA and a certificate for the services' mTLS
  obb builds ls | show ID | logs [-f] ID | cancel [--reason TEXT] ID
  obb hosts ls | drain NAME | resume NAME      the operator surface (OBB_ADMIN_ADDR), with -o json for scripts
  obb ping [ADDR]                              GET /ping on ADDR (default OBB_HTTP_ADDR or :80): a container health check
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
	case "certs":
		return certsCmd(args[1:])
	case "builds", "hosts":
		return opsCmd(args[0], args[1:], os.Stdout)
	case "ping":
		return ping(args[1:])
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

// ping checks that a builder answers GET /ping (exit 0) at addr: the health
// check of a container image that has no shell or curl.
func ping(args []string) error {
	addr := envOr("OBB_HTTP_ADDR", ":80")
	if len(args) > 0 {
		addr = args[0]
	}
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(strings.TrimSuffix(addr, "/") + "/ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/ping: %s", addr, resp.Status)
	}
	return nil
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

// certsCmd writes ca.pem, cert.pem and key.pem for OBB_TLS_*.
func certsCmd(args []string) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	dir := fs.String("dir", "obb-certs", "directory to write ca.pem, cert.pem and key.pem into")
	hostList := fs.String("hosts", "", "comma-separated host names and IP addresses the services are reached at (default: localhost, 127.0.0.1 and this machine's name)")
	days := fs.Int("days", 825, "validity in days")
	if err := fs.Parse(args); err != nil {
		return err
	}
	hosts := []string{"localhost", "127.0.0.1"}
	if name, err := os.Hostname(); err == nil && name != "" {
		hosts = append(hosts, name)
	}
	if *hostList != "" {
		hosts = nil
		for _, h := range strings.Split(*hostList, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hosts = append(hosts, h)
			}
		}
	}
	f, err := certs.Generate(*dir, hosts, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	fmt.Printf("# for every obb process (copy the three files to each machine; key.pem is secret)\nOBB_TLS_CA=%s\nOBB_TLS_CERT=%s\nOBB_TLS_KEY=%s\n", f.CA, f.Cert, f.Key)
	return nil
}
