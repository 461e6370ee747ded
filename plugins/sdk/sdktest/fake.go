package sdktest

import (
	"context"
	"io"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// FakeExecutor is an sdk.Executor made of function fields (Nomad's
// MockDriver style). A nil field answers with a harmless default; set only
// what a test needs.
type FakeExecutor struct {
	InfoF         func(ctx context.Context) (*pluginv1.InfoResponse, error)
	CapabilitiesF func(ctx context.Context, host *pluginv1.HostConfig) (*pluginv1.CapabilitiesResponse, error)
	HealthF       func(ctx context.Context, host *pluginv1.HostConfig) error
	BuildF        func(ctx context.Context, spec *pluginv1.BuildSpec, buildContext io.Reader, logs sdk.LogSink) (*pluginv1.Result, error)
}

var _ sdk.Executor = (*FakeExecutor)(nil)

func (f *FakeExecutor) Info(ctx context.Context) (*pluginv1.InfoResponse, error) {
	if f.InfoF == nil {
		return &pluginv1.InfoResponse{Name: "fake", Version: "0.0.0", ApiVersions: []int32{sdk.APIVersion}}, nil
	}
	return f.InfoF(ctx)
}

func (f *FakeExecutor) Capabilities(ctx context.Context, host *pluginv1.HostConfig) (*pluginv1.CapabilitiesResponse, error) {
	if f.CapabilitiesF == nil {
		return &pluginv1.CapabilitiesResponse{}, nil
	}
	return f.CapabilitiesF(ctx, host)
}

func (f *FakeExecutor) Health(ctx context.Context, host *pluginv1.HostConfig) error {
	if f.HealthF == nil {
		return nil
	}
	return f.HealthF(ctx, host)
}

// Build without BuildF drains the context and returns an empty result.
func (f *FakeExecutor) Build(ctx context.Context, spec *pluginv1.BuildSpec, buildContext io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
	if f.BuildF == nil {
		if _, err := io.Copy(io.Discard, buildContext); err != nil {
			return nil, err
		}
		return &pluginv1.Result{}, nil
	}
	return f.BuildF(ctx, spec, buildContext, logs)
}
