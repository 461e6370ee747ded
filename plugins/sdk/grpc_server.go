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

// Cancel asks impl to cancel the job and also cancels the ctx of the job's
// Build call, so the build stops even if impl does not know the job yet.
func (s *grpcServer) Cancel(ctx context.Context, req *pluginv1.CancelRequest) (*pluginv1.CancelResponse, error) {
	err := s.impl.Cancel(ctx, req.GetJobId())
	if s.builds.cancel(req.GetJobId()) {
		return &pluginv1.CancelResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &pluginv1.CancelResponse{}, nil
}
