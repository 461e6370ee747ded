// Package executor owns the Docker hosts: it registers them with the
// scheduler, runs jobs on them through executor plugins and streams each
// job's events back.
package executor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-balena-builder/builder/plugins/sdk"
	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	executorv1 "github.com/open-balena-builder/builder/proto/builder/executor/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

// PluginSource returns the executor plugin called name.
type PluginSource interface {
	Get(ctx context.Context, name string) (sdk.Executor, error)
}

// ContextDialer returns a ContextService client for an ingest address.
type ContextDialer func(addr string) (ingestv1.ContextServiceClient, error)

// Config is what the executor needs to know.
type Config struct {
	Hosts []Host
	// Address is where the scheduler reaches this executor.
	Address string
}

// Host is one build host the executor drives: the plugin that drives it,
// how that plugin reaches it (Conn: endpoint, TLS or SSH material, BuildKit,
// network mode) and what the scheduler may place on it.
type Host struct {
	Plugin                     string
	Conn                       *pluginv1.HostConfig
	NativeArchs, EmulatedArchs []string
	MaxConcurrent              int
}

// Name is the host's name.
func (h Host) Name() string { return h.Conn.GetName() }

// Server implements executorv1.ExecutorServiceServer.
type Server struct {
	executorv1.UnimplementedExecutorServiceServer

	cfg      Config
	hosts    map[string]Host
	plugins  PluginSource
	contexts ContextDialer
	release  releasev1.ReleaseServiceClient
	log      *slog.Logger

	// caps holds what each healthy host can do, asked once when it becomes
	// healthy (again): not on every heartbeat.
	capsMu sync.Mutex
	caps   map[string]*pluginv1.CapabilitiesResponse
}

// New returns an executor for the configured hosts.
func New(cfg Config, plugins PluginSource, contexts ContextDialer, release releasev1.ReleaseServiceClient, logger *slog.Logger) *Server {
	hosts := map[string]Host{}
	for _, h := range cfg.Hosts {
		hosts[h.Name()] = h
	}
	return &Server{cfg: cfg, hosts: hosts, plugins: plugins, contexts: contexts, release: release, log: logger,
		caps: map[string]*pluginv1.CapabilitiesResponse{}}
}

