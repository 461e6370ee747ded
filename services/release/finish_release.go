package release

import (
	"context"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

// FinishRelease records a release's outcome. A release the user cancelled
// (balena-cli PATCHes it cancelled on Ctrl-C) stays cancelled: that is read
// first, and the PATCH itself is filtered on status ne 'cancelled' so a
// cancel landing in between still wins. With finalize, a draft that ended
// successfully is then made final (after status success, so it becomes
// the fleet target only once it is whole). The answer is the status the
// API holds at the end.
func (s *Server) FinishRelease(ctx context.Context, req *releasev1.FinishReleaseRequest) (*releasev1.FinishReleaseResponse, error) {
	token, id := req.GetUserToken(), req.GetReleaseId()
	if token == "" {
		return nil, errNoToken()
	}
	if id <= 0 {
		return nil, invalid("release_id is required")
	}
	st, ok := apiStatus(req.GetStatus())
	if !ok {
		return nil, invalid("status must be success, failed or cancelled")
	}
	ctx, cancel := detach(ctx) // a release's outcome is recorded even if the caller leaves
	defer cancel()
	rel, err := s.api.GetRelease(ctx, token, id)
	if err != nil {
		return nil, s.grpcError(ctx, "finish release", err, token)
	}
	if rel.Status == openbalena.StatusCancelled {
		s.log.InfoContext(ctx, "release was cancelled by the user; kept cancelled", "release", id, "wanted", st)
		return &releasev1.FinishReleaseResponse{Status: releasev1.Status_STATUS_CANCELLED}, nil
	}
	err = s.api.PatchRelease(ctx, token, id, openbalena.ReleasePatch{
		Status: st, EndTimestamp: s.now(), UnlessStatus: openbalena.StatusCancelled,
	})
	if err != nil {
		return nil, s.grpcError(ctx, "finish release", err, token)
	}
	if req.GetFinalize() && st == openbalena.StatusSuccess && !rel.IsFinal {
		final := true
		err := s.api.PatchRelease(ctx, token, id, openbalena.ReleasePatch{IsFinal: &final, IfStatus: openbalena.StatusSuccess})
		if err != nil {
			return nil, s.grpcError(ctx, "finalize release", err, token)
		}
	}
	rel, err = s.api.GetRelease(ctx, token, id)
	if err != nil {
		return nil, s.grpcError(ctx, "finish release", err, token)
	}
	s.log.InfoContext(ctx, "release finished", "release", id, "status", rel.Status, "final", rel.IsFinal)
	return &releasev1.FinishReleaseResponse{Status: protoStatus(rel.Status)}, nil
}

// GetReleaseStatus reads a release's status (the ingest polls it to notice
// a cancel from the CLI).
func (s *Server) GetReleaseStatus(ctx context.Context, req *releasev1.GetReleaseStatusRequest) (*releasev1.GetReleaseStatusResponse, error) {
	token := req.GetUserToken()
	if token == "" {
		return nil, errNoToken()
	}
	if req.GetReleaseId() <= 0 {
		return nil, invalid("release_id is required")
	}
	rel, err := s.api.GetRelease(ctx, token, req.GetReleaseId())
	if err != nil {
		return nil, s.grpcError(ctx, "get release status", err, token)
	}
	return &releasev1.GetReleaseStatusResponse{Status: rel.Status}, nil
}
