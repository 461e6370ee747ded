package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/open-balena-builder/builder/platform/config"
	"github.com/open-balena-builder/builder/platform/hostrules"
	"github.com/open-balena-builder/builder/platform/hub"
	"github.com/open-balena-builder/builder/platform/rpc"
	"github.com/open-balena-builder/builder/platform/sqlstore"
	"github.com/open-balena-builder/builder/platform/telemetry"
	executorv1 "github.com/open-balena-builder/builder/proto/builder/executor/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/executor"
	"github.com/open-balena-builder/builder/services/ingest"
	"github.com/open-balena-builder/builder/services/ingest/admin"
	"github.com/open-balena-builder/builder/services/ingest/gateway"
	"github.com/open-balena-builder/builder/services/ingest/inflight"
	"github.com/open-balena-builder/builder/services/ingest/journal"
	"github.com/open-balena-builder/builder/services/ingest/upload"
	"github.com/open-balena-builder/builder/services/release"
	"github.com/open-balena-builder/builder/services/release/delta"
	"github.com/open-balena-builder/builder/services/release/openbalena"
	"github.com/open-balena-builder/builder/services/scheduler"
)

// clients holds one connection per peer service; each service reaches the
// others only through these, also when they share the process.
type clients struct {
	auth  *rpc.Internal
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (c *clients) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := rpc.Dial(addr, c.auth)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

func (c *clients) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.conns {
		cc.Close()
	}
}

// internalAuth chooses how the services authenticate each other: mTLS when
// configured (required between processes), else a secret of this process.
func internalAuth(cfg config.Config, services map[string]bool) (*rpc.Internal, error) {
	if cfg.TLS.Enabled() {
		return rpc.NewTLSInternal(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key)
	}
	if len(services) < 4 {
		return nil, rpc.ErrNoTLSBetweenProcesses
	}
	return rpc.NewSecretInternal()
}

// operatorToken is OBB_ADMIN_TOKEN, or the token kept in the data dir.
func operatorToken(cfg config.Config, logger *slog.Logger) (string, error) {
	if cfg.AdminToken != "" {
		return cfg.AdminToken, nil
	}
	path := filepath.Join(cfg.DataDir, "admin-token")
	tok, err := admin.TokenFile(path)
	if err != nil {
		return "", err
	}
	logger.Info("operator token (OBB_ADMIN_TOKEN not set)", "file", path)
	return tok, nil
}

// process is what one `obb serve` runs: gRPC servers, HTTP servers and
// background loops, stopped together.
type process struct {
	// drain runs first when the process stops (ingest's Shutdown).
	drain   func(grace time.Duration)
	logger  *slog.Logger
	auth    *rpc.Internal
	wg      sync.WaitGroup
	errs    chan error
	grpcs   []*grpc.Server
	https   []*http.Server
	cleanup []func()
}

// startGRPC serves an internal service on addr, every call authenticated.
func (p *process) startGRPC(name, addr string, register func(*grpc.Server)) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen %s: %w", name, addr, err)
	}
	srv, health := rpc.NewServer(p.logger.With("service", name), p.auth.Authenticate, p.auth.ServerOptions()...)
	register(srv)
	for svc := range srv.GetServiceInfo() {
		health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	p.grpcs = append(p.grpcs, srv)
	p.go_(name, func() error { return srv.Serve(lis) })
	p.logger.Info("serving", "service", name, "addr", lis.Addr().String(), "mtls", p.auth.TLS())
	return nil
}

// startHTTP serves h on addr; h2c also speaks HTTP/2 without TLS (gRPC).
func (p *process) startHTTP(name, addr string, h http.Handler, h2c bool) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen %s: %w", name, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}
	if h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	p.https = append(p.https, srv)
	p.go_(name, func() error {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	p.logger.Info("serving", "service", name, "addr", lis.Addr().String())
	return nil
}

func (p *process) go_(name string, f func() error) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := f(); err != nil {
			p.errs <- fmt.Errorf("%s: %w", name, err)
		}
	}()
}

// stop ends everything started, HTTP first (no new pushes), then gRPC.
func (p *process) stop() {
	for _, hs := range p.https {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = hs.Shutdown(sctx)
		cancel()
	}
	for _, s := range p.grpcs {
		stopped := make(chan struct{})
		go func() { s.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			s.Stop()
		}
	}
	for _, c := range p.cleanup {
		c()
	}
}

