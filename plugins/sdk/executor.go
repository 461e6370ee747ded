package sdk

import (
	"context"
	"io"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// APIVersion is the plugin API version this package speaks (the proto's v1).
const APIVersion = 1

// Executor builds images on one kind of build host and pushes them to the
// registry. Implementations must be safe for concurrent use: the executor runs
// several builds on one plugin at a time.
type Executor interface {
	// Info names the plugin and the API versions it speaks.
	Info(ctx context.Context) (*pluginv1.InfoResponse, error)
	// Capabilities tells what host can do (native platforms, BuildKit, secrets).
	Capabilities(ctx context.Context, host *pluginv1.HostConfig) (*pluginv1.CapabilitiesResponse, error)
	// Health returns nil when host answers and can build.
	Health(ctx context.Context, host *pluginv1.HostConfig) error
	// Build builds spec from the tar in buildContext, pushes the image to
	// spec.ImageRef (tag latest) and returns the result. Each output line goes
	// to logs as it comes. Cancelling ctx stops the build on the host (no
	// container left running).
	//
	// Over the plugin boundary a cancelled Build returns once the plugin has
	// stopped the build (at most CancelGrace later), with an error wrapping
	// context.Canceled. After an error, buildContext may still be read until
	// its current Read returns; after success it is no longer read.
	//
	// Cancelling ctx is the one way a build stops: over the plugin boundary
	// the SDK turns the host's cancel (the Cancel RPC, by job id) into the
	// cancel of this ctx, and refuses a second build of a running job id.
	Build(ctx context.Context, spec *pluginv1.BuildSpec, buildContext io.Reader, logs LogSink) (*pluginv1.Result, error)
}

// Canceller stops a running build by its job id from outside the Build
// call; the host side of a plugin (Launch, the gRPC client) is one. It
// returns an error wrapping ErrNotFound when no such build runs.
type Canceller interface {
	Cancel(ctx context.Context, jobID string) error
}

// LogSink receives build and push output one line at a time, in order. An
// error from the sink aborts the build. The sinks handed to plugins by Serve
// are safe for concurrent use.
type LogSink func(*pluginv1.Log) error
