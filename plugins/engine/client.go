package engine

import (
	"fmt"
	"net/url"

	"github.com/docker/docker/client"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// newClient returns an Engine API client for host: tcp:// (TLS when any of
// tls_ca/tls_cert/tls_key is set) or unix://. The API version is negotiated,
// so older daemons (Debian's 20.10, API 1.41) work.
func newClient(host *pluginv1.HostConfig) (*client.Client, error) {
	endpoint := host.GetEndpoint()
	u, err := url.Parse(endpoint)
	if err != nil || endpoint == "" {
		return nil, fmt.Errorf("host %q: bad endpoint %q: %w", host.GetName(), endpoint, sdk.ErrInvalidArgument)
	}
	if u.Scheme != "tcp" && u.Scheme != "unix" {
		return nil, fmt.Errorf("host %q: endpoint %q: docker-tcp speaks tcp:// and unix:// only: %w", host.GetName(), endpoint, sdk.ErrInvalidArgument)
	}
	opts := []client.Opt{client.WithHost(endpoint), client.WithAPIVersionNegotiation()}
	if host.GetTlsCa() != "" || host.GetTlsCert() != "" || host.GetTlsKey() != "" {
		if u.Scheme != "tcp" {
			return nil, fmt.Errorf("host %q: TLS needs a tcp:// endpoint: %w", host.GetName(), sdk.ErrInvalidArgument)
		}
		opts = append(opts, client.WithTLSClientConfig(host.GetTlsCa(), host.GetTlsCert(), host.GetTlsKey()))
	}
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("host %q: docker client: %w", host.GetName(), err)
	}
	return c, nil
}

// engineError wraps an Engine API error with context, marking connection
// failures as sdk.ErrUnavailable.
func engineError(what string, err error) error {
	if client.IsErrConnectionFailed(err) {
		return fmt.Errorf("%s: %w: %w", what, sdk.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
