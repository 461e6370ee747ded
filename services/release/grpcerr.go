package release

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-balena-builder/builder/platform/redact"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

const msgBadToken = "invalid or expired token: log in again with `balena login`"

// grpcError maps an openbalena error to a gRPC status at this edge. The
// message never holds a secret: every one in secrets is scrubbed (the
// openbalena client already does so; this is the last line of defence).
func (s *Server) grpcError(ctx context.Context, op string, err error, secrets ...string) error {
	secrets = append(secrets, s.cfg.BuilderToken)
	code := codeOf(err)
	msg := scrub(err.Error(), secrets...)
	switch {
	case code == codes.Unauthenticated:
		msg = msgBadToken
	case code == codes.Unavailable:
		msg = "open-balena-api is unavailable, try again later: " + msg
	}
	level := slog.LevelWarn
	if code == codes.Internal || code == codes.Unavailable {
		level = slog.LevelError
	}
	s.log.LogAttrs(ctx, level, "release: "+op+" failed", slog.String("code", code.String()), slog.String("error", scrub(err.Error(), secrets...)))
	return status.Error(code, op+": "+msg)
}

func codeOf(err error) codes.Code {
	var apiErr *openbalena.APIError
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, openbalena.ErrUnauthorized):
		return codes.Unauthenticated
	case errors.Is(err, openbalena.ErrFleetNotFound), errors.Is(err, openbalena.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, openbalena.ErrInvalidScope):
		return codes.InvalidArgument
	case errors.Is(err, openbalena.ErrUnavailable):
		return codes.Unavailable
	case errors.As(err, &apiErr):
		switch apiErr.Status {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			return codes.InvalidArgument
		case http.StatusForbidden:
			return codes.PermissionDenied
		case http.StatusNotFound:
			return codes.NotFound
		case http.StatusConflict:
			return codes.AlreadyExists
		}
	}
	return codes.Internal
}

func errNoToken() error {
	return status.Error(codes.Unauthenticated, "no token: log in with `balena login`")
}

func invalid(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}

func scrub(s string, secrets ...string) string { return redact.Values(s, secrets...) }
