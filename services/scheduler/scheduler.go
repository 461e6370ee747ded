// Package scheduler owns builds, jobs and the host pool. It places every job
// on a host of the right architecture, runs it through that host's
// executor, relays the job's events to whoever watches the build, and makes
// sure every job ends: succeeded, failed or cancelled, never stuck.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-balena-builder/builder/platform/hub"
	"github.com/open-balena-builder/builder/platform/recent"
	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	executorv1 "github.com/open-balena-builder/builder/proto/builder/executor/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

// ExecutorDialer returns a client for the executor at addr.
type ExecutorDialer func(addr string) (executorv1.ExecutorServiceClient, error)

// Config tunes the scheduler.
type Config struct {
	// BuildTimeout bounds one build, queue time included.
	BuildTimeout time.Duration
	// KeepBuilds is how many finished builds stay watchable.
	KeepBuilds int
	// Meter records the scheduler's metrics (nil: none).
	Meter metric.Meter
	// LogLimits bound a build's log kept for watchers.
	LogLimits hub.Limits
	// Ledger keeps host slots, drain marks and cache affinity; nil: in
	// memory, for this builder alone.
	Ledger Ledger
	// Instance names this builder in the ledger.
	Instance string
	// Placement is PlaceAffinity (default) or PlaceSpread.
	Placement string
	// Poll is how often a waiting job looks for a slot another builder
	// freed (a shared ledger); 0: only when this builder frees one.
	Poll time.Duration
}

// Server implements schedulerv1.SchedulerServiceServer.
type Server struct {
	schedulerv1.UnimplementedSchedulerServiceServer

	cfg     Config
	ledger  Ledger
	log     *slog.Logger
	dial    ExecutorDialer
	pool    *pool
	metrics *metrics
	tickets *tickets

	builds *recent.Set[*build]

	mu    sync.Mutex
	freed chan struct{}
}

// New returns a scheduler with an empty host pool.
func New(cfg Config, dial ExecutorDialer, logger *slog.Logger) (*Server, error) {
	if cfg.BuildTimeout <= 0 {
		cfg.BuildTimeout = 2 * time.Hour
	}
	if cfg.KeepBuilds <= 0 {
		cfg.KeepBuilds = 500
	}
	switch cfg.Placement {
	case "":
		cfg.Placement = PlaceAffinity
	case PlaceAffinity, PlaceSpread:
	default:
		return nil, fmt.Errorf("placement %q: want %s or %s", cfg.Placement, PlaceAffinity, PlaceSpread)
	}
	if cfg.Ledger == nil {
		cfg.Ledger = NewMemoryLedger(cfg.Instance)
	}
	p := newPool(time.Now)
	m, err := newMetrics(cfg.Meter, p)
	if err != nil {
		return nil, fmt.Errorf("scheduler metrics: %w", err)
	}
	return &Server{cfg: cfg, ledger: cfg.Ledger, log: logger, dial: dial, pool: p, metrics: m, tickets: newTickets(),
		builds: recent.New[*build](cfg.KeepBuilds), freed: make(chan struct{})}, nil
}

type build struct {
	id     string
	hub    *hub.Hub
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   context.CancelFunc // releases the timeout

	mu        sync.Mutex
	remaining int
	failed    []string // "service: error"
}

// errCancelled is the cause of a build cancelled by a user or operator.
var errCancelled = errors.New("cancelled")

