package sdk

import (
	"context"
	"errors"
	"io"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// grpcClient is the host side: it implements Executor with the gRPC stub.
// Errors are *RemoteError values carrying the plugin's message and code.
type grpcClient struct {
	client pluginv1.ExecutorPluginServiceClient
}

var _ Executor = (*grpcClient)(nil)

func (c *grpcClient) Info(ctx context.Context) (*pluginv1.InfoResponse, error) {
	resp, err := c.client.Info(ctx, &pluginv1.InfoRequest{})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp, nil
}

func (c *grpcClient) Capabilities(ctx context.Context, host *pluginv1.HostConfig) (*pluginv1.CapabilitiesResponse, error) {
	resp, err := c.client.Capabilities(ctx, &pluginv1.CapabilitiesRequest{Host: host})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp, nil
}

// ErrUnhealthy is wrapped by Health's error when the plugin answered that
// the host is not healthy (as opposed to the call itself failing).
var ErrUnhealthy = errors.New("host unhealthy")

func (c *grpcClient) Health(ctx context.Context, host *pluginv1.HostConfig) error {
	resp, err := c.client.Health(ctx, &pluginv1.HealthRequest{Host: host})
	if err != nil {
		return fromStatus(err)
	}
	if !resp.GetHealthy() {
		return &unhealthyError{msg: resp.GetMessage()}
	}
	return nil
}

type unhealthyError struct{ msg string }

func (e *unhealthyError) Error() string { return e.msg }
func (e *unhealthyError) Unwrap() error { return ErrUnhealthy }

func (c *grpcClient) Build(ctx context.Context, spec *pluginv1.BuildSpec, buildContext io.Reader, logs LogSink) (*pluginv1.Result, error) {
	return runBuildStream(ctx, c.client, spec, buildContext, logs)
}

func (c *grpcClient) Cancel(ctx context.Context, jobID string) error {
	_, err := c.client.Cancel(ctx, &pluginv1.CancelRequest{JobId: jobID})
	return fromStatus(err)
}
