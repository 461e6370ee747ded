package release

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

// Deltas makes one delta between two images (open-balena-delta's v3 API;
// package delta).
type Deltas interface {
	Delta(ctx context.Context, token, src, dest string) (string, error)
}

// DefaultDeltaTimeout bounds the wait for all of a release's deltas.
const DefaultDeltaTimeout = 10 * time.Minute

// deltaPair is one service's old and new image.
type deltaPair struct {
	service  string
	src, dst openbalena.ImageOfService
}

// CreateDeltas implements ReleaseService: for each service whose image
// changed against the fleet's target release, the delta from the target's
// image to the new one, all at once, within DeltaTimeout. Unlike the
// original builder, a delta that fails is a warning: the release is
// finalized all the same (devices then ask for it on demand).
func (s *Server) CreateDeltas(req *releasev1.CreateDeltasRequest, stream grpc.ServerStreamingServer[releasev1.CreateDeltasResponse]) error {
	if s.cfg.Deltas == nil {
		return nil
	}
	token := req.GetUserToken()
	if token == "" {
		return errNoToken()
	}
	if req.GetFleetId() <= 0 || req.GetReleaseId() <= 0 {
		return invalid("fleet_id and release_id are required")
	}
	ctx := stream.Context()
	var mu sync.Mutex
	say := func(warning bool, format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		_ = stream.Send(&releasev1.CreateDeltasResponse{Line: fmt.Sprintf(format, args...), Warning: warning})
	}
	pairs, err := s.deltaPairs(ctx, token, req.GetFleetId(), req.GetReleaseId())
	if err != nil {
		say(true, "Could not look for deltas to make: %s", status.Convert(s.grpcError(ctx, "deltas", err, token)).Message())
		return nil
	}
	if len(pairs) == 0 {
		return nil
	}
	reg, err := s.deltaToken(ctx, pairs)
	if err != nil {
		say(true, "No deltas: %s; devices will ask for them on demand", status.Convert(err).Message())
		return nil
	}
	names := make([]string, len(pairs))
	for i, p := range pairs {
		names[i] = p.service
	}
	say(false, "Creating image deltas for %s...", strings.Join(names, ", "))
	dctx, cancel := context.WithTimeoutCause(ctx, s.cfg.DeltaTimeout, fmt.Errorf("no delta after %s (OBB_DELTA_TIMEOUT)", s.cfg.DeltaTimeout))
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			name, err := s.cfg.Deltas.Delta(dctx, reg, ref(p.src), ref(p.dst))
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) || dctx.Err() != nil {
					err = context.Cause(dctx)
				}
				s.log.WarnContext(ctx, "delta not made", "service", p.service, "error", err)
				say(true, "Delta for %s not made: %v; devices will ask for it on demand", p.service, err)
				return
			}
			s.log.InfoContext(ctx, "delta made", "service", p.service, "delta", name, "duration", time.Since(start).Round(time.Millisecond))
			say(false, "Delta for %s ready in %s", p.service, time.Since(start).Round(100*time.Millisecond))
		}()
	}
	wg.Wait()
	return nil
}

// deltaPairs pairs, by service, the images of the fleet's target release
// with the new release's, where both were built and they differ.
func (s *Server) deltaPairs(ctx context.Context, token string, fleetID, releaseID int64) ([]deltaPair, error) {
	target, ok, err := s.api.FleetTarget(ctx, token, fleetID)
	if err != nil || !ok || target == releaseID {
		return nil, err
	}
	old, err := s.api.ReleaseImages(ctx, token, target)
	if err != nil {
		return nil, err
	}
	cur, err := s.api.ReleaseImages(ctx, token, releaseID)
	if err != nil {
		return nil, err
	}
	before := map[string]openbalena.ImageOfService{}
	for _, img := range old {
		if img.Status == openbalena.StatusSuccess && img.ContentHash != "" {
			before[img.Service] = img
		}
	}
	var pairs []deltaPair
	for _, img := range cur {
		src, ok := before[img.Service]
		unchanged := img.ContentHash == src.ContentHash || img.Location == src.Location
		if !ok || img.ContentHash == "" || unchanged {
			continue
		}
		pairs = append(pairs, deltaPair{service: img.Service, src: src, dst: img})
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].service < pairs[j].service })
	return pairs, nil
}

// deltaToken is a registry token with pull on every source and
// destination repository (names without the registry host: the API's scope
// parser drops those), for the delta server.
func (s *Server) deltaToken(ctx context.Context, pairs []deltaPair) (string, error) {
	var repos []string
	for _, p := range pairs {
		for _, loc := range []string{p.src.Location, p.dst.Location} {
			host, repo, ok := strings.Cut(loc, "/")
			if !ok || !strings.EqualFold(host, s.cfg.RegistryHost) {
				return "", status.Errorf(codes.FailedPrecondition, "image location %q is not on %s", loc, s.cfg.RegistryHost)
			}
			if !slices.Contains(repos, repo) {
				repos = append(repos, repo)
			}
		}
	}
	resp, err := s.registryToken(ctx, repos, []string{"pull"})
	if err != nil {
		return "", err
	}
	return resp.GetToken(), nil
}

// ref names an image for the delta server: its location at its digest.
func ref(img openbalena.ImageOfService) string {
	if img.ContentHash == "" {
		return img.Location
	}
	return img.Location + "@" + img.ContentHash
}
