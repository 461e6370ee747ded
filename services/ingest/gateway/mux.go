package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
)

// NewMux returns the HTTP mux: /v3/build for balena-cli and the REST
// gateway of IngestService (/v1/builds...) and SchedulerService (/v1/hosts).
func NewMux(ctx context.Context, ingest ingestv1.IngestServiceClient, register []func(context.Context, *runtime.ServeMux) error, logger *slog.Logger) (*runtime.ServeMux, error) {
	mux := runtime.NewServeMux()
	if err := mux.HandlePath(http.MethodPost, "/v3/build", BuildHandler(ingest, logger)); err != nil {
		return nil, fmt.Errorf("route /v3/build: %w", err)
	}
	for _, r := range register {
		if err := r(ctx, mux); err != nil {
			return nil, err
		}
	}
	return mux, nil
}