// Register checks the hosts' health and announces them to the scheduler,
// now and every interval until ctx ends (the scheduler treats it as a
// heartbeat).
func (s *Server) Register(ctx context.Context, scheduler schedulerv1.SchedulerServiceClient, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	was := map[string]bool{}
	for {
		hosts := s.checkHosts(ctx, interval)
		for _, h := range hosts {
			if prev, seen := was[h.GetName()]; !seen || prev != h.GetHealthy() {
				if h.GetHealthy() {
					s.log.Info("host healthy", "host", h.GetName())
				} else {
					s.log.Warn("host unhealthy", "host", h.GetName(), "problem", h.GetHealthMessage())
				}
			}
			was[h.GetName()] = h.GetHealthy()
		}
		// Wait for the scheduler to come up (services may start in any order).
		rctx, cancel := context.WithTimeout(ctx, interval)
		_, err := scheduler.RegisterHosts(rctx, &schedulerv1.RegisterHostsRequest{Hosts: hosts}, grpc.WaitForReady(true))
		cancel()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("cannot register hosts with the scheduler", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkHosts asks each host's plugin whether the host answers, and what
// it can do.
func (s *Server) checkHosts(ctx context.Context, timeout time.Duration) []*schedulerv1.Host {
	hosts := make([]*schedulerv1.Host, len(s.cfg.Hosts))
	var wg sync.WaitGroup
	for i, h := range s.cfg.Hosts {
		hosts[i] = &schedulerv1.Host{Name: h.Name(), Plugin: h.Plugin, NativeArchs: h.NativeArchs, EmulatedArchs: h.EmulatedArchs,
			MaxConcurrent: int32(h.MaxConcurrent), ExecutorAddress: s.cfg.Address, Healthy: true}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if err := s.health(hctx, h); err != nil {
				hosts[i].Healthy, hosts[i].HealthMessage = false, errorText(err)
				s.forgetCapabilities(h.Name()) // asked again once it is back (maybe upgraded)
				return
			}
			// What the host can do, for placement (build secrets need
			// BuildKit).
			if caps, err := s.capabilities(hctx, h); err == nil {
				hosts[i].Secrets, hosts[i].EngineVersion = caps.GetSecrets(), caps.GetEngineVersion()
			} else {
				s.log.Debug("host capabilities unknown", "host", h.Name(), "error", err)
			}
		}()
	}
	wg.Wait()
	return hosts
}

func (s *Server) health(ctx context.Context, h Host) error {
	plugin, err := s.plugins.Get(ctx, h.Plugin)
	if err != nil {
		return err
	}
	return plugin.Health(ctx, h.Conn)
}

// capabilities returns what h can do: asked of its plugin the first time
// the host is healthy, then remembered.
func (s *Server) capabilities(ctx context.Context, h Host) (*pluginv1.CapabilitiesResponse, error) {
	s.capsMu.Lock()
	caps, ok := s.caps[h.Name()]
	s.capsMu.Unlock()
	if ok {
		return caps, nil
	}
	plugin, err := s.plugins.Get(ctx, h.Plugin)
	if err != nil {
		return nil, err
	}
	caps, err = plugin.Capabilities(ctx, h.Conn)
	if err != nil {
		return nil, err
	}
	s.capsMu.Lock()
	s.caps[h.Name()] = caps
	s.capsMu.Unlock()
	return caps, nil
}

func (s *Server) forgetCapabilities(host string) {
	s.capsMu.Lock()
	delete(s.caps, host)
	s.capsMu.Unlock()
}

// RunJob runs one job and streams its events; the last is its final state.
func (s *Server) RunJob(req *executorv1.RunJobRequest, stream grpc.ServerStreamingServer[executorv1.RunJobResponse]) error {
	job := req.GetJob()
	h, ok := s.hosts[req.GetHost()]
	if !ok {
		return status.Errorf(codes.NotFound, "host %q is not owned by this executor", req.GetHost())
	}
	ctx := stream.Context()
	send := func(e *buildv1.Event) error {
		e.BuildId, e.Service, e.Time = job.GetBuildId(), job.GetService(), timestamppb.Now()
		return stream.Send(&executorv1.RunJobResponse{Event: e})
	}
	info := func(level buildv1.Level, text string) error {
		return send(&buildv1.Event{Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Text: text, Level: level}}})
	}

	// The scheduler said which host and why ("Building on ...").
	switch {
	case req.GetEmulated() && job.GetEmulated():
		_ = info(buildv1.Level_LEVEL_INFO, fmt.Sprintf("Emulated build requested: building %s on %s under QEMU", job.GetArch(), h.Name()))
	case req.GetEmulated():
		_ = info(buildv1.Level_LEVEL_WARN, fmt.Sprintf("No native %s host is available: building on %s under QEMU emulation (slower)", job.GetArch(), h.Name()))
	}

	result, err := s.build(ctx, h, job, req.GetTicket(), func(l *pluginv1.Log) error {
		level := buildv1.Level_LEVEL_OUTPUT
		switch {
		case l.GetError():
			level = buildv1.Level_LEVEL_ERROR
		case l.GetInfo():
			level = buildv1.Level_LEVEL_INFO
		}
		return send(&buildv1.Event{Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Text: l.GetText(), Level: level, Replace: l.GetReplace()}}})
	})
	update := &buildv1.JobUpdate{Host: h.Name(), Emulated: req.GetEmulated()}
	switch {
	case err == nil:
		update.State = buildv1.JobState_JOB_STATE_SUCCEEDED
		update.Result = &buildv1.ImageResult{ImageId: result.GetImageId(), Digest: result.GetDigest(), Size: result.GetSize()}
	case ctx.Err() != nil || status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled):
		update.State, update.Error = buildv1.JobState_JOB_STATE_CANCELLED, "cancelled"
	default:
		update.State, update.Error = buildv1.JobState_JOB_STATE_FAILED, errorText(err)
		s.log.Warn("job failed", "job", job.GetJobId(), "host", h.Name(), "error", update.Error)
	}
	if sendErr := send(&buildv1.Event{Kind: &buildv1.Event_Job{Job: update}}); sendErr != nil && ctx.Err() == nil {
		return sendErr
	}
	return nil
}

