package gateway

import (
	"context"
	"fmt"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
)

// NewMux returns an HTTP mux of grpc-gateway routes: build (balena-cli's
// POST /v3/build, nil: none) and the REST routes register adds. Of the
// request's headers only Authorization reaches the services (as
// "authorization" metadata): no client-set Grpc-Metadata-* header gets
// through to look like something the builder said.
//
// The public port mounts /v3/build and IngestService's build routes, which
// show a user only the builds of their fleets; the admin listener mounts
// IngestService and SchedulerService behind the operator token.
func NewMux(ctx context.Context, build runtime.HandlerFunc, register ...func(context.Context, *runtime.ServeMux) error) (*runtime.ServeMux, error) {
	mux := runtime.NewServeMux(runtime.WithIncomingHeaderMatcher(NoHeaders))
	if build != nil {
		if err := mux.HandlePath(http.MethodPost, "/v3/build", build); err != nil {
			return nil, fmt.Errorf("route /v3/build: %w", err)
		}
	}
	for _, r := range register {
		if err := r(ctx, mux); err != nil {
			return nil, err
		}
	}
	return mux, nil
}

// NoHeaders is a grpc-gateway header matcher that forwards no header as
// metadata (Authorization reaches the services anyway).
func NoHeaders(string) (string, bool) { return "", false }
