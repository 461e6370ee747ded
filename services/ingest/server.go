// Package ingest is the builder's front door: it takes a project upload,
// authorizes it, plans the build, records the release, hands the jobs to the
// scheduler and streams the build's story back to the caller.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/open-balena-builder/builder/platform/hub"
	"github.com/open-balena-builder/builder/platform/recent"
	"github.com/open-balena-builder/builder/platform/rpc"
	"github.com/open-balena-builder/builder/platform/usererr"
	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/ingest/inflight"
	"github.com/open-balena-builder/builder/services/ingest/journal"
	"github.com/open-balena-builder/builder/services/ingest/project"
	"github.com/open-balena-builder/builder/services/ingest/upload"
)

// Config is what ingest needs to know.
type Config struct {
	// DataDir holds uploads while they build.
	DataDir string
	// Limits bound one upload.
	Limits upload.Limits
	// ContextAddress is where executors reach this ingest's ContextService.
	ContextAddress string
	// KeepBuilds is how many finished builds stay watchable.
	KeepBuilds int
	// StatusPoll is how often a running build checks whether its release
	// was cancelled through the API (balena-cli's Ctrl-C). 0 disables.
	StatusPoll time.Duration
	// Meter records ingest's metrics (nil: none).
	Meter metric.Meter
	// LogLimits bound a build's log kept for watchers.
	LogLimits hub.Limits
	// InFlight keeps the running builds on disk, so that a restarted
	// builder settles what a killed one left (nil: not kept).
	InFlight inflight.Store
	// Instance names this builder in InFlight and Journal (several may
	// share one database); it must stay the same across restarts.
	Instance string
	// Journal keeps every build's view and log where every builder
	// sharing the database reads them (nil: this builder's, in memory).
	Journal journal.Store
	// Shared says other builders use the journal too: this one looks for
	// their cancel requests (CancelPoll) and settles the builds of those
	// whose lease expired.
	Shared     bool
	CancelPoll time.Duration
	// OperatorToken lets its bearer see and cancel every build (the admin
	// listener forwards it); empty: nobody is an operator here.
	OperatorToken string
	// MaxBuilds bounds the pushes in progress (upload included), in all and
	// per user; beyond, a push is refused with ResourceExhausted (HTTP 429).
	// Zero: DefaultMaxBuilds, DefaultMaxBuildsPerUser.
	MaxBuilds, MaxBuildsPerUser int
}

// Defaults of the concurrency limits.
const (
	DefaultMaxBuilds        = 50
	DefaultMaxBuildsPerUser = 5
)

// Server implements IngestService and ContextService.
type Server struct {
	ingestv1.UnimplementedIngestServiceServer
	ingestv1.UnimplementedContextServiceServer

	cfg       Config
	release   releasev1.ReleaseServiceClient
	scheduler schedulerv1.SchedulerServiceClient
	log       *slog.Logger
	metrics   *metrics

	builds  *recent.Set[*build]
	running sync.WaitGroup
	access  *accessCache
	slots   *slots
	// draining: Shutdown was called; no new pushes. starting is held
	// (read) by the pushes that are creating their release and build.
	draining atomic.Bool
	starting sync.RWMutex
}

// New returns an ingest server.
func New(cfg Config, release releasev1.ReleaseServiceClient, scheduler schedulerv1.SchedulerServiceClient, logger *slog.Logger) (*Server, error) {
	if cfg.KeepBuilds <= 0 {
		cfg.KeepBuilds = 500
	}
	if cfg.MaxBuilds <= 0 {
		cfg.MaxBuilds = DefaultMaxBuilds
	}
	if cfg.MaxBuildsPerUser <= 0 {
		cfg.MaxBuildsPerUser = DefaultMaxBuildsPerUser
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "builds"), 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	m, err := newMetrics(cfg.Meter)
	if err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	return &Server{cfg: cfg, release: release, scheduler: scheduler, log: logger, metrics: m, builds: recent.New[*build](cfg.KeepBuilds),
		access: newAccessCache(time.Now), slots: newSlots(cfg.MaxBuilds, cfg.MaxBuildsPerUser)}, nil
}

// Wait blocks until every background build has ended (for shutdown and tests).
func (s *Server) Wait() { s.running.Wait() }

// bearer extracts the caller's token from "authorization: Bearer <t>".
func bearer(ctx context.Context) (string, error) {
	if tok, ok := rpc.BearerFromContext(ctx); ok {
		return tok, nil
	}
	return "", status.Error(codes.Unauthenticated, "no token: send Authorization: Bearer <token> (log in with `balena login`)")
}

