package ingest

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
)

// runUntilCancelled makes the rig's build id run (as s.run would) until it
// is cancelled, or until finish is closed.
func runUntilCancelled(s *Server, id string, finish <-chan struct{}) {
	b, _ := s.builds.Get(id)
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		state := buildv1.BuildState_BUILD_STATE_SUCCEEDED
		select {
		case <-b.ctx.Done():
			state = buildv1.BuildState_BUILD_STATE_CANCELLED
		case <-finish:
		}
		b.mu.Lock()
		b.state, b.err = state, causeOf(b.ctx)
		b.mu.Unlock()
	}()
}

func causeOf(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil {
		return c.Error()
	}
	return ""
}

func TestShutdownLetsBuildsFinishThenCancelsTheRest(t *testing.T) {
	tests := []struct {
		name      string
		finishes  bool // the build ends within the grace
		cancelled int
		state     buildv1.BuildState
	}{
		{"a build that ends within the grace", true, 0, buildv1.BuildState_BUILD_STATE_SUCCEEDED},
		{"a build still running after it", false, 1, buildv1.BuildState_BUILD_STATE_CANCELLED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := accessRig(t)
			if b2, ok := s.builds.Get("2"); ok { // ended long ago
				b2.state = buildv1.BuildState_BUILD_STATE_SUCCEEDED
			}
			finish := make(chan struct{})
			runUntilCancelled(s, "1", finish)
			if tt.finishes {
				time.AfterFunc(20*time.Millisecond, func() { close(finish) })
			}
			grace := time.Hour
			if !tt.finishes {
				grace = 50 * time.Millisecond
			}
			n, err := s.Shutdown(context.Background(), grace)
			if err != nil || n != tt.cancelled {
				t.Fatalf("Shutdown = %d, %v; want %d cancelled", n, err, tt.cancelled)
			}
			b, _ := s.builds.Get("1")
			v := b.view()
			if v.GetState() != tt.state {
				t.Errorf("build ended %v, want %v", v.GetState(), tt.state)
			}
			if !tt.finishes && v.GetError() != ShuttingDown {
				t.Errorf("cause %q, want %q", v.GetError(), ShuttingDown)
			}
			// No new push once shutting down.
			err = s.Build(&fakeBuildStream{ctx: withToken("alice-token", false), reqs: []*ingestv1.BuildRequest{
				{Msg: &ingestv1.BuildRequest_Spec{Spec: &ingestv1.BuildSpec{Slug: "alice/app"}}}}})
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), ShuttingDown) {
				t.Errorf("a push while shutting down: %v, want Unavailable (503)", err)
			}
		})
	}
}

// fakeBuildStream is the server side of a Build stream fed from reqs.
type fakeBuildStream struct {
	grpc.ServerStream
	ctx  context.Context
	reqs []*ingestv1.BuildRequest
	sent []*ingestv1.BuildResponse
}

func (f *fakeBuildStream) Context() context.Context     { return f.ctx }
func (f *fakeBuildStream) SetHeader(metadata.MD) error  { return nil }
func (f *fakeBuildStream) SendHeader(metadata.MD) error { return nil }
func (f *fakeBuildStream) Send(r *ingestv1.BuildResponse) error {
	f.sent = append(f.sent, r)
	return nil
}

func (f *fakeBuildStream) Recv() (*ingestv1.BuildRequest, error) {
	if len(f.reqs) == 0 {
		return nil, io.EOF
	}
	r := f.reqs[0]
	f.reqs = f.reqs[1:]
	return r, nil
}
