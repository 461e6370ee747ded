// Package admin is the operator surface: one listener (OBB_ADMIN_ADDR,
// 127.0.0.1:9100 by default) serving gRPC for grpcurl (IngestService's
// build calls, SchedulerService's host calls, reflection, health) and the
// same as REST, plus GET /metrics, all behind the operator token
// (OBB_ADMIN_TOKEN, or one made at first start in <data dir>/admin-token),
// and the build page (GET /, /ui/...: static files, see page.go) that
// asks for the token and calls the REST API with it.
// A user's API token never passes here: only the operator token does.
//
// The listener is on loopback by default, but loopback is not a trust
// boundary: a RUN step with host networking on a Docker host of the same
// machine reaches it. Hence the token, always.
package admin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/open-balena-builder/builder/platform/rpc"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/ingest/gateway"
)

// Config is what the operator surface needs.
type Config struct {
	// Token is the operator token (required).
	Token string
	// Metrics serves GET /metrics (nil: none).
	Metrics http.Handler
}

// Surface is the admin listener's handler and its gRPC server.
type Surface struct {
	http.Handler
	grpc *grpc.Server
}

// Stop stops the gRPC server (streams included).
func (s *Surface) Stop() { s.grpc.Stop() }

// New returns the operator surface for the given service clients.
func New(ctx context.Context, cfg Config, ingest ingestv1.IngestServiceClient, scheduler schedulerv1.SchedulerServiceClient, logger *slog.Logger) (*Surface, error) {
	if cfg.Token == "" {
		return nil, errors.New("admin: an operator token is required")
	}
	srv, health := rpc.NewServer(logger, rpc.TokenAuthenticator(cfg.Token, "operator surface (OBB_ADMIN_TOKEN)"))
	ingestv1.RegisterIngestServiceServer(srv, ingestForwarder{c: ingest})
	schedulerv1.RegisterSchedulerServiceServer(srv, schedulerForwarder{c: scheduler})
	for svc := range srv.GetServiceInfo() {
		health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	mux := runtime.NewServeMux(runtime.WithIncomingHeaderMatcher(gateway.NoHeaders),
		runtime.WithMetadata(func(context.Context, *http.Request) metadata.MD {
			return metadata.Pairs(rpc.SurfaceKey, rpc.SurfaceAdmin)
		}))
	if err := ingestv1.RegisterIngestServiceHandlerClient(ctx, mux, ingest); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if err := schedulerv1.RegisterSchedulerServiceHandlerClient(ctx, mux, scheduler); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			srv.ServeHTTP(w, r) // the interceptor checks the token
			return
		}
		if r.URL.Path == "/ping" {
			_, _ = w.Write([]byte("OK"))
			return
		}
		if servePage(w, r) { // the build page's static files: no data, no token
			return
		}
		tok, ok := rpc.Bearer(r.Header.Get("Authorization"))
		if !ok || !rpc.TokenEqual(tok, cfg.Token) {
			Unauthorized(w, "operator surface: send Authorization: Bearer <operator token> (OBB_ADMIN_TOKEN, or the file admin-token in the data dir)")
			return
		}
		if r.URL.Path == "/metrics" && cfg.Metrics != nil {
			cfg.Metrics.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	return &Surface{Handler: h, grpc: srv}, nil
}

// Unauthorized answers 401 with a JSON error shaped like grpc-gateway's.
func Unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("WWW-Authenticate", `Bearer realm="obb"`)
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": codes.Unauthenticated, "message": msg, "details": []any{}})
}

// TokenFile returns the operator token kept in path, making one (random,
// 256 bits, mode 0600) when the file does not exist.
func TokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("operator token file %s is empty", path)
		}
		return tok, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("operator token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("operator token: %w", err)
	}
	tok := "obb_" + hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("operator token: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return TokenFile(path) // another process made it first
	}
	if err != nil {
		return "", fmt.Errorf("operator token: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("operator token: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("operator token: %w", err)
	}
	return tok, nil
}