// Build runs one push: spec, Accepted, upload, Started, events.
func (s *Server) Build(stream grpc.BidiStreamingServer[ingestv1.BuildRequest, ingestv1.BuildResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return status.Error(codes.InvalidArgument, "expected a build spec first")
	}
	spec := first.GetSpec()
	if spec == nil || spec.GetSlug() == "" {
		return status.Error(codes.InvalidArgument, "the build spec needs a fleet slug (slug=org/fleet)")
	}
	if s.draining.Load() {
		return errDraining
	}
	token, err := bearer(ctx)
	if err != nil {
		return err
	}
	auth, err := s.release.Authorize(ctx, &releasev1.AuthorizeRequest{UserToken: token, Slug: spec.GetSlug()})
	if err != nil {
		return passOn(err)
	}
	free, err := s.slots.take(auth.GetUser().GetUsername())
	if err != nil {
		return err
	}
	started := false
	defer func() {
		if !started {
			free()
		}
	}()
	if err := stream.Send(&ingestv1.BuildResponse{Msg: &ingestv1.BuildResponse_Accepted{Accepted: &ingestv1.Accepted{
		User: auth.GetUser().GetUsername(), Fleet: auth.GetFleet().GetSlug()}}}); err != nil {
		return err
	}

	dir, err := os.MkdirTemp(filepath.Join(s.cfg.DataDir, "builds"), "upload-")
	if err != nil {
		return status.Errorf(codes.Internal, "cannot store the upload: %v", err)
	}
	b, err := s.prepare(ctx, stream, spec, token, auth, dir, free)
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	started = true
	if err := stream.Send(&ingestv1.BuildResponse{Msg: &ingestv1.BuildResponse_Started{Started: &ingestv1.Started{
		BuildId: b.id, ReleaseId: b.releaseID, Commit: b.commit}}}); err != nil {
		b.cancel(errCancelled("the client disconnected"))
		return err
	}
	if spec.GetHeadless() {
		return nil
	}
	err = b.hub.Watch(ctx, func(e *buildv1.Event) error {
		return stream.Send(&ingestv1.BuildResponse{Msg: &ingestv1.BuildResponse_Event{Event: e}})
	})
	if err != nil && ctx.Err() != nil {
		s.log.Info("client disconnected: cancelling the build", "build", b.id)
		b.cancel(errCancelled("the client disconnected"))
		return status.FromContextError(ctx.Err()).Err()
	}
	return err
}

// prepare receives the upload, plans the build, records the release and
// starts the build in the background.
func (s *Server) prepare(ctx context.Context, stream grpc.BidiStreamingServer[ingestv1.BuildRequest, ingestv1.BuildResponse],
	spec *ingestv1.BuildSpec, token string, auth *releasev1.AuthorizeResponse, dir string, free func()) (*build, error) {
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o700); err != nil {
		return nil, status.Errorf(codes.Internal, "cannot store the upload: %v", err)
	}
	pr, pw := io.Pipe()
	go func() {
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(fmt.Errorf("upload interrupted: %w", err))
				return
			}
			if _, err := pw.Write(msg.GetChunk()); err != nil {
				return // the reader gave up; its error is what counts
			}
		}
	}()
	stats, err := upload.Extract(ctx, pr, src, s.cfg.Limits)
	pr.CloseWithError(errors.New("upload no longer read"))
	if err != nil {
		if ue, ok := usererr.As(err); ok {
			return nil, status.Error(codes.InvalidArgument, ue.Error())
		}
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Errorf(codes.Internal, "cannot store the upload: %v", err)
	}
	s.metrics.uploaded.Add(ctx, stats.CompressedBytes)
	fleet := auth.GetFleet()
	target := project.Target{AppName: fleet.GetAppName(), DeviceType: fleet.GetDeviceType(), Arch: fleet.GetArch()}
	plan, err := project.Resolve(src, spec.GetDockerfilePath(), target)
	if err != nil {
		if pe, ok := usererr.As(err); ok {
			return nil, status.Error(codes.InvalidArgument, pe.Error())
		}
		return nil, status.Errorf(codes.Internal, "plan the build: %v", err)
	}
	composition, err := structpb.NewStruct(plan.Composition)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "composition: %v", err)
	}
	req := &releasev1.CreateReleaseRequest{UserToken: token, FleetId: fleet.GetId(), Composition: composition, IsDraft: spec.GetIsDraft(), Semver: plan.Semver}
	if plan.Contract != nil {
		if req.Contract, err = structpb.NewStruct(plan.Contract); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "balena.yml: %v", err)
		}
	}
	for _, svc := range plan.Services {
		si := &releasev1.ServiceImage{Service: svc.Name, Labels: svc.Labels, Environment: svc.Environment}
		if svc.Contract != nil {
			if si.Contract, err = structpb.NewStruct(svc.Contract); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "contract of service %s: %v", svc.Name, err)
			}
		}
		req.Services = append(req.Services, si)
	}
	// A stopping builder starts no new build: Shutdown waits for the pushes
	// between here and running.Add.
	s.starting.RLock()
	defer s.starting.RUnlock()
	if s.draining.Load() {
		return nil, errDraining
	}
	rel, err := s.release.CreateRelease(ctx, req)
	if err != nil {
		return nil, passOn(err)
	}
	target.Commit = rel.GetCommit()
	b := &build{
		id: strconv.FormatInt(rel.GetReleaseId(), 10), releaseID: rel.GetReleaseId(), commit: rel.GetCommit(),
		fleet: fleet, user: auth.GetUser().GetUsername(), draft: spec.GetIsDraft(), token: token, dir: dir, plan: plan,
		images: map[string]*releasev1.CreatedImage{}, hub: hub.NewWithLimits(s.cfg.LogLimits), created: time.Now(),
		state: buildv1.BuildState_BUILD_STATE_RUNNING, services: map[string]*serviceRun{},
	}
	for _, img := range rel.GetImages() {
		b.images[img.GetService()] = img
	}
	b.ctx, b.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
	if err := plan.Render(src, target); err != nil {
		s.abandon(b, err.Error())
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	s.log.Info("build accepted", "build", b.id, "fleet", fleet.GetSlug(), "user", b.user, "arch", fleet.GetArch(),
		"files", stats.Files, "bytes", stats.UncompressedBytes)
	if !s.builds.Add(b.id, b) {
		s.abandon(b, "a build with this release id exists already")
		return nil, status.Errorf(codes.AlreadyExists, "build %s exists already", b.id)
	}
	if err := s.recordInFlight(ctx, b); err != nil {
		s.builds.Finish(b.id)
		s.abandon(b, "the builder could not record the build on its disk")
		return nil, status.Errorf(codes.Internal, "the builder could not record the build: %v", err)
	}
	if b.journaled, err = s.startJournal(context.WithoutCancel(ctx), b); err != nil {
		s.forgetInFlight(b.id)
		s.builds.Finish(b.id)
		s.abandon(b, "the builder could not record the build in its database")
		return nil, status.Errorf(codes.Internal, "the builder could not record the build: %v", err)
	}
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		defer free()
		s.run(b, spec)
	}()
	return b, nil
}

