package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

// RegistryToken gets a registry token from /auth/v1/token with the builder
// token, for pull and push of one running job's own image repository and
// of its fleet's service's registry cache (CacheRepository): the scheduler
// confirms the job runs and that the caller holds its ticket (only the
// executor it was sent to does). Nothing else can be asked for.
func (s *Server) RegistryToken(ctx context.Context, req *releasev1.RegistryTokenRequest) (*releasev1.RegistryTokenResponse, error) {
	if s.cfg.BuilderToken == "" {
		return nil, status.Error(codes.FailedPrecondition, "registry token: no builder token configured (TOKEN_AUTH_BUILDER_TOKEN)")
	}
	if s.jobs == nil {
		return nil, status.Error(codes.FailedPrecondition, "registry token: no scheduler to confirm the job")
	}
	job, err := s.jobs.AuthorizeJob(ctx, &schedulerv1.AuthorizeJobRequest{JobId: req.GetJobId(), Ticket: req.GetTicket()})
	if err != nil {
		st := status.Convert(err)
		return nil, status.Errorf(st.Code(), "registry token: %s", st.Message())
	}
	location := job.GetJob().GetImageLocation()
	host, repo, ok := strings.Cut(location, "/")
	if !ok || repo == "" || !strings.EqualFold(host, s.cfg.RegistryHost) {
		return nil, status.Errorf(codes.FailedPrecondition, "registry token: job %s's image location %q is not on %s", req.GetJobId(), location, s.cfg.RegistryHost)
	}
	repos := []string{repo}
	if c := CacheRepository(job.GetJob().GetFleet(), job.GetJob().GetService()); c != "" && c != repo {
		repos = append(repos, c)
	}
	return s.registryToken(ctx, repos, []string{"pull", "push"})
}

// CacheRepository is the registry repository of the build cache shared by
// the builds of one fleet's service, on whatever host they run:
// "v2/<sha256 hex of obb-cache/<fleet>/<service>>", a name the API's token
// endpoint grants the builder like any image repository. "" without a
// fleet or a service. services/executor names the same repository in the
// build spec's cache_ref.
func CacheRepository(fleet, service string) string {
	if fleet == "" || service == "" {
		return ""
	}
	sum := sha256.Sum256([]byte("obb-cache/" + fleet + "/" + service))
	return "v2/" + hex.EncodeToString(sum[:])
}

// registryToken asks the API for a token with actions on repos and checks
// that it grants them.
func (s *Server) registryToken(ctx context.Context, repos, actions []string) (*releasev1.RegistryTokenResponse, error) {
	token, err := s.api.RegistryToken(ctx, s.cfg.BuilderToken, s.cfg.RegistryHost, repos, actions)
	if errors.Is(err, openbalena.ErrUnauthorized) {
		s.log.ErrorContext(ctx, "release: open-balena-api refused the builder token")
		return nil, status.Error(codes.Internal, "registry token: open-balena-api refused the builder token: check TOKEN_AUTH_BUILDER_TOKEN")
	}
	if err != nil {
		return nil, s.grpcError(ctx, "registry token", err)
	}
	if missing := missingGrants(token, repos, actions); missing != "" {
		s.log.WarnContext(ctx, "release: registry token lacks access", "missing", missing)
		return nil, status.Errorf(codes.FailedPrecondition, "registry token: open-balena-api granted no %s", missing)
	}
	return &releasev1.RegistryTokenResponse{Token: token, Registry: s.cfg.RegistryHost}, nil
}

// missingGrants names the first requested access the token's claims lack
// ("push on v2/<hash>"), or "" when all are there or the claims cannot be
// read (the registry will then be the judge). The API drops a scope it
// cannot parse and answers 200, which would otherwise surface as an opaque
// 401 at push time.
func missingGrants(token string, repos, actions []string) string {
	access, ok := tokenAccess(token)
	if !ok {
		return ""
	}
	for _, repo := range repos {
		granted := access[repo]
		for _, a := range actions {
			if !slices.Contains(granted, a) {
				return fmt.Sprintf("%s on %s", a, repo)
			}
		}
	}
	return ""
}

// tokenAccess reads the "access" claim of a registry JWT, without checking
// its signature (the registry does): repository name → actions.
func tokenAccess(token string) (map[string][]string, bool) {
	var claims struct {
		Access []struct {
			Type    string   `json:"type"`
			Name    string   `json:"name"`
			Actions []string `json:"actions"`
		} `json:"access"`
	}
	if !decodeJWTClaims(token, &claims) {
		return nil, false
	}
	out := make(map[string][]string, len(claims.Access))
	for _, a := range claims.Access {
		if strings.EqualFold(a.Type, "repository") {
			out[a.Name] = append(out[a.Name], a.Actions...)
		}
	}
	return out, true
}
