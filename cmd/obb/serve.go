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
	"go.opentelemetry.io/otel/metric"
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
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		return err
	}
	peers := &clients{auth: auth, conns: map[string]*grpc.ClientConn{}}
	defer peers.close()
	var cl struct {
		release   releasev1.ReleaseServiceClient
		scheduler schedulerv1.SchedulerServiceClient
		ingest    ingestv1.IngestServiceClient
	}
	for _, c := range []struct {
		addr string
		set  func(*grpc.ClientConn)
	}{
		{cfg.Listen.Release, func(cc *grpc.ClientConn) { cl.release = releasev1.NewReleaseServiceClient(cc) }},
		{cfg.Listen.Scheduler, func(cc *grpc.ClientConn) { cl.scheduler = schedulerv1.NewSchedulerServiceClient(cc) }},
		{cfg.Listen.Ingest, func(cc *grpc.ClientConn) { cl.ingest = ingestv1.NewIngestServiceClient(cc) }},
	} {
		cc, err := peers.conn(c.addr)
		if err != nil {
			return err
		}
		c.set(cc)
	}

	p := &process{logger: logger, auth: auth, errs: make(chan error, 16)}
	// The database (SQLite in the data dir, or OBB_DATABASE_URL) and this
	// builder's name in it, for the scheduler and ingest.
	var db *sqlstore.DB
	instance := cfg.Instance
	if services["scheduler"] || services["ingest"] {
		if db, err = sqlstore.Open(ctx, cfg.DataDir, cfg.DatabaseURL); err != nil {
			return err
		}
		defer db.Close()
		if instance == "" {
			if instance, err = admin.TokenFile(filepath.Join(cfg.DataDir, "instance-id")); err != nil {
				return fmt.Errorf("instance id: %w", err)
			}
		}
	}
	start := func() error {
		if services["release"] {
			api := openbalena.New(cfg.APIURL, &http.Client{Timeout: 2 * time.Minute}, logger.With("service", "release"))
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
			srv := release.New(rcfg, api, cl.scheduler, logger.With("service", "release"))
			if err := p.startGRPC("release", cfg.Listen.Release, func(s *grpc.Server) { releasev1.RegisterReleaseServiceServer(s, srv) }); err != nil {
				return err
			}
		}
		if services["scheduler"] {
			poll := time.Duration(0)
			if db.Shared {
				poll = 250 * time.Millisecond // slots other builders free
			}
			srv, err := scheduler.New(scheduler.Config{BuildTimeout: cfg.Limits.BuildTimeout, Meter: metrics.Meter("scheduler"), LogLimits: logLimits(cfg),
				Ledger: scheduler.NewSQLLedger(db, instance), Instance: instance, Placement: cfg.Placement, Poll: poll},
				func(addr string) (executorv1.ExecutorServiceClient, error) {
					cc, err := peers.conn(addr)
					if err != nil {
						return nil, err
					}
					return executorv1.NewExecutorServiceClient(cc), nil
				}, logger.With("service", "scheduler"))
			if err != nil {
				return err
			}
			if err := p.startGRPC("scheduler", cfg.Listen.Scheduler, func(s *grpc.Server) { schedulerv1.RegisterSchedulerServiceServer(s, srv) }); err != nil {
				return err
			}
			// The lease goes on while running builds finish after a SIGTERM.
			mctx, stop := context.WithCancel(context.WithoutCancel(ctx))
			p.cleanup = append(p.cleanup, stop)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				srv.Maintain(mctx, sqlstore.NewLeases(db), cfg.InstanceLease)
			}()
		}
		if services["executor"] {
			if err := startExecutor(ctx, p, cfg, peers, cl.release, cl.scheduler); err != nil {
				return err
			}
		}
		if services["ingest"] {
			if err := startIngest(ctx, p, cfg, db, instance, metrics.Handler(), metrics.Meter("ingest"), cl.release, cl.scheduler, cl.ingest); err != nil {
				return err
			}
		}
		if cfg.Listen.Metrics != "" {
			if err := p.startHTTP("metrics", cfg.Listen.Metrics, withPing(metricsOnly(metrics.Handler()), nil), false); err != nil {
				return err
			}
		}
		return nil
	}
	if err := start(); err != nil {
		p.stop()
		return err
	}

	var failed error
	grace := cfg.ShutdownGrace
	select {
	case <-ctx.Done():
	case failed = <-p.errs:
		logger.Error("service stopped", "error", failed)
		grace = 0 // cancel the builds now: they cannot end well
	}
	logger.Info("shutting down", "grace", grace)
	if p.drain != nil {
		p.drain(grace)
	}
	p.stop()
	p.wg.Wait()
	return failed
}

