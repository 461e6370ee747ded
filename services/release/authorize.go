package release

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

// Authorize checks the user's token (whoami) and reads the fleet with its
// device type and CPU architecture.
func (s *Server) Authorize(ctx context.Context, req *releasev1.AuthorizeRequest) (*releasev1.AuthorizeResponse, error) {
	token := req.GetUserToken()
	if token == "" {
		return nil, errNoToken()
	}
	// Fleet slugs are lowercase (lower(org handle + "/" + app name)).
	slug := strings.ToLower(strings.TrimSpace(req.GetSlug()))
	if slug == "" {
		return nil, invalid("a fleet slug (<org>/<fleet>) is required")
	}
	user, err := s.whoami(ctx, token)
	if err != nil {
		return nil, err
	}
	fleet, err := s.api.FleetBySlug(ctx, token, slug)
	if errors.Is(err, openbalena.ErrFleetNotFound) {
		return nil, status.Errorf(codes.NotFound, "fleet %q not found, or you cannot access it", slug)
	}
	if err != nil {
		return nil, s.grpcError(ctx, "authorize", err, token)
	}
	if fleet.Arch == "" {
		return nil, s.grpcError(ctx, "authorize",
			fmt.Errorf("fleet %q: device type %q has no CPU architecture", slug, fleet.DeviceType), token)
	}
	return &releasev1.AuthorizeResponse{
		User: user,
		Fleet: &releasev1.Fleet{
			Id:         fleet.ID,
			Slug:       fleet.Slug,
			AppName:    fleet.AppName,
			DeviceType: fleet.DeviceType,
			Arch:       fleet.Arch,
		},
	}, nil
}

// Authenticate checks the user's token alone (whoami).
func (s *Server) Authenticate(ctx context.Context, req *releasev1.AuthenticateRequest) (*releasev1.AuthenticateResponse, error) {
	token := req.GetUserToken()
	if token == "" {
		return nil, errNoToken()
	}
	user, err := s.whoami(ctx, token)
	if err != nil {
		return nil, err
	}
	return &releasev1.AuthenticateResponse{User: user}, nil
}

// whoami returns the user a token belongs to; other actors are refused.
func (s *Server) whoami(ctx context.Context, token string) (*releasev1.User, error) {
	actor, err := s.api.WhoAmI(ctx, token)
	if err != nil {
		return nil, s.grpcError(ctx, "authorize", err, token)
	}
	if actor.ActorType != "" && actor.ActorType != "user" {
		return nil, status.Errorf(codes.PermissionDenied, "the token belongs to a %s, not a user: log in with `balena login` or use a user API key", actor.ActorType)
	}
	userID := actor.ActorTypeID
	if userID == 0 {
		userID = actor.ID
	}
	return &releasev1.User{Id: userID, Username: actor.Username}, nil
}
