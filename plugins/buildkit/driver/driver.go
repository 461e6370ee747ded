// Package driver is the buildkit executor plugin: it builds on a standalone
// BuildKit daemon (buildkitd, OCI or containerd worker) with BuildKit's own
// client, and buildkitd pushes the image straight to the registry.
//
// A build is one Solve of buildkitd's built-in Dockerfile frontend
// (dockerfile.v0, no frontend image is pulled: a "# syntax=" of Docker's
// own frontend is ignored, any other frontend is refused) on the context
// the executor streams (unpacked into a private temp dir and sent through
// the session's file sync), for the job's platform (other architectures
// run under QEMU/binfmt on the buildkitd host). The BuildKit session
// carries the build secrets (secretsprovider, mounted in every RUN step at
// /run/secrets/<dest>) and the registry credentials: the job's own token
// for the openBalena registry, registry_config for private base images.
// The export is type=image,push=true to the spec's image_ref:latest; with a
// cache_ref the build also imports and exports a registry cache
// (mode=max) there, so a fleet's service finds its layers on any host.
//
// Tenants of one buildkitd are kept apart as far as BuildKit allows: cache
// mounts are namespaced per build (BUILDKIT_CACHE_MOUNT_NS), custom
// frontends are refused, and an image named by digest, which buildkitd
// would serve from its content store without asking the registry, must
// first be found in its registry with the job's own credentials. The layer
// cache is shared: identical steps on the same base are CACHED.
package driver

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sort"

	bkclient "github.com/moby/buildkit/client"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// Name and Version identify the plugin in Info.
const (
	Name    = "buildkit"
	Version = "0.1.0"
)

// Driver implements sdk.Executor. It keeps no state between builds: a
// build stops when its ctx is cancelled.
type Driver struct {
	logger *slog.Logger
}

var _ sdk.Executor = (*Driver)(nil)

// New returns a Driver that logs to logger.
func New(logger *slog.Logger) *Driver {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Driver{logger: logger.With("plugin", Name)}
}

// Info names the plugin and the API versions it speaks.
func (d *Driver) Info(context.Context) (*pluginv1.InfoResponse, error) {
	return &pluginv1.InfoResponse{Name: Name, Version: Version, ApiVersions: []int32{sdk.APIVersion}}, nil
}

// Health returns nil when buildkitd answers ListWorkers with a worker.
func (d *Driver) Health(ctx context.Context, host *pluginv1.HostConfig) error {
	c, err := newClient(ctx, host)
	if err != nil {
		return err
	}
	defer c.Close()
	ws, err := c.ListWorkers(ctx)
	if err != nil {
		return fmt.Errorf("buildkitd %s: list workers: %w: %w", host.GetEndpoint(), err, sdk.ErrUnavailable)
	}
	if len(ws) == 0 {
		return fmt.Errorf("buildkitd %s has no worker: %w", host.GetEndpoint(), sdk.ErrUnavailable)
	}
	return nil
}

// Capabilities reports the platforms of buildkitd's workers (the first
// worker's first platform is the native one; the others, emulated through
// binfmt, follow), BuildKit and secrets, and buildkitd's version.
func (d *Driver) Capabilities(ctx context.Context, host *pluginv1.HostConfig) (*pluginv1.CapabilitiesResponse, error) {
	c, err := newClient(ctx, host)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ws, err := c.ListWorkers(ctx)
	if err != nil {
		return nil, fmt.Errorf("buildkitd %s: list workers: %w: %w", host.GetEndpoint(), err, sdk.ErrUnavailable)
	}
	resp := &pluginv1.CapabilitiesResponse{Buildkit: true, Secrets: true}
	seen := map[string]bool{}
	for _, w := range ws {
		for _, p := range w.Platforms {
			s := p.OS + "/" + p.Architecture
			if p.Variant != "" {
				s += "/" + p.Variant
			}
			if !seen[s] {
				seen[s] = true
				resp.NativePlatforms = append(resp.NativePlatforms, s)
			}
		}
	}
	if len(resp.NativePlatforms) > 1 {
		// Keep the first (the host's own); sort the rest for stable output.
		rest := resp.NativePlatforms[1:]
		sort.Strings(rest)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("buildkitd %s: info: %w: %w", host.GetEndpoint(), err, sdk.ErrUnavailable)
	}
	resp.EngineVersion = "buildkitd " + info.BuildkitVersion.Version
	return resp, nil
}

// newClient connects to the buildkitd of host: unix:///path, or
// tcp://host:port with mTLS from tls_ca (the CA buildkitd's certificate is
// checked against), tls_cert and tls_key (the client's), or plain tcp when
// none are given (the configuration allowed it).
func newClient(ctx context.Context, host *pluginv1.HostConfig) (*bkclient.Client, error) {
	ep := host.GetEndpoint()
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "unix" && u.Scheme != "tcp") {
		return nil, fmt.Errorf("host %q: endpoint %q: the buildkit plugin speaks tcp:// and unix://: %w", host.GetName(), ep, sdk.ErrInvalidArgument)
	}
	var opts []bkclient.ClientOpt
	if u.Scheme == "tcp" && (host.GetTlsCa() != "" || host.GetTlsCert() != "") {
		if (host.GetTlsCert() == "") != (host.GetTlsKey() == "") {
			return nil, fmt.Errorf("host %q: tls_cert and tls_key go together: %w", host.GetName(), sdk.ErrInvalidArgument)
		}
		if host.GetTlsCa() != "" {
			opts = append(opts, bkclient.WithServerConfig(u.Hostname(), host.GetTlsCa()))
		} else {
			opts = append(opts, bkclient.WithServerConfigSystem(u.Hostname()))
		}
		if host.GetTlsCert() != "" {
			opts = append(opts, bkclient.WithCredentials(host.GetTlsCert(), host.GetTlsKey()))
		}
	}
	c, err := bkclient.New(ctx, ep, opts...)
	if err != nil {
		return nil, fmt.Errorf("buildkitd %s: %w: %w", ep, err, sdk.ErrUnavailable)
	}
	return c, nil
}
