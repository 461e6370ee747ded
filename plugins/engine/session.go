package engine

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"time"

	"github.com/docker/docker/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// startSession attaches a BuildKit session to a build, as docker/cli's
// build does: the session is a gRPC server of ours that the daemon calls
// back over a hijacked connection (POST /session, upgraded to h2c, with
// the session's id, shared key and method list as headers). It serves the
// build's secrets from memory and, when there are any, the credentials of
// registry_config (BuildKit asks the session for registry credentials; it
// does not read X-Registry-Config) and the job's registry token for the
// openBalena registry. The build names it by ImageBuildOptions.SessionID.
// Close the session once the build is over; cancelling ctx also ends it.
func (d *Driver) startSession(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, auths RegistryAuths) (*session.Session, error) {
	jobID, secrets := spec.GetJobId(), spec.GetSecrets()
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
		p, err := NewAuthProvider(auths, registryDomain(spec.GetImageRef()), spec.GetRegistryToken())
		if err != nil {
			return nil, err
		}
		s.Allow(p)
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

// AuthProvider answers BuildKit's credential requests from registry_config,
// and hands BuildKit the job's own registry token for the openBalena
// registry (own).
//
// For other registries only Credentials is served: BuildKit then fetches
// registry tokens itself (the token authority calls answer Unimplemented,
// its fallback). For the openBalena registry the job's token is a bearer
// token already, which BuildKit takes only from a session's token
// authority: GetTokenAuthority hands out a public key of the session's own
// (so that BuildKit shares the token with no other session: it checks
// that a session signs with the key before it reuses a token, see
// VerifyTokenAuthority), and FetchToken returns the job's token.
type AuthProvider struct {
	auth.UnimplementedAuthServer
	auths     RegistryAuths
	own       string // the openBalena registry, "" if no token
	token     string
	key       ed25519.PrivateKey
	anonymous string // the user name given for own: no other session's
}

func NewAuthProvider(auths RegistryAuths, own, token string) (*AuthProvider, error) {
	p := &AuthProvider{auths: auths}
	if own == "" || token == "" {
		return p, nil
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	p.own, p.token, p.key = own, token, key
	p.anonymous = "obb-session-" + hex.EncodeToString(key.Public().(ed25519.PublicKey)[:8])
	return p, nil
}

func (p *AuthProvider) Register(s *grpc.Server) { auth.RegisterAuthServer(s, p) }

func (p *AuthProvider) isOwn(host string) bool {
	return p.own != "" && RegistryHost(host) == RegistryHost(p.own)
}

// Credentials returns the user name and password (or identity token) for
// req.Host; none (anonymous) when registry_config has no entry for it. For
// the openBalena registry (whose token comes from FetchToken) it is a user
// name of this session's without a password: BuildKit fetches no token
// with it, and it does not match another session's anonymous access, which
// BuildKit would otherwise reuse for this one.
func (p *AuthProvider) Credentials(_ context.Context, req *auth.CredentialsRequest) (*auth.CredentialsResponse, error) {
	if p.isOwn(req.GetHost()) {
		return &auth.CredentialsResponse{Username: p.anonymous}, nil
	}
	ac, ok := p.auths.Lookup(req.GetHost())
	switch {
	case !ok:
		return &auth.CredentialsResponse{}, nil
	case ac.IdentityToken != "":
		return &auth.CredentialsResponse{Secret: ac.IdentityToken}, nil
	default:
		return &auth.CredentialsResponse{Username: ac.Username, Secret: ac.Password}, nil
	}
}

// GetTokenAuthority returns the session's public key for the openBalena
// registry: BuildKit then asks FetchToken for its tokens.
func (p *AuthProvider) GetTokenAuthority(_ context.Context, req *auth.GetTokenAuthorityRequest) (*auth.GetTokenAuthorityResponse, error) {
	if !p.isOwn(req.GetHost()) {
		return nil, status.Error(codes.Unimplemented, "no token authority for this registry")
	}
	return &auth.GetTokenAuthorityResponse{PublicKey: p.key.Public().(ed25519.PublicKey)}, nil
}

// VerifyTokenAuthority signs BuildKit's payload with the session's key
// (NaCl sign format: signature, then the message).
func (p *AuthProvider) VerifyTokenAuthority(_ context.Context, req *auth.VerifyTokenAuthorityRequest) (*auth.VerifyTokenAuthorityResponse, error) {
	if !p.isOwn(req.GetHost()) {
		return nil, status.Error(codes.Unimplemented, "no token authority for this registry")
	}
	return &auth.VerifyTokenAuthorityResponse{Signed: append(ed25519.Sign(p.key, req.GetPayload()), req.GetPayload()...)}, nil
}

// tokenLifetime is how long BuildKit may reuse the job's token (it takes
// 90% of it); the token itself lives as long as the job.
const tokenLifetime = 60

// FetchToken returns the job's registry token for the openBalena
// registry, whatever scopes BuildKit asks for: the registry grants only
// what the token carries.
func (p *AuthProvider) FetchToken(_ context.Context, req *auth.FetchTokenRequest) (*auth.FetchTokenResponse, error) {
	if !p.isOwn(req.GetHost()) {
		return nil, status.Error(codes.Unimplemented, "no token authority for this registry")
	}
	return &auth.FetchTokenResponse{Token: p.token, ExpiresIn: tokenLifetime, IssuedAt: time.Now().Unix()}, nil
}
