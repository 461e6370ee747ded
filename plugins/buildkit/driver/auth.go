package driver

// The session's registry credentials. authProvider is copied from
// plugins/docker-tcp/driver/session.go (tested there); keep the two in step.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/distribution/reference"
	"github.com/moby/buildkit/session/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// registryDomain is the registry of an image reference ("" if it is not
// one).
func registryDomain(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ""
	}
	return reference.Domain(named)
}

// authProvider answers BuildKit's credential requests from registry_config,
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
type authProvider struct {
	auth.UnimplementedAuthServer
	auths     registryAuths
	own       string // the openBalena registry, "" if no token
	token     string
	key       ed25519.PrivateKey
	anonymous string // the user name given for own: no other session's
}

func newAuthProvider(auths registryAuths, own, token string) (*authProvider, error) {
	p := &authProvider{auths: auths}
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

func (p *authProvider) Register(s *grpc.Server) { auth.RegisterAuthServer(s, p) }

func (p *authProvider) isOwn(host string) bool {
	return p.own != "" && registryHost(host) == registryHost(p.own)
}

// Credentials returns the user name and password (or identity token) for
// req.Host; none (anonymous) when registry_config has no entry for it. For
// the openBalena registry (whose token comes from FetchToken) it is a user
// name of this session's without a password: BuildKit fetches no token
// with it, and it does not match another session's anonymous access, which
// BuildKit would otherwise reuse for this one.
func (p *authProvider) Credentials(_ context.Context, req *auth.CredentialsRequest) (*auth.CredentialsResponse, error) {
	if p.isOwn(req.GetHost()) {
		return &auth.CredentialsResponse{Username: p.anonymous}, nil
	}
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

// GetTokenAuthority returns the session's public key for the openBalena
// registry: BuildKit then asks FetchToken for its tokens.
func (p *authProvider) GetTokenAuthority(_ context.Context, req *auth.GetTokenAuthorityRequest) (*auth.GetTokenAuthorityResponse, error) {
	if !p.isOwn(req.GetHost()) {
		return nil, status.Error(codes.Unimplemented, "no token authority for this registry")
	}
	return &auth.GetTokenAuthorityResponse{PublicKey: p.key.Public().(ed25519.PublicKey)}, nil
}

// VerifyTokenAuthority signs BuildKit's payload with the session's key
// (NaCl sign format: signature, then the message).
func (p *authProvider) VerifyTokenAuthority(_ context.Context, req *auth.VerifyTokenAuthorityRequest) (*auth.VerifyTokenAuthorityResponse, error) {
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
func (p *authProvider) FetchToken(_ context.Context, req *auth.FetchTokenRequest) (*auth.FetchTokenResponse, error) {
	if !p.isOwn(req.GetHost()) {
		return nil, status.Error(codes.Unimplemented, "no token authority for this registry")
	}
	return &auth.FetchTokenResponse{Token: p.token, ExpiresIn: tokenLifetime, IssuedAt: time.Now().Unix()}, nil
}