// serve runs the chosen services until ctx ends.
func serve(ctx context.Context, cfg config.Config, services map[string]bool, logger *slog.Logger) error {
	auth, err := internalAuth(cfg, services)
	if err != nil {
		return err
	}
	shutdown, err := telemetry.Setup(ctx, "open-balena-builder", version)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdown(sctx)
	}()
	w, err := newWiring(ctx, cfg, services, auth, logger)
	if err != nil {
		return err
	}
	defer w.close()
	if err := w.start(); err != nil {
		w.p.stop()
		return err
	}
	return w.run()
}

// wiring is what the services of one obb process are made of and share:
// the configuration, the process (listeners, background work, stop), the
// clients of the services (in this process or another), the metrics, the
// database and this builder's name in it.
type wiring struct {
	ctx      context.Context
	cfg      config.Config
	services map[string]bool
	logger   *slog.Logger
	p        *process
	peers    *clients
	metrics  *telemetry.Metrics
	db       *sqlstore.DB // nil when neither scheduler nor ingest runs here
	instance string

	release   releasev1.ReleaseServiceClient
	scheduler schedulerv1.SchedulerServiceClient
	ingest    ingestv1.IngestServiceClient
}

func newWiring(ctx context.Context, cfg config.Config, services map[string]bool, auth *rpc.Internal, logger *slog.Logger) (*wiring, error) {
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		return nil, err
	}
	w := &wiring{ctx: ctx, cfg: cfg, services: services, logger: logger, metrics: metrics,
		p: &process{logger: logger, auth: auth, errs: make(chan error, 16)}, peers: &clients{auth: auth, conns: map[string]*grpc.ClientConn{}}}
	for _, c := range []struct {
		addr string
		set  func(*grpc.ClientConn)
	}{
		{cfg.Listen.Release, func(cc *grpc.ClientConn) { w.release = releasev1.NewReleaseServiceClient(cc) }},
		{cfg.Listen.Scheduler, func(cc *grpc.ClientConn) { w.scheduler = schedulerv1.NewSchedulerServiceClient(cc) }},
		{cfg.Listen.Ingest, func(cc *grpc.ClientConn) { w.ingest = ingestv1.NewIngestServiceClient(cc) }},
	} {
		cc, err := w.peers.conn(c.addr)
		if err != nil {
			w.close()
			return nil, err
		}
		c.set(cc)
	}
	// The database (SQLite in the data dir, or OBB_DATABASE_URL) and this
	// builder's name in it, for the scheduler and ingest.
	w.instance = cfg.Instance
	if services["scheduler"] || services["ingest"] {
		if w.db, err = sqlstore.Open(ctx, cfg.DataDir, cfg.DatabaseURL); err != nil {
			w.close()
			return nil, err
		}
		if w.instance == "" {
			if w.instance, err = admin.TokenFile(filepath.Join(cfg.DataDir, "instance-id")); err != nil {
				w.close()
				return nil, fmt.Errorf("instance id: %w", err)
			}
		}
	}
	return w, nil
}

func (w *wiring) close() {
	w.peers.close()
	if w.db != nil {
		w.db.Close()
	}
}

// start starts the chosen services.
func (w *wiring) start() error {
	for _, s := range []struct {
		name  string
		start func() error
	}{{"release", w.startRelease}, {"scheduler", w.startScheduler}, {"executor", w.startExecutor}, {"ingest", w.startIngest}} {
		if !w.services[s.name] {
			continue
		}
		if err := s.start(); err != nil {
			return err
		}
	}
	if w.cfg.Listen.Metrics != "" {
		return w.p.startHTTP("metrics", w.cfg.Listen.Metrics, withPing(metricsOnly(w.metrics.Handler()), nil), false)
	}
	return nil
}

// run waits for a stop signal or a failed service, then stops: running
// builds get the grace (none after a failure), then everything stops.
func (w *wiring) run() error {
	var failed error
	grace := w.cfg.ShutdownGrace
	select {
	case <-w.ctx.Done():
	case failed = <-w.p.errs:
		w.logger.Error("service stopped", "error", failed)
		grace = 0 // cancel the builds now: they cannot end well
	}
	w.logger.Info("shutting down", "grace", grace)
	if w.p.drain != nil {
		w.p.drain(grace)
	}
	w.p.stop()
	w.p.wg.Wait()
	return failed
}

// background runs f until the process stops, beyond a SIGTERM: leases and
// heartbeats go on while running builds finish.
func (w *wiring) background(f func(ctx context.Context)) {
	ctx, stop := context.WithCancel(context.WithoutCancel(w.ctx))
	w.p.cleanup = append(w.p.cleanup, stop)
	w.p.wg.Add(1)
	go func() {
		defer w.p.wg.Done()
		f(ctx)
	}()
}