// passOn forwards another service's gRPC error with its code and message.
func passOn(err error) error {
	st := status.Convert(err)
	return status.Error(st.Code(), st.Message())
}

type cancelReason string

func (c cancelReason) Error() string { return string(c) }

// errCancelled marks a build stopped by a user (not a failure).
func errCancelled(why string) error { return cancelReason(why) }

func (s *Server) lookup(id string) (*build, error) {
	b, ok := s.builds.Get(id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "build %q not found", id)
	}
	return b, nil
}

// GetBuild returns one build the caller may see.
func (s *Server) GetBuild(ctx context.Context, req *ingestv1.GetBuildRequest) (*ingestv1.GetBuildResponse, error) {
	_, v, _, err := s.visible(ctx, req.GetBuildId())
	if err != nil {
		return nil, err
	}
	return &ingestv1.GetBuildResponse{Build: v}, nil
}

// ListBuilds returns the builds the caller may see, newest first: this
// builder's and, with a journal, those of every builder sharing it.
func (s *Server) ListBuilds(ctx context.Context, req *ingestv1.ListBuildsRequest) (*ingestv1.ListBuildsResponse, error) {
	c, err := s.callerOf(ctx)
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 50
	}
	all, err := s.allViews(ctx, limit)
	if err != nil {
		return nil, err
	}
	resp := &ingestv1.ListBuildsResponse{}
	seen := map[string]bool{} // fleet → visible: the API is asked once per fleet
	for _, v := range all {
		if len(resp.Builds) == limit {
			break
		}
		ok, asked := seen[v.GetFleet()]
		if !asked {
			var err error
			if ok, err = s.canSee(ctx, c, v.GetFleet()); err != nil {
				return nil, err
			}
			seen[v.GetFleet()] = ok
		}
		if ok {
			resp.Builds = append(resp.Builds, v)
		}
	}
	return resp, nil
}

// WatchBuild replays a build's events and follows them to the end.
func (s *Server) WatchBuild(req *ingestv1.WatchBuildRequest, stream grpc.ServerStreamingServer[ingestv1.WatchBuildResponse]) error {
	b, _, _, err := s.visible(stream.Context(), req.GetBuildId())
	if err != nil {
		return err
	}
	send := func(e *buildv1.Event) error {
		return stream.Send(&ingestv1.WatchBuildResponse{Event: e})
	}
	if b == nil {
		return s.followJournal(stream.Context(), req.GetBuildId(), send)
	}
	return b.hub.Watch(stream.Context(), send)
}

// CancelBuild stops a build; its release ends cancelled. The log says who
// cancelled it. A build another builder runs gets the request through the
// journal; that builder cancels it within a second.
func (s *Server) CancelBuild(ctx context.Context, req *ingestv1.CancelBuildRequest) (*ingestv1.CancelBuildResponse, error) {
	b, v, c, err := s.visible(ctx, req.GetBuildId())
	if err != nil {
		return nil, err
	}
	why := cancelText(c, req.GetReason())
	s.log.Info("build cancelled", "build", req.GetBuildId(), "by", why, "here", b != nil)
	if b == nil {
		if _, err := s.cfg.Journal.RequestCancel(ctx, req.GetBuildId(), why); err != nil {
			return nil, status.Errorf(codes.Unavailable, "cannot reach the builder running this build: %v", err)
		}
		return &ingestv1.CancelBuildResponse{Build: v}, nil
	}
	b.cancel(errCancelled(why))
	return &ingestv1.CancelBuildResponse{Build: b.view()}, nil
}
