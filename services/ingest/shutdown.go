package ingest

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

// ShuttingDown is the cause of the builds a stopping builder cancels.
const ShuttingDown = "the builder is shutting down"

// errDraining answers a push to a stopping builder (HTTP 503).
var errDraining = status.Error(codes.Unavailable, ShuttingDown+": push again in a minute")

// Draining says Shutdown was called: no more pushes are taken.
func (s *Server) Draining() bool { return s.draining.Load() }

// Shutdown stops taking pushes, lets the running builds finish for up to
// grace, then cancels the rest (their releases end cancelled, "the builder
// is shutting down") and waits for them to settle, until ctx ends. It
// tells how many builds it cancelled; an error means some had not settled
// when ctx ended.
func (s *Server) Shutdown(ctx context.Context, grace time.Duration) (int, error) {
	s.starting.Lock()
	s.draining.Store(true)
	s.starting.Unlock()
	settled := make(chan struct{})
	go func() {
		s.running.Wait()
		close(settled)
	}()
	if n := s.inFlight(); n > 0 {
		s.log.Info("shutting down: waiting for the running builds", "builds", n, "grace", grace)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-settled:
		return 0, nil
	case <-ctx.Done():
	case <-timer.C:
	}
	cancelled := 0
	for _, b := range s.builds.All() {
		if b.ctx.Err() == nil && b.view().GetState() == buildv1.BuildState_BUILD_STATE_RUNNING {
			b.cancel(errCancelled(ShuttingDown))
			cancelled++
		}
	}
	s.log.Warn("shutting down: cancelled the builds still running", "builds", cancelled)
	select {
	case <-settled:
		return cancelled, nil
	case <-ctx.Done():
		return cancelled, context.Cause(ctx)
	}
}

// inFlight counts the builds still running.
func (s *Server) inFlight() int {
	n := 0
	for _, b := range s.builds.All() {
		if b.view().GetState() == buildv1.BuildState_BUILD_STATE_RUNNING {
			n++
		}
	}
	return n
}
