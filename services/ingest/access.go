package ingest

import (
	"context"
	"crypto/sha256"
	"strings"
	"sync"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-balena-builder/builder/platform/rpc"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
)

// Who may see which build. The public port forwards the user's
// "authorization: Bearer <token>"; the admin listener forwards the operator
// token. A user sees the builds of the fleets their token can access (the
// same check as a push: whoami and a fleet lookup through the release
// service), an operator sees every build, anyone else nothing.

// accessTTL is how long a positive answer of the API is trusted.
const accessTTL = 5 * time.Second

// maxAccessEntries bounds the cache of positive answers.
const maxAccessEntries = 10_000

// caller is who asks.
type caller struct {
	operator bool
	token    string // a user's API token (never logged)
	user     string // username, once authenticated
}

// callerOf authenticates the caller of a build-reading RPC.
func (s *Server) callerOf(ctx context.Context) (caller, error) {
	tok, ok := rpc.BearerFromContext(ctx)
	if !ok {
		return caller{}, status.Error(codes.Unauthenticated, "no token: send Authorization: Bearer <your balena API token> (balena-cli: `balena settings` / the token of `balena login`)")
	}
	if rpc.TokenEqual(tok, s.cfg.OperatorToken) {
		if !rpc.FromAdminSurface(ctx) {
			// Not sent on to the API as if it were a user's.
			return caller{}, status.Error(codes.Unauthenticated, "the operator token is for the admin address (OBB_ADMIN_ADDR), not this one")
		}
		return caller{operator: true}, nil
	}
	user, err := s.access.user(ctx, s.release, tok)
	if err != nil {
		return caller{}, err
	}
	return caller{token: tok, user: user}, nil
}

// canSee tells whether c may see a build of fleet (a slug). Errors other
// than "no access" (the API is down) are returned: the answer is unknown,
// not no.
func (s *Server) canSee(ctx context.Context, c caller, fleet string) (bool, error) {
	if c.operator {
		return true, nil
	}
	return s.access.fleet(ctx, s.release, c.token, fleet)
}

// visible looks a build up for c: a build c cannot see is "not found", as
// one that does not exist. A build this builder runs (or ran lately) comes
// back as b; one only the journal knows (another builder's, or one from
// before a restart) as its view, with b nil.
func (s *Server) visible(ctx context.Context, id string) (*build, *ingestv1.Build, caller, error) {
	c, err := s.callerOf(ctx)
	if err != nil {
		return nil, nil, c, err
	}
	b, v, err := s.find(ctx, id)
	if err != nil {
		return nil, nil, c, err
	}
	ok, err := s.canSee(ctx, c, v.GetFleet())
	if err != nil {
		return nil, nil, c, err
	}
	if !ok {
		return nil, nil, c, status.Errorf(codes.NotFound, "build %q not found", id)
	}
	return b, v, c, nil
}

// accessCache remembers positive answers of the API for accessTTL: who a
// token belongs to, and which fleets it can access. Keys hold a hash of
// the token, never the token.
type accessCache struct {
	now func() time.Time

	mu     sync.Mutex
	users  map[[32]byte]cached
	fleets map[fleetKey]time.Time
	lastGC time.Time
}

type cached struct {
	user    string
	expires time.Time
}

type fleetKey struct {
	token [32]byte
	slug  string
}

func newAccessCache(now func() time.Time) *accessCache {
	return &accessCache{now: now, users: map[[32]byte]cached{}, fleets: map[fleetKey]time.Time{}}
}

// user authenticates token (whoami), from the cache when it can.
func (a *accessCache) user(ctx context.Context, release releasev1.ReleaseServiceClient, token string) (string, error) {
	key := sha256.Sum256([]byte(token))
	a.mu.Lock()
	c, ok := a.users[key]
	a.mu.Unlock()
	if ok && a.now().Before(c.expires) {
		return c.user, nil
	}
	resp, err := release.Authenticate(ctx, &releasev1.AuthenticateRequest{UserToken: token})
	if err != nil {
		return "", passOn(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gc()
	a.users[key] = cached{user: resp.GetUser().GetUsername(), expires: a.now().Add(accessTTL)}
	return resp.GetUser().GetUsername(), nil
}

// fleet tells whether token can access the fleet slug.
func (a *accessCache) fleet(ctx context.Context, release releasev1.ReleaseServiceClient, token, slug string) (bool, error) {
	key := fleetKey{sha256.Sum256([]byte(token)), strings.ToLower(slug)}
	a.mu.Lock()
	exp, ok := a.fleets[key]
	a.mu.Unlock()
	if ok && a.now().Before(exp) {
		return true, nil
	}
	_, err := release.Authorize(ctx, &releasev1.AuthorizeRequest{UserToken: token, Slug: slug})
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound, codes.PermissionDenied:
		return false, nil
	default:
		return false, passOn(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gc()
	a.fleets[key] = a.now().Add(accessTTL)
	return true, nil
}

// gc drops expired entries now and then, and everything when the cache is
// full (callers hold mu).
func (a *accessCache) gc() {
	now := a.now()
	if len(a.users)+len(a.fleets) < maxAccessEntries && now.Sub(a.lastGC) < time.Minute {
		return
	}
	a.lastGC = now
	for k, v := range a.users {
		if !now.Before(v.expires) {
			delete(a.users, k)
		}
	}
	for k, v := range a.fleets {
		if !now.Before(v) {
			delete(a.fleets, k)
		}
	}
	if len(a.users)+len(a.fleets) >= maxAccessEntries {
		clear(a.users)
		clear(a.fleets)
	}
}

// maxReasonBytes bounds the reason a canceller gives.
const maxReasonBytes = 200

// cancelReason is what the build's log and release say about who
// cancelled it and why: printable text only, bounded.
func cancelText(c caller, reason string) string {
	reason = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, reason)
	reason = strings.TrimSpace(reason)
	if len(reason) > maxReasonBytes {
		cut := maxReasonBytes
		for cut > 0 && !utf8Start(reason[cut]) {
			cut--
		}
		reason = reason[:cut] + "…"
	}
	who := "an operator"
	if !c.operator {
		who = c.user
	}
	if reason == "" {
		return "cancelled by " + who
	}
	return "cancelled by " + who + ": " + reason
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }
