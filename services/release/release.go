// Package release is the ReleaseService: the only part of the builder that
// talks to open-balena-api (with the pushing user's own token) and to its
// registry token endpoint (with the builder token).
package release

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

// DefaultMaxLogBytes bounds an image's build_log (its tail is kept).
const DefaultMaxLogBytes = 400_000

// Config configures a Server.
type Config struct {
	// APIURL is open-balena-api's base URL (https://api.<tld>). The Server
	// does not use it (the openbalena.Client does); it is here so one value
	// configures both.
	APIURL string
	// BuilderToken is TOKEN_AUTH_BUILDER_TOKEN, used only at /auth/v1/token.
	BuilderToken string
	// RegistryHost is REGISTRY2_HOST (registry2.<tld>), the registry the
	// tokens are for.
	RegistryHost string
	// MaxLogBytes bounds a build_log sent to the API (0: DefaultMaxLogBytes).
	// The JSON body of the PATCH always stays under the API's 512 kB limit.
	MaxLogBytes int
	// Deltas makes build-time deltas (DELTA_HOST); nil: none.
	Deltas Deltas
	// DeltaTimeout bounds the wait for a release's deltas
	// (OBB_DELTA_TIMEOUT; 0: DefaultDeltaTimeout).
	DeltaTimeout time.Duration
}

// Validate reports the first wrong field by name.
func (c Config) Validate() error {
	u, err := url.Parse(c.APIURL)
	switch {
	case c.APIURL == "":
		return errors.New("release: APIURL is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("release: APIURL %q is not an http(s) URL", c.APIURL)
	case c.BuilderToken == "":
		return errors.New("release: BuilderToken (TOKEN_AUTH_BUILDER_TOKEN) is required")
	case c.RegistryHost == "":
		return errors.New("release: RegistryHost (REGISTRY2_HOST) is required")
	case strings.Contains(c.RegistryHost, "/"):
		return fmt.Errorf("release: RegistryHost %q must be a host[:port], without scheme or path", c.RegistryHost)
	case c.MaxLogBytes < 0 || c.MaxLogBytes > maxPatchBody:
		return fmt.Errorf("release: MaxLogBytes %d must be between 0 and %d", c.MaxLogBytes, maxPatchBody)
	}
	return nil
}

// Jobs confirms that a job runs and that its caller holds the job's
// ticket: the scheduler's AuthorizeJob.
type Jobs interface {
	AuthorizeJob(ctx context.Context, req *schedulerv1.AuthorizeJobRequest, opts ...grpc.CallOption) (*schedulerv1.AuthorizeJobResponse, error)
}

// Server implements releasev1.ReleaseServiceServer.
type Server struct {
	releasev1.UnimplementedReleaseServiceServer

	cfg  Config
	api  *openbalena.Client
	jobs Jobs
	log  *slog.Logger
	now  func() time.Time
}

// New returns a Server using api for every call and jobs to confirm the
// jobs registry tokens are asked for. A nil logger discards.
func New(cfg Config, api *openbalena.Client, jobs Jobs, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = DefaultMaxLogBytes
	}
	cfg.MaxLogBytes = min(cfg.MaxLogBytes, maxPatchBody)
	if cfg.DeltaTimeout <= 0 {
		cfg.DeltaTimeout = DefaultDeltaTimeout
	}
	return &Server{cfg: cfg, api: api, jobs: jobs, log: logger, now: time.Now}
}
