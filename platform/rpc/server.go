// Package rpc holds the gRPC server and client options every service uses:
// OpenTelemetry stats handlers, health, reflection, panic recovery and
// request logging.
package rpc

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// MaxMessageBytes bounds one gRPC message (context chunks are far smaller).
const MaxMessageBytes = 16 << 20

// NewServer returns a gRPC server with tracing, recovery, logging and
// authentication (authn sees every call before its handler; nil: none, for
// tests only), and registers health and reflection on it. Register
// services, then call Health.SetServingStatus for each.
func NewServer(logger *slog.Logger, authn Authenticator, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	unary := []grpc.UnaryServerInterceptor{recoverUnary(logger), logUnary(logger)}
	stream := []grpc.StreamServerInterceptor{recoverStream(logger)}
	if authn != nil {
		unary = append(unary, authUnary(authn))
		stream = append(stream, authStream(authn))
	}
	srv := grpc.NewServer(append([]grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}, opts...)...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv, hs
}

func recoverUnary(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				logger.ErrorContext(ctx, "panic in handler", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				logger.Error("panic in stream handler", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(srv, ss)
	}
}

// logUnary logs failed calls at warn and the rest at debug. Requests are
// never logged: they may carry tokens.
func logUnary(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		if err != nil {
			logger.WarnContext(ctx, "rpc failed", "method", info.FullMethod, "code", status.Code(err).String(), "error", status.Convert(err).Message(), "duration", time.Since(start))
		} else {
			logger.DebugContext(ctx, "rpc", "method", info.FullMethod, "duration", time.Since(start))
		}
		return resp, err
	}
}
