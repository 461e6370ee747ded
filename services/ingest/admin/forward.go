package admin

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/open-balena-builder/builder/platform/rpc"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

// The admin gRPC server answers the operator's calls by passing them on to
// the internal services; the operator token goes along, so that ingest
// shows every build. Other methods of these services (Build, SubmitBuild,
// RegisterHosts...) are not served here.

// forwardAuth passes the caller's authorization on, marked as coming
// from the operator surface.
func forwardAuth(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = metadata.AppendToOutgoingContext(ctx, rpc.SurfaceKey, rpc.SurfaceAdmin)
	if v := md.Get("authorization"); len(v) > 0 {
		return metadata.AppendToOutgoingContext(ctx, "authorization", v[0])
	}
	return ctx
}

type ingestForwarder struct {
	ingestv1.UnimplementedIngestServiceServer
	c ingestv1.IngestServiceClient
}

func (f ingestForwarder) GetBuild(ctx context.Context, req *ingestv1.GetBuildRequest) (*ingestv1.GetBuildResponse, error) {
	return f.c.GetBuild(forwardAuth(ctx), req)
}

func (f ingestForwarder) ListBuilds(ctx context.Context, req *ingestv1.ListBuildsRequest) (*ingestv1.ListBuildsResponse, error) {
	return f.c.ListBuilds(forwardAuth(ctx), req)
}

func (f ingestForwarder) CancelBuild(ctx context.Context, req *ingestv1.CancelBuildRequest) (*ingestv1.CancelBuildResponse, error) {
	return f.c.CancelBuild(forwardAuth(ctx), req)
}

func (f ingestForwarder) WatchBuild(req *ingestv1.WatchBuildRequest, stream grpc.ServerStreamingServer[ingestv1.WatchBuildResponse]) error {
	in, err := f.c.WatchBuild(forwardAuth(stream.Context()), req)
	if err != nil {
		return err
	}
	for {
		msg, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

type schedulerForwarder struct {
	schedulerv1.UnimplementedSchedulerServiceServer
	c schedulerv1.SchedulerServiceClient
}

func (f schedulerForwarder) ListHosts(ctx context.Context, req *schedulerv1.ListHostsRequest) (*schedulerv1.ListHostsResponse, error) {
	return f.c.ListHosts(ctx, req)
}

func (f schedulerForwarder) DrainHost(ctx context.Context, req *schedulerv1.DrainHostRequest) (*schedulerv1.DrainHostResponse, error) {
	return f.c.DrainHost(ctx, req)
}

func (f schedulerForwarder) ResumeHost(ctx context.Context, req *schedulerv1.ResumeHostRequest) (*schedulerv1.ResumeHostResponse, error) {
	return f.c.ResumeHost(ctx, req)
}
