package ingest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/ingest/inflight"
)

// Restarted is what the images and releases of builds a killed builder
// left running say once a new builder has settled them.
const Restarted = "the builder restarted during this build"

// recordInFlight keeps b on disk while it runs.
func (s *Server) recordInFlight(ctx context.Context, b *build) error {
	if s.cfg.InFlight == nil {
		return nil
	}
	r := inflight.Record{Owner: s.cfg.Instance, BuildID: b.id, ReleaseID: b.releaseID, UserToken: b.userToken(), Dir: b.dir, Started: b.created}
	for _, img := range b.images {
		r.ImageIDs = append(r.ImageIDs, img.GetImageId())
	}
	return s.cfg.InFlight.Begin(context.WithoutCancel(ctx), r)
}

// forgetInFlight drops an ended build's record (its token with it).
func (s *Server) forgetInFlight(id string) {
	if s.cfg.InFlight == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := s.cfg.InFlight.End(ctx, id); err != nil {
		s.log.Error("cannot forget an ended build: a restart will settle it again", "build", id, "error", err)
	}
}

// CleanDataDir removes the uploads a builder that died left behind, but
// those of builds still recorded as in flight (Recover removes them once
// settled). Call it at start, before pushes come.
func (s *Server) CleanDataDir(ctx context.Context) error {
	keep := map[string]bool{}
	if s.cfg.InFlight != nil {
		records, err := s.cfg.InFlight.InFlight(ctx, s.cfg.Instance)
		if err != nil {
			return err
		}
		for _, r := range records {
			keep[r.Dir] = true
		}
	}
	return s.sweepUploads(keep)
}

// Recover settles the builds a builder that died left running: every build
// still recorded as in flight gets its images and release failed ("the
// builder restarted during this build"), its upload removed and its record
// dropped. Call it once at start; the release service may still be
// starting (calls wait for it). It returns how many builds it settled.
//
// Settled as failed, not re-queued: the uploads of a killed builder may be
// partial, and a user whose push broke sees it end at once and pushes
// again.
func (s *Server) Recover(ctx context.Context) (int, error) {
	if s.cfg.InFlight == nil && s.cfg.Journal == nil {
		return 0, nil
	}
	return s.settleOwner(ctx, s.cfg.Instance, Restarted)
}

func (s *Server) settle(ctx context.Context, r inflight.Record, why string) error {
	wait := grpc.WaitForReady(true)
	for _, id := range r.ImageIDs {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := s.release.FinishImage(cctx, &releasev1.FinishImageRequest{UserToken: r.UserToken, ImageId: id,
			Status: releasev1.Status_STATUS_FAILED, ErrorMessage: why}, wait)
		cancel()
		if err != nil {
			return passOn(err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := s.release.FinishRelease(cctx, &releasev1.FinishReleaseRequest{UserToken: r.UserToken, ReleaseId: r.ReleaseID,
		Status: releasev1.Status_STATUS_FAILED}, wait); err != nil {
		return passOn(err)
	}
	if r.Dir != "" {
		if err := os.RemoveAll(r.Dir); err != nil {
			return err
		}
	}
	s.log.Warn("settled a build left running", "build", r.BuildID, "release", r.ReleaseID, "owner", r.Owner, "status", "failed", "why", why)
	return s.cfg.InFlight.End(ctx, r.BuildID)
}

// sweepUploads removes the uploads in the data dir that keep does not name.
func (s *Server) sweepUploads(keep map[string]bool) error {
	dir := filepath.Join(s.cfg.DataDir, "builds")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if keep[p] || !strings.HasPrefix(e.Name(), "upload-") {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
