package ingest

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-balena-builder/builder/platform/hub"
	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/ingest/project"
)

// Orchestration at ingest's own level: a build's run against a scheduler
// and a release service faked through their proto clients.

// stream is a server stream a fake hands out: its items, then err (io.EOF
// by default); or it blocks until ctx ends after the items when hold.
type stream[T any] struct {
	grpc.ClientStream
	ctx   context.Context
	items []*T
	err   error
	hold  bool
}

func (s *stream[T]) Recv() (*T, error) {
	if len(s.items) > 0 {
		it := s.items[0]
		s.items = s.items[1:]
		return it, nil
	}
	if s.hold {
		<-s.ctx.Done()
		return nil, status.FromContextError(s.ctx.Err()).Err()
	}
	if s.err != nil {
		return nil, s.err
	}
	return nil, io.EOF
}

// runScheduler plays a build's events; on CancelBuild it ends the build
// cancelled.
type runScheduler struct {
	schedulerv1.SchedulerServiceClient
	events    []*buildv1.Event // what WatchBuild sends
	submitErr error
	watchErr  error

	cancel chan struct{} // set: the build runs until CancelBuild

	mu        sync.Mutex
	submitted *schedulerv1.SubmitBuildRequest
	cancelled string
	once      sync.Once
}

func (f *runScheduler) SubmitBuild(_ context.Context, req *schedulerv1.SubmitBuildRequest, _ ...grpc.CallOption) (*schedulerv1.SubmitBuildResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submitted = req
	return &schedulerv1.SubmitBuildResponse{}, f.submitErr
}

func (f *runScheduler) WatchBuild(ctx context.Context, _ *schedulerv1.WatchBuildRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[schedulerv1.WatchBuildResponse], error) {
	if f.watchErr != nil {
		return nil, f.watchErr
	}
	var items []*schedulerv1.WatchBuildResponse
	for _, e := range f.events {
		items = append(items, &schedulerv1.WatchBuildResponse{Event: e})
	}
	if f.cancel != nil {
		// Until cancelled: then the jobs end cancelled.
		s := &cancellable{stream: stream[schedulerv1.WatchBuildResponse]{ctx: ctx, items: items}, cancel: f.cancel}
		return s, nil
	}
	return &stream[schedulerv1.WatchBuildResponse]{ctx: ctx, items: items}, nil
}

type cancellable struct {
	stream[schedulerv1.WatchBuildResponse]
	cancel chan struct{}
	ended  bool
}

func (c *cancellable) Recv() (*schedulerv1.WatchBuildResponse, error) {
	if len(c.items) > 0 {
		return c.stream.Recv()
	}
	if c.ended {
		return nil, io.EOF
	}
	<-c.cancel
	c.ended = true
	return &schedulerv1.WatchBuildResponse{Event: &buildv1.Event{Kind: &buildv1.Event_Finished{
		Finished: &buildv1.BuildFinished{State: buildv1.BuildState_BUILD_STATE_CANCELLED, Error: "cancelled"}}}}, nil
}

func (f *runScheduler) CancelBuild(_ context.Context, req *schedulerv1.CancelBuildRequest, _ ...grpc.CallOption) (*schedulerv1.CancelBuildResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelled = req.GetReason()
	if f.cancel != nil {
		f.once.Do(func() { close(f.cancel) })
	}
	return &schedulerv1.CancelBuildResponse{}, nil
}

// runRelease records what the run tells the API.
type runRelease struct {
	releasev1.ReleaseServiceClient
	deltas     []*releasev1.CreateDeltasResponse
	userCancel bool // the user cancelled the release through the API

	mu       sync.Mutex
	images   map[int64]*releasev1.FinishImageRequest
	release  *releasev1.FinishReleaseRequest
	askedFor int // CreateDeltas calls
}

func (f *runRelease) FinishImage(_ context.Context, req *releasev1.FinishImageRequest, _ ...grpc.CallOption) (*releasev1.FinishImageResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.images == nil {
		f.images = map[int64]*releasev1.FinishImageRequest{}
	}
	if f.images[req.GetImageId()] != nil {
		return nil, status.Error(codes.FailedPrecondition, "image finished twice")
	}
	f.images[req.GetImageId()] = req
	return &releasev1.FinishImageResponse{}, nil
}

func (f *runRelease) FinishRelease(_ context.Context, req *releasev1.FinishReleaseRequest, _ ...grpc.CallOption) (*releasev1.FinishReleaseResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.release = req
	if f.userCancel {
		return &releasev1.FinishReleaseResponse{Status: releasev1.Status_STATUS_CANCELLED}, nil
	}
	return &releasev1.FinishReleaseResponse{Status: req.GetStatus()}, nil
}

func (f *runRelease) CreateDeltas(ctx context.Context, _ *releasev1.CreateDeltasRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[releasev1.CreateDeltasResponse], error) {
	f.mu.Lock()
	f.askedFor++
	f.mu.Unlock()
	return &stream[releasev1.CreateDeltasResponse]{ctx: ctx, items: f.deltas}, nil
}

