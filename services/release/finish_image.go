package release

import (
	"context"
	"strings"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

// FinishImage PATCHes an image's outcome with the fields balena-cli's
// deploy sends: on success the push timestamp, digest, size, Dockerfile,
// project type and log; otherwise the error message and log. The build log
// keeps its tail and the body stays under the API's 512 kB limit.
func (s *Server) FinishImage(ctx context.Context, req *releasev1.FinishImageRequest) (*releasev1.FinishImageResponse, error) {
	token := req.GetUserToken()
	if token == "" {
		return nil, errNoToken()
	}
	if req.GetImageId() <= 0 {
		return nil, invalid("image_id is required")
	}
	st, ok := apiStatus(req.GetStatus())
	if !ok {
		return nil, invalid("status must be success, failed or cancelled")
	}
	now := s.now()
	p := openbalena.ImagePatch{Status: st, EndTimestamp: now, BuildLog: scrub(req.GetBuildLog(), token, s.cfg.BuilderToken)}
	if st == openbalena.StatusSuccess {
		if !validDigest(req.GetContentHash()) {
			return nil, invalid("content_hash %q must be the pushed manifest digest sha256:<64 hex>", req.GetContentHash())
		}
		if req.GetImageSize() < 0 {
			return nil, invalid("image_size must not be negative")
		}
		p.PushTimestamp = now
		p.ContentHash = req.GetContentHash()
		p.ImageSize = req.GetImageSize()
		p.Dockerfile = req.GetDockerfile()
		p.ProjectType = req.GetProjectType()
	} else {
		p.ErrorMessage = scrub(req.GetErrorMessage(), token, s.cfg.BuilderToken)
	}
	p = fitImagePatch(p, s.cfg.MaxLogBytes)
	ctx, cancel := detach(ctx) // an image's outcome is recorded even if the caller leaves
	defer cancel()
	if err := s.api.PatchImage(ctx, token, req.GetImageId(), p); err != nil {
		return nil, s.grpcError(ctx, "finish image", err, token)
	}
	s.log.InfoContext(ctx, "image finished", "image", req.GetImageId(), "status", st, "log_bytes", len(p.BuildLog))
	return &releasev1.FinishImageResponse{}, nil
}

func validDigest(d string) bool {
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	return strings.Trim(hexPart, "0123456789abcdef") == ""
}
