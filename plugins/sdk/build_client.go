package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

const (
	// ChunkSize is the size of the context_chunk messages the host sends.
	ChunkSize = 256 << 10
	// CancelGrace is how long a cancelled Build waits for the plugin to stop
	// the build on its host (and clean up) before the call is torn down.
	CancelGrace = 30 * time.Second
	// cancelCallTimeout bounds the Cancel call made on the caller's behalf.
	cancelCallTimeout = 10 * time.Second
)

// runBuildStream drives one Build call from the host: it sends the spec, then
// the context in chunks on a goroutine, and hands each log line to logs
// until the result arrives.
//
// The call does not end the moment ctx is cancelled: that would cut the
// plugin off while it is still stopping the build. Instead the plugin is
// told to stop (Cancel with the job id) and Build returns once the plugin
// ends the call, or after CancelGrace at the latest.
func runBuildStream(ctx context.Context, client pluginv1.ExecutorPluginServiceClient, spec *pluginv1.BuildSpec, buildContext io.Reader, logs LogSink) (*pluginv1.Result, error) {
	streamCtx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()

	stop := &remoteStop{client: client, jobID: spec.GetJobId(), streamCtx: streamCtx, abort: abort}
	defer context.AfterFunc(ctx, stop.stop)()

	stream, err := client.Build(streamCtx)
	if err != nil {
		return nil, fromStatus(err)
	}
	if err := stream.Send(&pluginv1.BuildRequest{Msg: &pluginv1.BuildRequest_Spec{Spec: spec}}); err != nil {
		return nil, cancelledError(ctx, recvError(stream))
	}

	readErr := make(chan error, 1)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		if err := sendContext(stream, buildContext); err != nil {
			readErr <- err
			abort()
		}
	}()

	var (
		result  *pluginv1.Result
		sinkErr error
	)
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			select {
			case rerr := <-readErr:
				return nil, rerr
			default:
			}
			if sinkErr != nil {
				return nil, sinkErr
			}
			return nil, cancelledError(ctx, fromStatus(err))
		}
		switch msg := resp.Msg.(type) {
		case *pluginv1.BuildResponse_Log:
			if sinkErr != nil {
				continue // stopping: drain until the plugin ends the call
			}
			if err := logs(msg.Log); err != nil {
				sinkErr = fmt.Errorf("log sink: %w", err)
				go stop.stop()
			}
		case *pluginv1.BuildResponse_Result:
			result = msg.Result
		}
	}
	if sinkErr != nil {
		return nil, sinkErr
	}
	if result == nil {
		return nil, cancelledError(ctx, errors.New("plugin ended the build stream without a result"))
	}
	// The call is over; stop the sender if the plugin did not read it all,
	// and wait so that buildContext is not read after Build returns.
	abort()
	<-sent
	return result, nil
}

// remoteStop stops a build in the plugin once: with a Cancel call for the
// job, then, if the plugin has not ended the call within CancelGrace (or
// the Cancel call failed), by tearing the call down.
type remoteStop struct {
	client    pluginv1.ExecutorPluginServiceClient
	jobID     string
	streamCtx context.Context
	abort     context.CancelFunc
	once      sync.Once
}

func (s *remoteStop) stop() {
	s.once.Do(func() {
		if s.jobID == "" {
			s.abort()
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.streamCtx), cancelCallTimeout)
		defer cancel()
		if _, err := s.client.Cancel(ctx, &pluginv1.CancelRequest{JobId: s.jobID}); err != nil {
			s.abort()
			return
		}
		select {
		case <-s.streamCtx.Done():
		case <-time.After(CancelGrace):
			s.abort()
		}
	})
}

// cancelledError makes sure an error that ends a call whose ctx is done
// wraps ctx's error (the plugin's message is kept).
func cancelledError(ctx context.Context, err error) error {
	if ctx.Err() == nil || errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%w: %w", ctx.Err(), err)
}

// sendContext copies r to the stream in ChunkSize chunks and half-closes it.
// Only a failure to read r is returned: a failed Send means the call ended
// and its status comes from Recv.
func sendContext(stream pluginv1.ExecutorPluginService_BuildClient, r io.Reader) error {
	buf := make([]byte, ChunkSize)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			chunk := &pluginv1.BuildRequest{Msg: &pluginv1.BuildRequest_ContextChunk{ContextChunk: buf[:n]}}
			if serr := stream.Send(chunk); serr != nil {
				return nil
			}
		}
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			_ = stream.CloseSend()
			return nil
		case err != nil:
			return fmt.Errorf("read build context: %w", err)
		}
	}
}

// recvError returns the status of a call whose Send failed.
func recvError(stream pluginv1.ExecutorPluginService_BuildClient) error {
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("plugin ended the build stream before reading the spec")
			}
			return fromStatus(err)
		}
	}
}
