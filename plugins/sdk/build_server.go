package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// errBuildReturned stops the chunk receiver once impl.Build has returned.
var errBuildReturned = errors.New("build returned")

// serveBuildStream runs one Build call in the plugin: the first message is
// the spec, the following chunks are exposed to impl as an io.Reader, and
// log lines are sent as impl produces them, then the result.
func serveBuildStream(stream pluginv1.ExecutorPluginService_BuildServer, impl Executor, builds *inflight) error {
	first, err := stream.Recv()
	if err != nil {
		return status.Errorf(status.Code(err), "receive build spec: %v", err)
	}
	spec := first.GetSpec()
	if spec == nil {
		return status.Error(codes.InvalidArgument, "first build message must be the spec")
	}

	pr, pw := io.Pipe()
	go receiveContext(stream, pw)
	defer pr.CloseWithError(errBuildReturned)

	var (
		mu       sync.Mutex // grpc streams allow one sender at a time
		returned bool       // no sends after the call is over
	)
	logs := func(l *pluginv1.Log) error {
		mu.Lock()
		defer mu.Unlock()
		if returned {
			return errBuildReturned
		}
		if err := stream.Send(&pluginv1.BuildResponse{Msg: &pluginv1.BuildResponse_Log{Log: l}}); err != nil {
			return fmt.Errorf("send log: %w", err)
		}
		return nil
	}

	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	remove, ok := builds.add(spec.GetJobId(), cancel)
	if !ok {
		return toStatus(fmt.Errorf("job %q is already building: %w", spec.GetJobId(), ErrInvalidArgument))
	}
	defer remove()

	result, err := impl.Build(ctx, spec, pr, logs)
	mu.Lock()
	defer mu.Unlock()
	returned = true
	if err != nil {
		return toStatus(err)
	}
	if result == nil {
		return status.Error(codes.Internal, "plugin returned no build result")
	}
	return stream.Send(&pluginv1.BuildResponse{Msg: &pluginv1.BuildResponse_Result{Result: result}})
}

// receiveContext writes the incoming chunks to pw until the host half-closes
// the stream (EOF for the reader) or the call fails.
func receiveContext(stream pluginv1.ExecutorPluginService_BuildServer, pw *io.PipeWriter) {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			_ = pw.Close()
			return
		}
		if err != nil {
			_ = pw.CloseWithError(fmt.Errorf("receive build context: %w", err))
			return
		}
		chunk, ok := req.Msg.(*pluginv1.BuildRequest_ContextChunk)
		if !ok {
			_ = pw.CloseWithError(status.Error(codes.InvalidArgument, "build spec sent twice"))
			return
		}
		if _, err := pw.Write(chunk.ContextChunk); err != nil {
			return // the reader is closed: Build returned
		}
	}
}