// SubmitBuild queues one job per service and starts placing them.
func (s *Server) SubmitBuild(ctx context.Context, req *schedulerv1.SubmitBuildRequest) (*schedulerv1.SubmitBuildResponse, error) {
	if req.GetBuildId() == "" || len(req.GetJobs()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "build_id and at least one job are required")
	}
	// The jobs outlive this call but stay in its trace.
	parent, cancel := context.WithCancelCause(trace.ContextWithSpanContext(context.Background(), trace.SpanContextFromContext(ctx)))
	ctx, stop := context.WithTimeoutCause(parent, s.cfg.BuildTimeout, fmt.Errorf("build timed out after %s", s.cfg.BuildTimeout))
	b := &build{id: req.GetBuildId(), hub: hub.NewWithLimits(s.cfg.LogLimits), ctx: ctx, cancel: cancel, stop: stop, remaining: len(req.GetJobs())}
	if !s.builds.Add(b.id, b) {
		stop()
		cancel(nil)
		return nil, status.Errorf(codes.AlreadyExists, "build %s was already submitted", req.GetBuildId())
	}

	for _, j := range req.GetJobs() {
		b.hub.Publish(jobEvent(j, &buildv1.JobUpdate{State: buildv1.JobState_JOB_STATE_QUEUED}))
	}
	for _, j := range req.GetJobs() {
		go s.runJob(b, j)
	}
	return &schedulerv1.SubmitBuildResponse{}, nil
}

// WatchBuild streams a build's events from its start to its end.
func (s *Server) WatchBuild(req *schedulerv1.WatchBuildRequest, stream grpc.ServerStreamingServer[schedulerv1.WatchBuildResponse]) error {
	b, err := s.build(req.GetBuildId())
	if err != nil {
		return err
	}
	return b.hub.Watch(stream.Context(), func(e *buildv1.Event) error {
		return stream.Send(&schedulerv1.WatchBuildResponse{Event: e})
	})
}

// CancelBuild stops every job of a build.
func (s *Server) CancelBuild(_ context.Context, req *schedulerv1.CancelBuildRequest) (*schedulerv1.CancelBuildResponse, error) {
	b, err := s.build(req.GetBuildId())
	if err != nil {
		return nil, err
	}
	reason := req.GetReason()
	if reason == "" {
		reason = "cancelled"
	}
	b.cancel(fmt.Errorf("%w: %s", errCancelled, reason))
	return &schedulerv1.CancelBuildResponse{}, nil
}

// ListHosts shows the host pool, with the slots every builder sharing the
// ledger uses.
func (s *Server) ListHosts(ctx context.Context, _ *schedulerv1.ListHostsRequest) (*schedulerv1.ListHostsResponse, error) {
	if err := s.syncPool(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "host state: %v", err)
	}
	return &schedulerv1.ListHostsResponse{Hosts: s.pool.list()}, nil
}

// DrainHost stops placing jobs on a host (for every builder sharing the
// ledger); running jobs finish.
func (s *Server) DrainHost(ctx context.Context, req *schedulerv1.DrainHostRequest) (*schedulerv1.DrainHostResponse, error) {
	return s.setDraining(ctx, req.GetName(), true)
}

// ResumeHost puts a drained host back in the pool.
func (s *Server) ResumeHost(ctx context.Context, req *schedulerv1.ResumeHostRequest) (*schedulerv1.ResumeHostResponse, error) {
	resp, err := s.setDraining(ctx, req.GetName(), false)
	if err != nil {
		return nil, err
	}
	s.wake()
	return &schedulerv1.ResumeHostResponse{Host: resp.GetHost()}, nil
}

func (s *Server) setDraining(ctx context.Context, name string, draining bool) (*schedulerv1.DrainHostResponse, error) {
	if err := s.pool.known(name); err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	if err := s.ledger.SetDraining(ctx, name, draining); err != nil {
		return nil, status.Errorf(codes.Unavailable, "host state: %v", err)
	}
	if err := s.syncPool(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "host state: %v", err)
	}
	s.log.Info("host state changed", "host", name, "draining", draining)
	return &schedulerv1.DrainHostResponse{Host: s.pool.view(name)}, nil
}