// build fetches the context, gets a push token and runs the plugin; the
// job's ticket opens each of them.
func (s *Server) build(ctx context.Context, h Host, job *buildv1.Job, ticket string, logs sdk.LogSink) (*pluginv1.Result, error) {
	plugin, err := s.plugins.Get(ctx, h.Plugin)
	if err != nil {
		return nil, err
	}
	tok, err := s.release.RegistryToken(ctx, &releasev1.RegistryTokenRequest{JobId: job.GetJobId(), Ticket: ticket})
	if err != nil {
		return nil, fmt.Errorf("registry token for %s: %s", job.GetImageLocation(), status.Convert(err).Message())
	}
	cc, err := s.contexts(job.GetContextAddress())
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	secrets, err := cc.GetBuildSecrets(ctx, &ingestv1.GetBuildSecretsRequest{BuildId: job.GetBuildId(), Service: job.GetService(), JobId: job.GetJobId(), Ticket: ticket})
	if err != nil {
		return nil, fmt.Errorf("build secrets: %s", status.Convert(err).Message())
	}
	spec := &pluginv1.BuildSpec{
		JobId:          job.GetJobId(),
		Host:           h.Conn,
		Platform:       job.GetPlatform(),
		Nocache:        job.GetNocache(),
		Dockerfile:     job.GetDockerfile(),
		BuildArgs:      job.GetBuildArgs(),
		Labels:         job.GetLabels(),
		ImageRef:       job.GetImageLocation(),
		RegistryToken:  tok.GetToken(),
		RegistryConfig: secrets.GetRegistryConfig(),
		PullImage:      job.GetPullImage(),
		Target:         job.GetTarget(),
		CacheRef:       cacheRef(job),
	}
	for _, sec := range secrets.GetSecrets() {
		spec.Secrets = append(spec.Secrets, &pluginv1.Secret{Dest: sec.GetDest(), Content: sec.GetContent()})
	}
	if job.GetPullImage() != "" {
		return plugin.Build(ctx, spec, bytes.NewReader(nil), logs) // nothing to build: no context
	}
	ctxStream, err := cc.OpenContext(ctx, &ingestv1.OpenContextRequest{BuildId: job.GetBuildId(), Service: job.GetService(), JobId: job.GetJobId(), Ticket: ticket})
	if err != nil {
		return nil, fmt.Errorf("build context: %s", status.Convert(err).Message())
	}
	return plugin.Build(ctx, spec, &contextReader{stream: ctxStream}, logs)
}

// cacheRef is the registry cache of the job's fleet and service, next to
// its image: "<registry>/v2/<sha256 hex of obb-cache/<fleet>/<service>>:cache".
// The repository is services/release's CacheRepository, which the job's
// registry token also covers. "" when the job lacks what names it.
func cacheRef(job *buildv1.Job) string {
	registry, _, ok := strings.Cut(job.GetImageLocation(), "/")
	if !ok || registry == "" || job.GetFleet() == "" || job.GetService() == "" {
		return ""
	}
	sum := sha256.Sum256([]byte("obb-cache/" + job.GetFleet() + "/" + job.GetService()))
	return registry + "/v2/" + hex.EncodeToString(sum[:]) + ":cache"
}

// errorText is an error's message without gRPC's "rpc error: code = ..." noise.
func errorText(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}

// contextReader turns an OpenContext stream into an io.Reader.
type contextReader struct {
	stream grpc.ServerStreamingClient[ingestv1.OpenContextResponse]
	buf    []byte
}

func (r *contextReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		resp, err := r.stream.Recv()
		if err == io.EOF {
			return 0, io.EOF
		}
		if err != nil {
			return 0, fmt.Errorf("build context stream: %s", status.Convert(err).Message())
		}
		r.buf = resp.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
