package sdk

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// grpcServer is the plugin side: it serves the gRPC service with an Executor.
// Errors from impl go back as status errors with their message unchanged.
type grpcServer struct {
	pluginv1.UnimplementedExecutorPluginServiceServer
	impl   Executor
	builds inflight
}

func (s *grpcServer) Info(ctx context.Context, _ *pluginv1.InfoRequest) (*pluginv1.InfoResponse, error) {
	resp, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if resp == nil {
		return nil, status.Error(codes.Internal, "plugin returned no info")
	}
	return resp, nil
}

func (s *grpcServer) Capabilities(ctx context.Context, req *pluginv1.CapabilitiesRequest) (*pluginv1.CapabilitiesResponse, error) {
	resp, err := s.impl.Capabilities(ctx, req.GetHost())
	if err != nil {
		return nil, toStatus(err)
	}
	if resp == nil {
		return nil, status.Error(codes.Internal, "plugin returned no capabilities")
	}
	return resp, nil
}

// Health answers healthy=false with the error's message when the host is
// down; the call itself only fails when the plugin cannot answer.
func (s *grpcServer) Health(ctx context.Context, req *pluginv1.HealthRequest) (*pluginv1.HealthResponse, error) {
	if err := s.impl.Health(ctx, req.GetHost()); err != nil {
		if ctx.Err() != nil {
			return nil, toStatus(fmt.Errorf("health: %w", ctx.Err()))
		}
		return &pluginv1.HealthResponse{Healthy: false, Message: err.Error()}, nil
	}
	return &pluginv1.HealthResponse{Healthy: true}, nil
}

func (s *grpcServer) Build(stream pluginv1.ExecutorPluginService_BuildServer) error {
	return serveBuildStream(stream, s.impl, &s.builds)
}

// Cancel cancels the ctx of the job's Build call: the one way a build
// stops.
func (s *grpcServer) Cancel(_ context.Context, req *pluginv1.CancelRequest) (*pluginv1.CancelResponse, error) {
	if !s.builds.cancel(req.GetJobId()) {
		return nil, toStatus(fmt.Errorf("cancel job %q: no such build running: %w", req.GetJobId(), ErrNotFound))
	}
	return &pluginv1.CancelResponse{}, nil
}
