package rpc

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// SecretKey is the metadata key that carries the in-process secret.
const SecretKey = "obb-internal-secret"

// SurfaceKey is the metadata key the operator surface sets on the calls it
// passes on (value SurfaceAdmin): the operator token counts only with it,
// so it is no key on the public port. No client-set header becomes
// metadata on either HTTP face.
const (
	SurfaceKey   = "obb-surface"
	SurfaceAdmin = "admin"
)

// FromAdminSurface tells whether the operator surface passed the call on.
func FromAdminSurface(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(SurfaceKey)
	return len(v) == 1 && v[0] == SurfaceAdmin
}

// healthPrefix: health checks answer anyone (load balancers, probes); they
// say nothing but SERVING.
const healthPrefix = "/grpc.health.v1.Health/"

// Internal authenticates the builder's services to each other. Every call
// on an internal port must show one of:
//   - a client certificate signed by the builder's CA (mTLS, between
//     processes: OBB_TLS_CA, OBB_TLS_CERT, OBB_TLS_KEY), or
//   - the secret of this process (obb serve all without TLS: random at
//     start, never written anywhere), in the obb-internal-secret metadata.
//
// A RUN step with host networking on a Docker host of the same machine
// reaches the internal ports on loopback; it has neither.
type Internal struct {
	serverTLS *tls.Config
	clientTLS *tls.Config
	secret    string
}

// NewSecretInternal returns an Internal for services sharing one process:
// a random secret, no TLS.
func NewSecretInternal() (*Internal, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("internal secret: %w", err)
	}
	return &Internal{secret: hex.EncodeToString(b)}, nil
}

// NewTLSInternal returns an Internal for mTLS: servers and clients present
// cert/key and accept only peers whose certificate the CA signed.
func NewTLSInternal(caFile, certFile, keyFile string) (*Internal, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("OBB_TLS_CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("OBB_TLS_CA: %s holds no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("OBB_TLS_CERT/OBB_TLS_KEY: %w", err)
	}
	return &Internal{
		serverTLS: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			// Verified when given; calls without one are refused by
			// Authenticate (health checks excepted).
			ClientAuth: tls.VerifyClientCertIfGiven,
		},
		clientTLS: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: pool},
	}, nil
}

// TLS tells whether the services use mTLS.
func (a *Internal) TLS() bool { return a.serverTLS != nil }

// ServerOptions are the options of an internal gRPC server.
func (a *Internal) ServerOptions() []grpc.ServerOption {
	if a.serverTLS != nil {
		return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(a.serverTLS))}
	}
	return nil
}

// DialOptions are the options of a client of an internal service.
func (a *Internal) DialOptions() []grpc.DialOption {
	if a.clientTLS != nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(a.clientTLS))}
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(secretCreds(a.secret)),
	}
}

// Authenticate is the Authenticator of internal servers.
func (a *Internal) Authenticate(ctx context.Context, method string) error {
	if strings.HasPrefix(method, healthPrefix) {
		return nil
	}
	if a.serverTLS != nil {
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
				return nil
			}
		}
		return status.Error(codes.Unauthenticated, "internal builder service: calls need a client certificate signed by the builder's CA (OBB_TLS_CA)")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(SecretKey) {
		if subtle.ConstantTimeCompare([]byte(v), []byte(a.secret)) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "internal builder service: not for outside callers (operators use the admin address, OBB_ADMIN_ADDR)")
}

// secretCreds adds the process secret to every call.
type secretCreds string

func (s secretCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{SecretKey: string(s)}, nil
}

func (secretCreds) RequireTransportSecurity() bool { return false }

// Authenticator decides whether a call to method may proceed; its error
// (a gRPC status) is the caller's answer.
type Authenticator func(ctx context.Context, method string) error

// TokenAuthenticator accepts calls whose "authorization: Bearer <token>"
// is token (compared in constant time); health checks pass.
func TokenAuthenticator(token, what string) Authenticator {
	return func(ctx context.Context, method string) error {
		if strings.HasPrefix(method, healthPrefix) {
			return nil
		}
		got, ok := BearerFromContext(ctx)
		if !ok {
			return status.Errorf(codes.Unauthenticated, "%s: send authorization: Bearer <token>", what)
		}
		if !TokenEqual(got, token) {
			return status.Errorf(codes.Unauthenticated, "%s: the token is not valid here", what)
		}
		return nil
	}
}

// BearerFromContext returns the token of "authorization: Bearer <t>".
func BearerFromContext(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := Bearer(v); ok {
			return tok, true
		}
	}
	return "", false
}

// Bearer parses an Authorization value "Bearer <token>" (the scheme in
// any case).
func Bearer(v string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// TokenEqual compares a presented token with the expected one in constant
// time; an empty expected token matches nothing.
func TokenEqual(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// ErrNoTLSBetweenProcesses is returned when services run in separate
// processes without mTLS.
var ErrNoTLSBetweenProcesses = errors.New("services in separate processes authenticate each other with mTLS: set OBB_TLS_CA, OBB_TLS_CERT and OBB_TLS_KEY (`obb certs` makes them)")

func authUnary(authn Authenticator) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := authn(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func authStream(authn Authenticator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := authn(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}
