package engine

import (
	"context"
	"log/slog"
	"sync"

	"github.com/docker/docker/client"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// Name and Version identify the plugin in Info.
const (
	Name    = "docker-tcp"
	Version = "0.1.0"
)

// Driver implements sdk.Executor. It keeps no state between builds except
// the cancel functions of the builds in flight and the image names they
// pull (see hold).
type Driver struct {
	logger    *slog.Logger
	name      string
	version   string
	newClient ClientFunc

	mu   sync.Mutex
	held map[string]holds // image name → builds in flight that pull it
}

var _ sdk.Executor = (*Driver)(nil)

// ClientFunc returns an Engine API client for host, or an error wrapping
// sdk.ErrInvalidArgument when host's endpoint or settings are not ones it
// speaks. The driver closes the client when the call that made it is over.
type ClientFunc func(host *pluginv1.HostConfig) (*client.Client, error)

// Options let another plugin reuse this driver (its builds, pushes,
// BuildKit sessions and secrets) over a transport of its own, such as
// ssh-docker's Engine API tunnelled over SSH.
type Options struct {
	// Name and Version are what Info reports (default Name and Version).
	Name, Version string
	// NewClient makes the Engine API client for a host (default: tcp://,
	// with TLS from tls_ca/tls_cert/tls_key, and unix://). A client with a
	// custom dialer works for everything, BuildKit sessions included: they
	// are hijacked through the client's transport.
	NewClient ClientFunc
}

// New returns a Driver that logs to logger.
func New(logger *slog.Logger) *Driver {
	return NewWithOptions(logger, Options{})
}

// NewWithOptions returns a Driver that logs to logger, named and connected
// as opts says; New(logger) is NewWithOptions(logger, Options{}).
func NewWithOptions(logger *slog.Logger, opts Options) *Driver {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Name == "" {
		opts.Name = Name
	}
	if opts.Version == "" {
		opts.Version = Version
	}
	if opts.NewClient == nil {
		opts.NewClient = newClient
	}
	return &Driver{
		logger: logger.With("plugin", opts.Name), name: opts.Name, version: opts.Version, newClient: opts.NewClient,
		held: make(map[string]holds),
	}
}

// Info names the plugin and the API versions it speaks.
func (d *Driver) Info(context.Context) (*pluginv1.InfoResponse, error) {
	return &pluginv1.InfoResponse{Name: d.name, Version: d.version, ApiVersions: []int32{sdk.APIVersion}}, nil
}