func (w *wiring) startRelease() error {
	cfg, log := w.cfg, w.logger.With("service", "release")
	api := openbalena.New(cfg.APIURL, &http.Client{Timeout: 2 * time.Minute}, log)
	rcfg := release.Config{APIURL: cfg.APIURL, BuilderToken: cfg.BuilderToken, RegistryHost: cfg.RegistryHost, DeltaTimeout: cfg.DeltaTimeout}
	if cfg.DeltaURL != "" {
		dc, err := delta.New(cfg.DeltaURL, &http.Client{})
		if err != nil {
			return fmt.Errorf("release: %w", err)
		}
		rcfg.Deltas = dc
	}
	if err := rcfg.Validate(); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	srv := release.New(rcfg, api, w.scheduler, log)
	return w.p.startGRPC("release", cfg.Listen.Release, func(s *grpc.Server) { releasev1.RegisterReleaseServiceServer(s, srv) })
}

func (w *wiring) startScheduler() error {
	cfg := w.cfg
	poll := time.Duration(0)
	if w.db.Shared {
		poll = 250 * time.Millisecond // slots other builders free
	}
	srv, err := scheduler.New(scheduler.Config{BuildTimeout: cfg.Limits.BuildTimeout, Meter: w.metrics.Meter("scheduler"), LogLimits: logLimits(cfg),
		Ledger: scheduler.NewSQLLedger(w.db, w.instance), Instance: w.instance, Placement: cfg.Placement, Poll: poll},
		func(addr string) (executorv1.ExecutorServiceClient, error) {
			cc, err := w.peers.conn(addr)
			if err != nil {
				return nil, err
			}
			return executorv1.NewExecutorServiceClient(cc), nil
		}, w.logger.With("service", "scheduler"))
	if err != nil {
		return err
	}
	if err := w.p.startGRPC("scheduler", cfg.Listen.Scheduler, func(s *grpc.Server) { schedulerv1.RegisterSchedulerServiceServer(s, srv) }); err != nil {
		return err
	}
	w.background(func(ctx context.Context) { srv.Maintain(ctx, sqlstore.NewLeases(w.db), cfg.InstanceLease) })
	return nil
}

func (w *wiring) startExecutor() error {
	cfg := w.cfg
	pluginDir := cfg.PluginDir
	if pluginDir == "" {
		exe, _ := os.Executable()
		pluginDir = filepath.Dir(exe)
	}
	log := w.logger.With("service", "executor")
	plugins := executor.NewPlugins(pluginDir, log)
	w.p.cleanup = append(w.p.cleanup, plugins.Close)
	srv := executor.New(executor.Config{Hosts: executorHosts(cfg), Address: cfg.Listen.Executor}, plugins,
		func(addr string) (ingestv1.ContextServiceClient, error) {
			cc, err := w.peers.conn(addr)
			if err != nil {
				return nil, err
			}
			return ingestv1.NewContextServiceClient(cc), nil
		}, w.release, log)
	if err := w.p.startGRPC("executor", cfg.Listen.Executor, func(s *grpc.Server) { executorv1.RegisterExecutorServiceServer(s, srv) }); err != nil {
		return err
	}
	for _, h := range cfg.Hosts {
		if hostrules.Plaintext(h.Endpoint, h.TLSCA, h.TLSCert) {
			log.Warn("Docker host without TLS: anyone who reaches it is root on it; use tcp://...:2376 with TLS (DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or tls_ca/tls_cert/tls_key) or ssh://",
				"host", h.Name, "endpoint", h.Endpoint)
		}
	}
	w.background(func(ctx context.Context) { srv.Register(ctx, w.scheduler, 10*time.Second) })
	return nil
}

