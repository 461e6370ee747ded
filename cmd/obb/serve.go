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
	"github.com/open-balena-builder/builder/platform/rpc"
	"github.com/open-balena-builder/builder/platform/telemetry"
	executorv1 "github.com/open-balena-builder/builder/proto/builder/executor/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/executor"
	"github.com/open-balena-builder/builder/services/ingest"
	"github.com/open-balena-builder/builder/services/ingest/gateway"
	"github.com/open-balena-builder/builder/services/ingest/upload"
	"github.com/open-balena-builder/builder/services/release"
	"github.com/open-balena-builder/builder/services/release/openbalena"
	"github.com/open-balena-builder/builder/services/scheduler"
)

// clients holds one connection per peer service; each service reaches the
// others only through these, also when they share the process.
type clients struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (c *clients) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := rpc.Dial(addr)
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

// serve runs the chosen services until ctx ends.
func serve(ctx context.Context, cfg config.Config, services map[string]bool, logger *slog.Logger) error {
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
	peers := &clients{conns: map[string]*grpc.ClientConn{}}
	defer peers.close()
	releaseConn, err := peers.conn(cfg.Listen.Release)
	if err != nil {
		return err
	}
	schedulerConn, err := peers.conn(cfg.Listen.Scheduler)
	if err != nil {
		return err
	}
	ingestConn, err := peers.conn(cfg.Listen.Ingest)
	if err != nil {
		return err
	}
	releaseClient := releasev1.NewReleaseServiceClient(releaseConn)
	schedulerClient := schedulerv1.NewSchedulerServiceClient(schedulerConn)
	ingestClient := ingestv1.NewIngestServiceClient(ingestConn)

	var (
		wg      sync.WaitGroup
		errs    = make(chan error, 8)
		servers []*grpc.Server
		cleanup []func()
	)
	start := func(name, addr string, register func(*grpc.Server)) error {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s: listen %s: %w", name, addr, err)
		}
		srv, health := rpc.NewServer(logger.With("service", name))
		register(srv)
		for svc := range srv.GetServiceInfo() {
			health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
		}
		servers = append(servers, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			logger.Info("serving", "service", name, "addr", lis.Addr().String())
			if err := srv.Serve(lis); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
		return nil
	}
	fail := func(err error) error {
		for _, s := range servers {
			s.Stop()
		}
		for _, c := range cleanup {
			c()
		}
		return err
	}

	if services["release"] {
		api := openbalena.New(cfg.APIURL, &http.Client{Timeout: 2 * time.Minute}, logger.With("service", "release"))
		rcfg := release.Config{APIURL: cfg.APIURL, BuilderToken: cfg.BuilderToken, RegistryHost: cfg.RegistryHost}
		if err := rcfg.Validate(); err != nil {
			return fail(fmt.Errorf("release: %w", err))
		}
		srv := release.New(rcfg, api, logger.With("service", "release"))
		if err := start("release", cfg.Listen.Release, func(s *grpc.Server) { releasev1.RegisterReleaseServiceServer(s, srv) }); err != nil {
			return fail(err)
		}
	}
	if services["scheduler"] {
		srv, err := scheduler.New(scheduler.Config{BuildTimeout: cfg.Limits.BuildTimeout, Meter: metrics.Meter("scheduler")},
			func(addr string) (executorv1.ExecutorServiceClient, error) {
				cc, err := peers.conn(addr)
				if err != nil {
					return nil, err
				}
				return executorv1.NewExecutorServiceClient(cc), nil
			}, logger.With("service", "scheduler"))
		if err != nil {
			return fail(err)
		}
		if err := start("scheduler", cfg.Listen.Scheduler, func(s *grpc.Server) { schedulerv1.RegisterSchedulerServiceServer(s, srv) }); err != nil {
			return fail(err)
		}
	}
	if services["executor"] {
		pluginDir := cfg.PluginDir
		if pluginDir == "" {
			exe, _ := os.Executable()
			pluginDir = filepath.Dir(exe)
		}
		plugins := executor.NewPlugins(pluginDir, logger.With("service", "executor"))
		cleanup = append(cleanup, plugins.Close)
		defer plugins.Close()
		srv := executor.New(executor.Config{Hosts: cfg.Hosts, BuildKit: cfg.BuildKit, Address: cfg.Listen.Executor}, plugins,
			func(addr string) (ingestv1.ContextServiceClient, error) {
				cc, err := peers.conn(addr)
				if err != nil {
					return nil, err
				}
				return ingestv1.NewContextServiceClient(cc), nil
			}, releaseClient, logger.With("service", "executor"))
		if err := start("executor", cfg.Listen.Executor, func(s *grpc.Server) { executorv1.RegisterExecutorServiceServer(s, srv) }); err != nil {
			return fail(err)
		}
		for _, h := range cfg.Hosts {
			if len(h.Endpoint) > 6 && h.Endpoint[:6] == "tcp://" && h.TLSCert == "" {
				logger.Warn("Docker host without TLS: anyone who reaches it is root on it; use tcp://...:2376 with tls_ca/tls_cert/tls_key or ssh://", "host", h.Name, "endpoint", h.Endpoint)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Register(ctx, schedulerClient, 10*time.Second)
		}()
	}
	var httpSrv *http.Server
	if services["ingest"] {
		srv, err := ingest.New(ingest.Config{
			DataDir: cfg.DataDir, ContextAddress: cfg.Listen.Ingest, StatusPoll: 5 * time.Second, Meter: metrics.Meter("ingest"),
			Limits: upload.Limits{MaxCompressedBytes: cfg.Limits.MaxUploadBytes, MaxUncompressedBytes: cfg.Limits.MaxContextBytes, MaxEntries: cfg.Limits.MaxEntries},
		}, releaseClient, schedulerClient, logger.With("service", "ingest"))
		if err != nil {
			return fail(err)
		}
		if err := start("ingest", cfg.Listen.Ingest, func(s *grpc.Server) {
			ingestv1.RegisterIngestServiceServer(s, srv)
			ingestv1.RegisterContextServiceServer(s, srv)
		}); err != nil {
			return fail(err)
		}
		mux, err := gateway.NewMux(ctx, ingestClient, []func(context.Context, *runtime.ServeMux) error{
			func(ctx context.Context, m *runtime.ServeMux) error {
				return ingestv1.RegisterIngestServiceHandlerClient(ctx, m, ingestClient)
			},
			func(ctx context.Context, m *runtime.ServeMux) error {
				return schedulerv1.RegisterSchedulerServiceHandlerClient(ctx, m, schedulerClient)
			},
		}, logger.With("service", "gateway"))
		if err != nil {
			return fail(err)
		}
		lis, err := net.Listen("tcp", cfg.Listen.HTTP)
		if err != nil {
			return fail(fmt.Errorf("http: listen %s: %w", cfg.Listen.HTTP, err))
		}
		httpSrv = &http.Server{Handler: otelhttp.NewHandler(withOps(mux, metrics.Handler()), "http"), ReadHeaderTimeout: 30 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			logger.Info("serving", "service", "http", "addr", lis.Addr().String())
			if err := httpSrv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("http: %w", err)
			}
		}()
	}

	var metricsSrv *http.Server
	if cfg.Listen.Metrics != "" {
		lis, err := net.Listen("tcp", cfg.Listen.Metrics)
		if err != nil {
			return fail(fmt.Errorf("metrics: listen %s: %w", cfg.Listen.Metrics, err))
		}
		metricsSrv = &http.Server{Handler: withOps(http.NotFoundHandler(), metrics.Handler()), ReadHeaderTimeout: 30 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := metricsSrv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("metrics: %w", err)
			}
		}()
	}

	select {
	case <-ctx.Done():
	case err := <-errs:
		logger.Error("service stopped", "error", err)
	}
	logger.Info("shutting down")
	for _, hs := range []*http.Server{httpSrv, metricsSrv} {
		if hs != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = hs.Shutdown(sctx)
			cancel()
		}
	}
	for _, s := range servers {
		stopped := make(chan struct{})
		go func() { s.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			s.Stop()
		}
	}
	wg.Wait()
	return nil
}

// withOps adds GET /ping (like open-balena-api's) for load balancers and
// GET /metrics for Prometheus.
func withOps(next, metrics http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ping":
			_, _ = w.Write([]byte("OK"))
		case "/metrics":
			metrics.ServeHTTP(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}