// RegisterHosts records an executor's hosts (also its heartbeat).
func (s *Server) RegisterHosts(ctx context.Context, req *schedulerv1.RegisterHostsRequest) (*schedulerv1.RegisterHostsResponse, error) {
	slots := make([]Slots, 0, len(req.GetHosts()))
	for _, h := range req.GetHosts() {
		if h.GetName() == "" || h.GetExecutorAddress() == "" {
			return nil, status.Error(codes.InvalidArgument, "every host needs a name and an executor_address")
		}
		slots = append(slots, Slots{Host: h.GetName(), Max: int(h.GetMaxConcurrent())})
	}
	if err := s.ledger.Register(ctx, slots); err != nil {
		return nil, status.Errorf(codes.Unavailable, "host state: %v", err)
	}
	s.pool.register(req.GetHosts())
	if err := s.syncPool(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "host state: %v", err)
	}
	s.wake()
	return &schedulerv1.RegisterHostsResponse{}, nil
}

// syncPool loads the ledger's slots and drain marks into the pool.
func (s *Server) syncPool(ctx context.Context) error {
	load, err := s.ledger.Load(ctx)
	if err != nil {
		return err
	}
	s.pool.sync(load)
	return nil
}

// Leases are the instance heartbeats of builders sharing a ledger.
type Leases interface {
	Beat(ctx context.Context, instance string) error
	Live(ctx context.Context, lease time.Duration) ([]string, error)
}

// Maintain keeps this builder's lease and gives back the slots of builders
// whose lease expired (killed, or cut off from the database), every third of
// lease, until ctx ends. It first frees what an earlier run of this
// instance held: nothing of it runs any more.
func (s *Server) Maintain(ctx context.Context, leases Leases, lease time.Duration) {
	if n, err := s.ledger.FreeInstance(ctx, s.cfg.Instance); err != nil {
		s.log.Error("cannot free the slots of this builder's last run", "error", err)
	} else if n > 0 {
		s.log.Warn("freed the host slots this builder's last run held", "slots", n)
	}
	t := time.NewTicker(lease / 3)
	defer t.Stop()
	for {
		if err := leases.Beat(ctx, s.cfg.Instance); err != nil && ctx.Err() == nil {
			s.log.Error("cannot renew this builder's lease", "error", err)
		}
		if live, err := leases.Live(ctx, lease); err == nil {
			if n, err := s.ledger.Reclaim(ctx, live); err != nil {
				s.log.Error("cannot reclaim the slots of stopped builders", "error", err)
			} else if n > 0 {
				s.log.Warn("reclaimed the host slots of builders whose lease expired", "slots", n)
				s.wake()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) build(id string) (*build, error) {
	b, ok := s.builds.Get(id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "build %q not found", id)
	}
	return b, nil
}

// wake tells queued jobs that a slot or host may have become free.
func (s *Server) wake() {
	s.mu.Lock()
	close(s.freed)
	s.freed = make(chan struct{})
	s.mu.Unlock()
}

func (s *Server) freedChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.freed
}

// jobDone records a job's end; the last one closes the build.
func (s *Server) jobDone(b *build, j *buildv1.Job, end jobEnd) {
	b.mu.Lock()
	if !end.succeeded() {
		b.failed = append(b.failed, j.GetService()+": "+end.failure)
	}
	b.remaining--
	last := b.remaining == 0
	failures := append([]string(nil), b.failed...)
	b.mu.Unlock()
	if !end.succeeded() && !errors.Is(context.Cause(b.ctx), errCancelled) {
		// One service failed: the others cannot make a release any more.
		b.cancel(fmt.Errorf("service %s failed", j.GetService()))
	}
	if !last {
		return
	}
	fin := &buildv1.BuildFinished{State: buildv1.BuildState_BUILD_STATE_SUCCEEDED}
	switch cause := context.Cause(b.ctx); {
	case errors.Is(cause, errCancelled):
		fin = &buildv1.BuildFinished{State: buildv1.BuildState_BUILD_STATE_CANCELLED, Error: cause.Error()}
	case len(failures) > 0:
		fin = &buildv1.BuildFinished{State: buildv1.BuildState_BUILD_STATE_FAILED, Error: failures[0]}
	}
	b.hub.Publish(&buildv1.Event{BuildId: b.id, Time: now(), Kind: &buildv1.Event_Finished{Finished: fin}})
	b.hub.Close()
	b.stop()
	b.cancel(nil)
	s.builds.Finish(b.id)
}
