package release

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

// createConcurrency bounds the services set up at once.
const createConcurrency = 4

// CreateRelease records a running release, then per service its service row
// (get or create), a running image (with its contract), the image's link to
// the release and the link's labels and environment variables. When any of
// it fails, the release and the images already created are marked failed:
// nothing is left running.
func (s *Server) CreateRelease(ctx context.Context, req *releasev1.CreateReleaseRequest) (*releasev1.CreateReleaseResponse, error) {
	token := req.GetUserToken()
	if err := checkCreate(req); err != nil {
		return nil, err
	}
	// The POSTs of running rows are not cut short: a row created by a POST
	// whose answer was abandoned would stay running for ever.
	postCtx, cancel := detach(ctx)
	rel, err := s.api.CreateRelease(postCtx, token, openbalena.NewRelease{
		FleetID:     req.GetFleetId(),
		Composition: structMap(req.GetComposition()),
		Draft:       req.GetIsDraft(),
		Contract:    structMap(req.GetContract()),
		Semver:      req.GetSemver(),
	})
	cancel()
	if err != nil {
		return nil, s.grpcError(ctx, "create release", err, token)
	}

	services := req.GetServices()
	images := make([]*releasev1.CreatedImage, len(services))
	var (
		mu      sync.Mutex
		created []int64
	)
	err = forEach(ctx, len(services), createConcurrency, func(ctx context.Context, i int) error {
		svc := services[i]
		img, err := s.createImage(ctx, token, req.GetFleetId(), rel.ID, svc, func(id int64) {
			mu.Lock()
			created = append(created, id)
			mu.Unlock()
		})
		if err != nil {
			return fmt.Errorf("service %q: %w", svc.GetService(), err)
		}
		images[i] = &releasev1.CreatedImage{Service: svc.GetService(), ImageId: img.ID, Location: img.Location}
		return nil
	})
	if err != nil {
		s.abortRelease(ctx, token, rel.ID, created, err)
		return nil, s.grpcError(ctx, "create release", err, token)
	}
	s.log.InfoContext(ctx, "release created", "release", rel.ID, "fleet", req.GetFleetId(), "commit", rel.Commit,
		"images", len(images), "draft", req.GetIsDraft())
	return &releasev1.CreateReleaseResponse{ReleaseId: rel.ID, Commit: rel.Commit, Images: images}, nil
}

// createImage sets up one service's image in the release; created is told
// the image id as soon as the image row exists.
func (s *Server) createImage(ctx context.Context, token string, fleetID, releaseID int64, svc *releasev1.ServiceImage, created func(int64)) (openbalena.Image, error) {
	serviceID, err := s.api.GetOrCreateService(ctx, token, fleetID, svc.GetService())
	if err != nil {
		return openbalena.Image{}, err
	}
	postCtx, cancel := detach(ctx)
	img, err := s.api.CreateImage(postCtx, token, serviceID, structMap(svc.GetContract()))
	cancel()
	if err != nil {
		return openbalena.Image{}, err
	}
	created(img.ID)
	if err := context.Cause(ctx); err != nil {
		return openbalena.Image{}, err
	}
	releaseImageID, err := s.api.AddImageToRelease(ctx, token, img.ID, releaseID)
	if err != nil {
		return openbalena.Image{}, err
	}
	for _, name := range slices.Sorted(maps.Keys(svc.GetLabels())) {
		if err := s.api.AddImageLabel(ctx, token, releaseImageID, name, svc.GetLabels()[name]); err != nil {
			return openbalena.Image{}, fmt.Errorf("label %q: %w", name, err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(svc.GetEnvironment())) {
		if err := s.api.AddImageEnv(ctx, token, releaseImageID, name, svc.GetEnvironment()[name]); err != nil {
			return openbalena.Image{}, fmt.Errorf("environment variable %q: %w", name, err)
		}
	}
	return img, nil
}

// abortRelease marks the images created so far and the release failed. It
// outlives ctx: a caller that went away must not leave rows running.
func (s *Server) abortRelease(ctx context.Context, token string, releaseID int64, images []int64, cause error) {
	ctx, cancel := detach(ctx)
	defer cancel()
	now := s.now()
	msg := truncateHead(scrub("release creation failed: "+cause.Error(), token, s.cfg.BuilderToken), maxErrorMessage)
	for _, id := range images {
		if err := s.api.PatchImage(ctx, token, id, openbalena.ImagePatch{Status: openbalena.StatusFailed, EndTimestamp: now, ErrorMessage: msg}); err != nil {
			s.log.ErrorContext(ctx, "release: could not mark image failed", "image", id, "release", releaseID, "error", scrub(err.Error(), token))
		}
	}
	err := s.api.PatchRelease(ctx, token, releaseID, openbalena.ReleasePatch{
		Status: openbalena.StatusFailed, EndTimestamp: now, UnlessStatus: openbalena.StatusCancelled,
	})
	if err != nil {
		s.log.ErrorContext(ctx, "release: could not mark release failed", "release", releaseID, "error", scrub(err.Error(), token))
	}
}

func checkCreate(req *releasev1.CreateReleaseRequest) error {
	switch {
	case req.GetUserToken() == "":
		return errNoToken()
	case req.GetFleetId() <= 0:
		return invalid("fleet_id is required")
	case len(req.GetServices()) == 0:
		return invalid("a release needs at least one service")
	}
	seen := make(map[string]bool, len(req.GetServices()))
	for _, svc := range req.GetServices() {
		name := svc.GetService()
		if n := len(name); n < 1 || n > 63 {
			return invalid("service name %q must be 1 to 63 characters", name)
		}
		if seen[name] {
			return invalid("service %q is listed twice", name)
		}
		seen[name] = true
	}
	return nil
}
