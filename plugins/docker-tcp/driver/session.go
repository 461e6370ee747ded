package driver

import (
	"context"
	"net"

	"github.com/docker/docker/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
	"google.golang.org/grpc"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// startSession attaches a BuildKit session to a build, as docker/cli's
// build does: the session is a gRPC server of ours that the daemon calls
// back over a hijacked connection (POST /session, upgraded to h2c, with
// the session's id, shared key and method list as headers). It serves the
// build's secrets from memory and, when there are any, the credentials of
// registry_config (BuildKit asks the session for registry credentials; it
// does not read X-Registry-Config). The build names it by
// ImageBuildOptions.SessionID. Close the session once the build is over;
// cancelling ctx also ends it.
func (d *Driver) startSession(ctx context.Context, c *client.Client, jobID string, secrets []*pluginv1.Secret, auths registryAuths) (*session.Session, error) {
	s, err := session.NewSession(ctx, "obb-"+jobID)
	if err != nil {
		return nil, err
	}
	if len(secrets) > 0 {
		m := make(map[string][]byte, len(secrets))
		for _, sec := range secrets {
			m[sec.GetDest()] = sec.GetContent()
		}
		s.Allow(secretsprovider.FromMap(m))
	}
	if len(auths) > 0 {
		s.Allow(&authProvider{auths: auths})
	}
	dial := func(ctx context.Context, proto string, meta map[string][]string) (net.Conn, error) {
		return c.DialHijack(ctx, "/session", proto, meta)
	}
	go func() {
		if err := s.Run(ctx, dial); err != nil && ctx.Err() == nil {
			// The build then fails for want of its secrets and says so.
			d.logger.Warn("BuildKit session ended", "job", jobID, "error", err)
		}
	}()
	return s, nil
}

// authProvider answers BuildKit's credential requests from registry_config.
// Only Credentials is served: BuildKit then fetches registry tokens itself
// (FetchToken and the token authority are unimplemented, its fallback).
type authProvider struct {
	auth.UnimplementedAuthServer
	auths registryAuths
}

func (p *authProvider) Register(s *grpc.Server) { auth.RegisterAuthServer(s, p) }

// Credentials returns the user name and password (or identity token) for
// req.Host; none (anonymous) when registry_config has no entry for it.
func (p *authProvider) Credentials(_ context.Context, req *auth.CredentialsRequest) (*auth.CredentialsResponse, error) {
	ac, ok := p.auths.lookup(req.GetHost())
	switch {
	case !ok:
		return &auth.CredentialsResponse{}, nil
	case ac.IdentityToken != "":
		return &auth.CredentialsResponse{Secret: ac.IdentityToken}, nil
	default:
		return &auth.CredentialsResponse{Username: ac.Username, Secret: ac.Password}, nil
	}
}