func startExecutor(ctx context.Context, p *process, cfg config.Config, peers *clients, rel releasev1.ReleaseServiceClient, sched schedulerv1.SchedulerServiceClient) error {
	pluginDir := cfg.PluginDir
	if pluginDir == "" {
		exe, _ := os.Executable()
		pluginDir = filepath.Dir(exe)
	}
	log := p.logger.With("service", "executor")
	plugins := executor.NewPlugins(pluginDir, log)
	p.cleanup = append(p.cleanup, plugins.Close)
	srv := executor.New(executor.Config{Hosts: cfg.Hosts, BuildKit: cfg.BuildKit, Address: cfg.Listen.Executor}, plugins,
		func(addr string) (ingestv1.ContextServiceClient, error) {
			cc, err := peers.conn(addr)
			if err != nil {
				return nil, err
			}
			return ingestv1.NewContextServiceClient(cc), nil
		}, rel, log)
	if err := p.startGRPC("executor", cfg.Listen.Executor, func(s *grpc.Server) { executorv1.RegisterExecutorServiceServer(s, srv) }); err != nil {
		return err
	}
	for _, h := range cfg.Hosts {
		if hostrules.Plaintext(h.Endpoint, h.TLSCA, h.TLSCert) {
			log.Warn("Docker host without TLS: anyone who reaches it is root on it; use tcp://...:2376 with TLS (DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or tls_ca/tls_cert/tls_key) or ssh://",
				"host", h.Name, "endpoint", h.Endpoint)
		}
	}
	// Heartbeats go on while running builds finish after a SIGTERM.
	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	p.cleanup = append(p.cleanup, stop)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		srv.Register(hctx, sched, 10*time.Second)
	}()
	return nil
}

func startIngest(ctx context.Context, p *process, cfg config.Config, db *sqlstore.DB, instance string, metrics http.Handler, meter metric.Meter, rel releasev1.ReleaseServiceClient, sched schedulerv1.SchedulerServiceClient, ing ingestv1.IngestServiceClient) error {
	log := p.logger.With("service", "ingest")
	token, err := operatorToken(cfg, log)
	if err != nil {
		return err
	}
	srv, err := ingest.New(ingest.Config{
		InFlight: inflight.New(db), Journal: journal.New(db), Instance: instance, Shared: db.Shared, CancelPoll: 500 * time.Millisecond,
		DataDir: cfg.DataDir, ContextAddress: cfg.Listen.Ingest, StatusPoll: 5 * time.Second, Meter: meter,
		Limits: upload.Limits{MaxCompressedBytes: cfg.Limits.MaxUploadBytes, MaxUncompressedBytes: cfg.Limits.MaxContextBytes,
			MaxEntries: cfg.Limits.MaxEntries, MaxExpansionRatio: cfg.Limits.MaxExpansionRatio},
		LogLimits: logLimits(cfg), OperatorToken: token, MaxBuilds: cfg.Limits.MaxBuilds, MaxBuildsPerUser: cfg.Limits.MaxBuildsPerUser,
	}, rel, sched, log)
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
	// builds, while running builds finish after a SIGTERM too.
	mctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	p.cleanup = append(p.cleanup, stop)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		srv.Maintain(mctx, sqlstore.NewLeases(db), cfg.InstanceLease)
	}()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if n, err := srv.Recover(ctx); err != nil {
			log.Error("cannot settle the builds the last run left: the next start tries again", "settled", n, "error", err)
		} else if n > 0 {
			log.Warn("settled the builds the last run left", "builds", n)
		}
	}()
	// The public port: /v3/build and a user's own builds.
	public, err := gateway.NewMux(ctx, gateway.BuildHandler(ing, gateway.UploadLimits{Timeout: cfg.Limits.UploadTimeout, MinRate: cfg.Limits.UploadMinRate, RateWindow: cfg.Limits.UploadRateWindow}, p.logger.With("service", "gateway")),
		func(ctx context.Context, m *runtime.ServeMux) error {
			return ingestv1.RegisterIngestServiceHandlerClient(ctx, m, ing)
		})
	if err != nil {
		return err
	}
	if err := p.startHTTP("http", cfg.Listen.HTTP, otelhttp.NewHandler(withPing(public, srv.Draining), "http"), false); err != nil {
		return err
	}
	// The operator surface.
	if cfg.Listen.Admin == "" {
		return nil
	}
	ops, err := admin.New(ctx, admin.Config{Token: token, Metrics: metrics}, ing, sched, p.logger.With("service", "admin"))
	if err != nil {
		return err
	}
	p.cleanup = append(p.cleanup, ops.Stop)
	return p.startHTTP("admin", cfg.Listen.Admin, otelhttp.NewHandler(ops, "admin"), true)
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