func (w *wiring) startIngest() error {
	ctx, cfg, p := w.ctx, w.cfg, w.p
	log := w.logger.With("service", "ingest")
	token, err := operatorToken(cfg, log)
	if err != nil {
		return err
	}
	srv, err := ingest.New(ingest.Config{
		InFlight: inflight.New(w.db), Journal: journal.New(w.db), Instance: w.instance, Shared: w.db.Shared, CancelPoll: 500 * time.Millisecond,
		DataDir: cfg.DataDir, ContextAddress: cfg.Listen.Ingest, StatusPoll: 5 * time.Second, Meter: w.metrics.Meter("ingest"),
		Limits: upload.Limits{MaxCompressedBytes: cfg.Limits.MaxUploadBytes, MaxUncompressedBytes: cfg.Limits.MaxContextBytes,
			MaxEntries: cfg.Limits.MaxEntries, MaxExpansionRatio: cfg.Limits.MaxExpansionRatio},
		LogLimits: logLimits(cfg), OperatorToken: token, MaxBuilds: cfg.Limits.MaxBuilds, MaxBuildsPerUser: cfg.Limits.MaxBuildsPerUser,
	}, w.release, w.scheduler, log)
	if err != nil {
		return err
	}
	p.drain = func(grace time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), grace+30*time.Second)
		defer cancel()
		if n, err := srv.Shutdown(ctx, grace); err != nil {
			log.Error("builds still running at exit", "cancelled", n, "error", err)
		}
	}
	if err := p.startGRPC("ingest", cfg.Listen.Ingest, func(s *grpc.Server) {
		ingestv1.RegisterIngestServiceServer(s, srv)
		ingestv1.RegisterContextServiceServer(s, srv)
	}); err != nil {
		return err
	}
	// What a killed builder left: its uploads now, its releases as soon as
	// the release service answers.
	if err := srv.CleanDataDir(ctx); err != nil {
		log.Warn("cannot clean the data dir", "error", err)
	}
	// The lease, other builders' cancel requests and stopped builders'
	// builds.
	w.background(func(ctx context.Context) { srv.Maintain(ctx, sqlstore.NewLeases(w.db), cfg.InstanceLease) })
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if n, err := srv.Recover(ctx); err != nil {
			log.Error("cannot settle the builds the last run left: the next start tries again", "settled", n, "error", err)
		} else if n > 0 {
			log.Warn("settled the builds the last run left", "builds", n)
		}
	}()
	return w.startHTTP(srv.Draining, token)
}

// startHTTP starts the public port (/v3/build and a user's own builds) and
// the operator surface.
func (w *wiring) startHTTP(draining func() bool, operatorToken string) error {
	ctx, cfg, p := w.ctx, w.cfg, w.p
	public, err := gateway.NewMux(ctx, gateway.BuildHandler(w.ingest, gateway.UploadLimits{Timeout: cfg.Limits.UploadTimeout, MinRate: cfg.Limits.UploadMinRate, RateWindow: cfg.Limits.UploadRateWindow}, w.logger.With("service", "gateway")),
		func(ctx context.Context, m *runtime.ServeMux) error {
			return ingestv1.RegisterIngestServiceHandlerClient(ctx, m, w.ingest)
		})
	if err != nil {
		return err
	}
	if err := p.startHTTP("http", cfg.Listen.HTTP, otelhttp.NewHandler(withPing(public, draining), "http"), false); err != nil {
		return err
	}
	if cfg.Listen.Admin == "" {
		return nil
	}
	ops, err := admin.New(ctx, admin.Config{Token: operatorToken, Metrics: w.metrics.Handler()}, w.ingest, w.scheduler, w.logger.With("service", "admin"))
	if err != nil {
		return err
	}
	p.cleanup = append(p.cleanup, ops.Stop)
	return p.startHTTP("admin", cfg.Listen.Admin, otelhttp.NewHandler(ops, "admin"), true)
}

// executorHosts turns the configured hosts into the executor's: the
// connection its plugin gets (BuildKit per host, DOCKER_BUILDKIT by
// default) and what the scheduler may place there.
func executorHosts(cfg config.Config) []executor.Host {
	out := make([]executor.Host, 0, len(cfg.Hosts))
	for _, h := range cfg.Hosts {
		out = append(out, executor.Host{Plugin: h.Plugin, NativeArchs: h.NativeArchs, EmulatedArchs: h.EmulatedArchs, MaxConcurrent: h.MaxConcurrent,
			Conn: &pluginv1.HostConfig{Name: h.Name, Endpoint: h.Endpoint, TlsCa: h.TLSCA, TlsCert: h.TLSCert, TlsKey: h.TLSKey,
				SshPrivateKey: h.SSHKey, SshCertificate: h.SSHCertificate, SshKnownHosts: h.SSHKnownHosts,
				Buildkit: h.UsesBuildKit(cfg.BuildKit), NetworkMode: h.NetworkMode}})
	}
	return out
}

func logLimits(cfg config.Config) hub.Limits {
	return hub.Limits{MaxBytes: cfg.Limits.MaxLogBytes, MaxLineBytes: cfg.Limits.MaxLogLineBytes}
}

// withPing adds GET /ping (like open-balena-api's) for load balancers:
// "OK", or 503 once stopping says the builder takes no more pushes, so that
// the balancer sends them to another builder.
func withPing(next http.Handler, stopping func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			if stopping != nil && stopping() {
				http.Error(w, "the builder is shutting down", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("OK"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// metricsOnly serves GET /metrics and nothing else.
func metricsOnly(metrics http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		metrics.ServeHTTP(w, r)
	})
}