func jobUpdate(svc string, st buildv1.JobState, host, failure string, res *buildv1.ImageResult) *buildv1.Event {
	return &buildv1.Event{BuildId: "7", Service: svc, Kind: &buildv1.Event_Job{Job: &buildv1.JobUpdate{State: st, Host: host, Error: failure, Result: res}}}
}

func output(svc, text string) *buildv1.Event {
	return &buildv1.Event{BuildId: "7", Service: svc, Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Level: buildv1.Level_LEVEL_OUTPUT, Text: text}}}
}

func finished(st buildv1.BuildState, why string) *buildv1.Event {
	return &buildv1.Event{BuildId: "7", Kind: &buildv1.Event_Finished{Finished: &buildv1.BuildFinished{State: st, Error: why}}}
}

var okResult = &buildv1.ImageResult{Digest: "sha256:" + strings.Repeat("a", 64), Size: 1234}

// runBuild runs a two-service build (web: image 70, worker: image 71)
// against the fakes and returns the log as text.
func runBuild(t *testing.T, sched *runScheduler, rel *runRelease, during func(*build)) (*build, string) {
	t.Helper()
	s, err := New(Config{DataDir: t.TempDir()}, rel, sched, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	b := &build{id: "7", releaseID: 7, commit: "abc", fleet: &releasev1.Fleet{Id: 3, Slug: "org/app", AppName: "app", Arch: "amd64"}, user: "alice",
		token: "alice-token", dir: t.TempDir(), hub: hub.New(), ctx: ctx, cancel: cancel, created: time.Now(),
		plan:     &project.Plan{Services: []project.Service{{Name: "web", Content: []byte("FROM busybox\n")}, {Name: "worker"}}},
		images:   map[string]*releasev1.CreatedImage{"web": {ImageId: 70, Service: "web", Location: "reg/v2/w"}, "worker": {ImageId: 71, Service: "worker", Location: "reg/v2/k"}},
		services: map[string]*serviceRun{}, state: buildv1.BuildState_BUILD_STATE_RUNNING}
	s.builds.Add(b.id, b)
	done := make(chan struct{})
	go func() { defer close(done); s.run(b, &ingestv1.BuildSpec{}) }()
	if during != nil {
		during(b)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the run did not end")
	}
	var lines []string
	_ = b.hub.Watch(context.Background(), func(e *buildv1.Event) error {
		if l := e.GetLog(); l != nil {
			lines = append(lines, l.GetLevel().String()+" "+l.GetText())
		}
		return nil
	})
	if b.token != "" {
		t.Error("the finished build keeps the user's token")
	}
	return b, strings.Join(lines, "\n")
}

func TestRunRecordsEveryOutcome(t *testing.T) {
	okEvents := []*buildv1.Event{
		jobUpdate("web", buildv1.JobState_JOB_STATE_RUNNING, "amd-1", "", nil), output("web", "Step 1/1 : FROM busybox"),
		jobUpdate("worker", buildv1.JobState_JOB_STATE_RUNNING, "amd-2", "", nil),
		jobUpdate("web", buildv1.JobState_JOB_STATE_SUCCEEDED, "amd-1", "", okResult),
		jobUpdate("worker", buildv1.JobState_JOB_STATE_SUCCEEDED, "amd-2", "", okResult),
		finished(buildv1.BuildState_BUILD_STATE_SUCCEEDED, ""),
	}
	tests := []struct {
		name       string
		sched      *runScheduler
		rel        *runRelease
		during     func(*build)
		final      buildv1.BuildState
		images     map[int64]releasev1.Status
		imageErr   map[int64]string
		release    releasev1.Status
		deltaCalls int
		logHas     []string
	}{
		{name: "success, with deltas", sched: &runScheduler{events: okEvents},
			rel:   &runRelease{deltas: []*releasev1.CreateDeltasResponse{{Line: "Creating image deltas for web..."}, {Line: "Delta for worker not made: 400", Warning: true}}},
			final: buildv1.BuildState_BUILD_STATE_SUCCEEDED, release: releasev1.Status_STATUS_SUCCESS, deltaCalls: 1,
			images: map[int64]releasev1.Status{70: releasev1.Status_STATUS_SUCCESS, 71: releasev1.Status_STATUS_SUCCESS},
			logHas: []string{"LEVEL_OUTPUT Step 1/1 : FROM busybox", "LEVEL_DELTA Creating image deltas for web...", "LEVEL_WARN Delta for worker not made: 400", "LEVEL_SUCCESS Release successfully created!"}},
		{name: "one service fails", sched: &runScheduler{events: []*buildv1.Event{
			jobUpdate("web", buildv1.JobState_JOB_STATE_FAILED, "amd-1", "exit code 3", nil),
			jobUpdate("worker", buildv1.JobState_JOB_STATE_CANCELLED, "", "service web failed", nil),
			finished(buildv1.BuildState_BUILD_STATE_FAILED, "web: exit code 3")}},
			rel: &runRelease{}, final: buildv1.BuildState_BUILD_STATE_FAILED, release: releasev1.Status_STATUS_FAILED,
			images:   map[int64]releasev1.Status{70: releasev1.Status_STATUS_FAILED, 71: releasev1.Status_STATUS_CANCELLED},
			imageErr: map[int64]string{70: "exit code 3"},
			logHas:   []string{"LEVEL_ERROR Some services failed to build:", "web: exit code 3"}},
		{name: "cancelled while building", sched: &runScheduler{events: okEvents[:2], cancel: make(chan struct{})},
			rel: &runRelease{}, during: func(b *build) {
				time.Sleep(20 * time.Millisecond)
				b.cancel(errCancelled("cancelled by alice: wrong branch"))
			},
			final: buildv1.BuildState_BUILD_STATE_CANCELLED, release: releasev1.Status_STATUS_CANCELLED,
			images:   map[int64]releasev1.Status{70: releasev1.Status_STATUS_CANCELLED, 71: releasev1.Status_STATUS_CANCELLED},
			imageErr: map[int64]string{70: "cancelled by alice: wrong branch"},
			logHas:   []string{"LEVEL_ERROR Build cancelled: cancelled by alice: wrong branch"}},
		{name: "the scheduler refuses the build", sched: &runScheduler{submitErr: status.Error(codes.Unavailable, "scheduler down")},
			rel: &runRelease{}, final: buildv1.BuildState_BUILD_STATE_FAILED, release: releasev1.Status_STATUS_FAILED,
			images:   map[int64]releasev1.Status{70: releasev1.Status_STATUS_FAILED, 71: releasev1.Status_STATUS_FAILED},
			imageErr: map[int64]string{70: "cannot queue the build: scheduler down"}},
		{name: "the scheduler is lost mid-build", sched: &runScheduler{events: okEvents[:3]},
			rel: &runRelease{}, final: buildv1.BuildState_BUILD_STATE_FAILED, release: releasev1.Status_STATUS_FAILED,
			images:   map[int64]releasev1.Status{70: releasev1.Status_STATUS_FAILED, 71: releasev1.Status_STATUS_FAILED},
			imageErr: map[int64]string{70: "lost the scheduler"}},
		{name: "the user cancelled the release through the API", sched: &runScheduler{events: okEvents},
			rel: &runRelease{userCancel: true}, final: buildv1.BuildState_BUILD_STATE_CANCELLED, release: releasev1.Status_STATUS_SUCCESS, deltaCalls: 1,
			images: map[int64]releasev1.Status{70: releasev1.Status_STATUS_SUCCESS, 71: releasev1.Status_STATUS_SUCCESS}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, log := runBuild(t, tt.sched, tt.rel, tt.during)
			if b.state != tt.final {
				t.Errorf("final state %v, want %v", b.state, tt.final)
			}
			if tt.sched.submitted == nil || len(tt.sched.submitted.GetJobs()) != 2 || tt.sched.submitted.GetJobs()[0].GetImageLocation() != "reg/v2/w" {
				t.Errorf("submitted %v", tt.sched.submitted)
			}
			if len(tt.rel.images) != 2 {
				t.Fatalf("images finished: %v", tt.rel.images)
			}
			for id, want := range tt.images {
				got := tt.rel.images[id]
				if got.GetStatus() != want {
					t.Errorf("image %d: %v, want %v (%q)", id, got.GetStatus(), want, got.GetErrorMessage())
				}
				if want == releasev1.Status_STATUS_SUCCESS && (got.GetContentHash() != okResult.GetDigest() || got.GetImageSize() != 1234) {
					t.Errorf("image %d: hash %q size %d", id, got.GetContentHash(), got.GetImageSize())
				}
				if w := tt.imageErr[id]; w != "" && !strings.Contains(got.GetErrorMessage(), w) {
					t.Errorf("image %d error %q, want %q", id, got.GetErrorMessage(), w)
				}
			}
			if got := tt.rel.release.GetStatus(); got != tt.release {
				t.Errorf("release recorded %v, want %v", got, tt.release)
			}
			if tt.rel.askedFor != tt.deltaCalls {
				t.Errorf("CreateDeltas called %d times, want %d (only for a build that succeeded)", tt.rel.askedFor, tt.deltaCalls)
			}
			for _, want := range tt.logHas {
				if !strings.Contains(log, want) {
					t.Errorf("log lacks %q:\n%s", want, log)
				}
			}
			if tt.during != nil && !strings.Contains(tt.sched.cancelled, "wrong branch") {
				t.Errorf("the scheduler was asked to cancel with %q", tt.sched.cancelled)
			}
			if strings.Contains(log, "alice-token") {
				t.Error("the log holds the user's token")
			}
		})
	}
}
