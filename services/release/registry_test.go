package release

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

func TestRegistryToken(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	created := h.createMain(t, false)
	location := created.GetImages()[0].GetLocation()
	repo := strings.TrimPrefix(location, testRegistry+"/")
	h.jobs.run("1/main", "ticket-1", location)

	resp, err := h.srv.RegistryToken(context.Background(), &releasev1.RegistryTokenRequest{JobId: "1/main", Ticket: "ticket-1"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRegistry() != testRegistry {
		t.Errorf("registry = %q", resp.GetRegistry())
	}
	var claims struct {
		Sub    string `json:"sub"`
		Aud    string `json:"aud"`
		Access []struct {
			Type, Name string
			Actions    []string
		} `json:"access"`
	}
	if !decodeJWTClaims(resp.GetToken(), &claims) {
		t.Fatalf("token is not a JWT: %q", resp.GetToken())
	}
	if claims.Sub != "" || claims.Aud != testRegistry {
		t.Errorf("sub %q aud %q", claims.Sub, claims.Aud)
	}
	// The job's own repository, and nothing else.
	if len(claims.Access) != 1 {
		t.Fatalf("access = %+v", claims.Access)
	}
	a := claims.Access[0]
	slices.Sort(a.Actions)
	if a.Type != "repository" || a.Name != repo || !slices.Equal(a.Actions, []string{"pull", "push"}) {
		t.Errorf("access = %+v, want pull,push on %s", a, repo)
	}
}

// cacheJobs is a scheduler whose one running job has a fleet and a
// service, whose registry cache the token then covers too.
type cacheJobs struct{ job *buildv1.Job }

func (c cacheJobs) AuthorizeJob(_ context.Context, req *schedulerv1.AuthorizeJobRequest, _ ...grpc.CallOption) (*schedulerv1.AuthorizeJobResponse, error) {
	if req.GetJobId() != c.job.GetJobId() || req.GetTicket() != "ticket-1" {
		return nil, status.Error(codes.PermissionDenied, "not running")
	}
	return &schedulerv1.AuthorizeJobResponse{Job: c.job}, nil
}

func TestRegistryTokenCoversTheCache(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	created := h.createMain(t, false)
	location := created.GetImages()[0].GetLocation()
	repo := strings.TrimPrefix(location, testRegistry+"/")
	cache := CacheRepository("admin/fleet", "main")
	if want := "v2/" + fmt.Sprintf("%x", sha256.Sum256([]byte("obb-cache/admin/fleet/main"))); cache != want {
		t.Fatalf("CacheRepository = %q, want %q", cache, want)
	}
	if CacheRepository("", "main") != "" || CacheRepository("admin/fleet", "") != "" {
		t.Errorf("a cache repository without a fleet or a service")
	}
	client := openbalena.New(h.url, nil, nil, openbalena.WithRetry(openbalena.RetryPolicy{Attempts: 1}))
	job := &buildv1.Job{JobId: "1/main", Service: "main", Fleet: "admin/fleet", ImageLocation: location}
	srv := New(Config{APIURL: h.url, BuilderToken: testBuilderToken, RegistryHost: testRegistry}, client, cacheJobs{job}, nil)
	resp, err := srv.RegistryToken(context.Background(), &releasev1.RegistryTokenRequest{JobId: "1/main", Ticket: "ticket-1"})
	if err != nil {
		t.Fatal(err)
	}
	access, ok := tokenAccess(resp.GetToken())
	if !ok {
		t.Fatalf("token is not a JWT")
	}
	// The job's own repository and its service's cache, nothing else.
	if len(access) != 2 {
		t.Fatalf("access = %v, want %s and %s", access, repo, cache)
	}
	for _, r := range []string{repo, cache} {
		a := slices.Clone(access[r])
		slices.Sort(a)
		if !slices.Equal(a, []string{"pull", "push"}) {
			t.Errorf("access[%s] = %v, want pull,push", r, a)
		}
	}
}

func TestRegistryTokenErrors(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	h.jobs.run("1/main", "ticket-1", testRegistry+"/v2/abc")
	h.jobs.run("2/main", "ticket-2", "elsewhere.example.com/v2/abc")
	h.jobs.run("3/main", "ticket-3", testRegistry)
	tests := []struct {
		name    string
		builder string
		job     string
		ticket  string
		code    codes.Code
		msg     string
	}{
		{"no job", testBuilderToken, "", "", codes.PermissionDenied, "not running"},
		{"job not running", testBuilderToken, "9/main", "ticket-1", codes.PermissionDenied, "not running"},
		{"another job's ticket", testBuilderToken, "1/main", "ticket-2", codes.PermissionDenied, "ticket"},
		{"no ticket", testBuilderToken, "1/main", "", codes.PermissionDenied, "ticket"},
		{"image location on another registry", testBuilderToken, "2/main", "ticket-2", codes.FailedPrecondition, "is not on " + testRegistry},
		{"image location without repository", testBuilderToken, "3/main", "ticket-3", codes.FailedPrecondition, "is not on"},
		{"wrong builder token", "wrong-builder-token", "1/main", "ticket-1", codes.Internal, "TOKEN_AUTH_BUILDER_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := openbalena.New(h.url, nil, nil, openbalena.WithRetry(openbalena.RetryPolicy{Attempts: 1}))
			srv := New(Config{APIURL: h.url, BuilderToken: tt.builder, RegistryHost: testRegistry}, client, h.jobs, nil)
			_, err := srv.RegistryToken(context.Background(), &releasev1.RegistryTokenRequest{JobId: tt.job, Ticket: tt.ticket})
			wantCode(t, err, tt.code, tt.msg)
			if strings.Contains(err.Error(), tt.builder) || (tt.ticket != "" && strings.Contains(err.Error(), tt.ticket)) {
				t.Errorf("error %q holds a secret", err)
			}
		})
	}
}

func TestAuthenticate(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	resp, err := h.srv.Authenticate(context.Background(), &releasev1.AuthenticateRequest{UserToken: h.key})
	if err != nil || resp.GetUser().GetUsername() != "admin" || resp.GetUser().GetId() == 0 {
		t.Fatalf("Authenticate(owner) = %v, %v", resp, err)
	}
	_, err = h.srv.Authenticate(context.Background(), &releasev1.AuthenticateRequest{UserToken: "bogus"})
	wantCode(t, err, codes.Unauthenticated, "")
	_, err = h.srv.Authenticate(context.Background(), &releasev1.AuthenticateRequest{})
	wantCode(t, err, codes.Unauthenticated, "")
}

func TestMissingGrants(t *testing.T) {
	tok := func(payload string) string {
		return "e30." + b64(payload) + ".sig"
	}
	full := tok(`{"access":[{"type":"repository","name":"v2/a","actions":["pull","push"]}]}`)
	empty := tok(`{"access":[{"type":"repository","name":"v2/a","actions":[]}]}`)
	if m := missingGrants(full, []string{"v2/a"}, []string{"push", "pull"}); m != "" {
		t.Errorf("full: missing %q", m)
	}
	if m := missingGrants(empty, []string{"v2/a"}, []string{"push"}); m != "push on v2/a" {
		t.Errorf("empty: missing %q", m)
	}
	if m := missingGrants("opaque", []string{"v2/a"}, []string{"push"}); m != "" {
		t.Errorf("opaque token: missing %q", m)
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
