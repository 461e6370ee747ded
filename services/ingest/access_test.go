package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/open-balena-builder/builder/platform/hub"
	"github.com/open-balena-builder/builder/platform/rpc"
	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	projmeta "github.com/open-balena-builder/builder/services/ingest/metadata"
	"github.com/open-balena-builder/builder/services/ingest/project"
)

// fakeRelease answers Authenticate and Authorize from tables: users by
// token, and the fleets each token can access.
type fakeRelease struct {
	releasev1.ReleaseServiceClient // other calls panic

	users  map[string]string   // token → username
	fleets map[string][]string // token → slugs

	mu    sync.Mutex
	calls int
}

func (f *fakeRelease) count() {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
}

func (f *fakeRelease) Authenticate(_ context.Context, req *releasev1.AuthenticateRequest, _ ...grpc.CallOption) (*releasev1.AuthenticateResponse, error) {
	f.count()
	u, ok := f.users[req.GetUserToken()]
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "the token is not valid: log in again")
	}
	return &releasev1.AuthenticateResponse{User: &releasev1.User{Username: u}}, nil
}

func (f *fakeRelease) Authorize(_ context.Context, req *releasev1.AuthorizeRequest, _ ...grpc.CallOption) (*releasev1.AuthorizeResponse, error) {
	f.count()
	if _, ok := f.users[req.GetUserToken()]; !ok {
		return nil, status.Error(codes.Unauthenticated, "the token is not valid: log in again")
	}
	for _, s := range f.fleets[req.GetUserToken()] {
		if s == req.GetSlug() {
			return &releasev1.AuthorizeResponse{Fleet: &releasev1.Fleet{Slug: s}}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "fleet %q not found, or you cannot access it", req.GetSlug())
}

// fakeJobs is the scheduler's AuthorizeJob: one running job.
type fakeJobs struct {
	schedulerv1.SchedulerServiceClient
	job    *buildv1.Job
	ticket string
}

func (f *fakeJobs) AuthorizeJob(_ context.Context, req *schedulerv1.AuthorizeJobRequest, _ ...grpc.CallOption) (*schedulerv1.AuthorizeJobResponse, error) {
	if f.job == nil || req.GetJobId() != f.job.GetJobId() || req.GetTicket() != f.ticket {
		return nil, status.Error(codes.PermissionDenied, "job is not running, or the ticket is not its own")
	}
	return &schedulerv1.AuthorizeJobResponse{Job: f.job}, nil
}

const opToken = "operator-token"

// accessRig is an ingest server holding two builds: 1 of alice's fleet
// alice/app and 2 of bob's fleet bob/app.
func accessRig(t *testing.T) (*Server, *fakeRelease) {
	t.Helper()
	rel := &fakeRelease{
		users:  map[string]string{"alice-token": "alice", "bob-token": "bob", "eve-token": "eve"},
		fleets: map[string][]string{"alice-token": {"alice/app"}, "bob-token": {"bob/app"}},
	}
	jobs := &fakeJobs{job: &buildv1.Job{JobId: "1/main", BuildId: "1", Service: "main"}, ticket: "ticket-1"}
	s, err := New(Config{DataDir: t.TempDir(), OperatorToken: opToken}, rel, jobs, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range []struct {
		id, fleet, user string
	}{{"1", "alice/app", "alice"}, {"2", "bob/app", "bob"}} {
		ctx, cancel := context.WithCancelCause(context.Background())
		t.Cleanup(func() { cancel(nil) })
		bl := &build{id: b.id, releaseID: int64(i + 1), fleet: &releasev1.Fleet{Slug: b.fleet}, user: b.user, hub: hub.New(), ctx: ctx, cancel: cancel,
			plan:     &project.Plan{Services: []project.Service{{Name: "main", Secrets: []projmeta.Secret{{Dest: "s", Content: []byte("secret")}}}}, RegistryConfig: "{}"},
			services: map[string]*serviceRun{}, state: buildv1.BuildState_BUILD_STATE_RUNNING}
		bl.hub.Publish(&buildv1.Event{Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Text: "log of " + b.id}}})
		bl.hub.Close()
		s.builds.Add(b.id, bl)
	}
	return s, rel
}

func withToken(token string, admin bool) context.Context {
	md := metadata.MD{}
	if token != "" {
		md.Set("authorization", "Bearer "+token)
	}
	if admin {
		md.Set(rpc.SurfaceKey, rpc.SurfaceAdmin)
	}
	return metadata.NewIncomingContext(context.Background(), md)
}

func TestBuildsAreShownToWhoCanAccessTheirFleet(t *testing.T) {
	tests := []struct {
		name   string
		token  string
		admin  bool
		list   []string // build ids listed
		get1   codes.Code
		cancel codes.Code // cancel build 1
	}{
		{"anonymous", "", false, nil, codes.Unauthenticated, codes.Unauthenticated},
		{"bogus token", "bogus", false, nil, codes.Unauthenticated, codes.Unauthenticated},
		{"another user", "bob-token", false, []string{"2"}, codes.NotFound, codes.NotFound},
		{"a user of no fleet", "eve-token", false, nil, codes.NotFound, codes.NotFound},
		{"operator token on the public port", opToken, false, nil, codes.Unauthenticated, codes.Unauthenticated},
		{"a user's token on the admin surface", "bob-token", true, []string{"2"}, codes.NotFound, codes.NotFound},
		{"operator", opToken, true, []string{"2", "1"}, codes.OK, codes.OK},
		{"owner", "alice-token", false, []string{"1"}, codes.OK, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, rel := accessRig(t)
			ctx := withToken(tt.token, tt.admin)
			list, err := s.ListBuilds(ctx, &ingestv1.ListBuildsRequest{})
			var ids []string
			for _, b := range list.GetBuilds() {
				ids = append(ids, b.GetBuildId())
			}
			if tt.list == nil && err == nil && len(ids) > 0 || strings.Join(ids, ",") != strings.Join(tt.list, ",") {
				t.Errorf("ListBuilds = %v (%v), want %v", ids, err, tt.list)
			}
			if tt.token == "" || tt.token == "bogus" || tt.token == opToken && !tt.admin {
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("ListBuilds: %v, want Unauthenticated", err)
				}
			}
			if _, err := s.GetBuild(ctx, &ingestv1.GetBuildRequest{BuildId: "1"}); status.Code(err) != tt.get1 {
				t.Errorf("GetBuild(1): %v, want %v", err, tt.get1)
			}
			if _, err := s.GetBuild(ctx, &ingestv1.GetBuildRequest{BuildId: "99"}); tt.get1 == codes.OK && status.Code(err) != codes.NotFound {
				t.Errorf("GetBuild(99): %v, want NotFound", err)
			}
			b1, _ := s.builds.Get("1")
			_, err = s.CancelBuild(ctx, &ingestv1.CancelBuildRequest{BuildId: "1", Reason: "because\x1b[31m\nred"})
			if status.Code(err) != tt.cancel {
				t.Errorf("CancelBuild(1): %v, want %v", err, tt.cancel)
			}
			cause := context.Cause(b1.ctx)
			switch {
			case tt.cancel != codes.OK && cause != nil:
				t.Errorf("build 1 was cancelled: %v", cause)
			case tt.cancel == codes.OK && tt.admin && (cause == nil || cause.Error() != "cancelled by an operator: because [31m red"):
				t.Errorf("cancel cause %q", cause)
			case tt.cancel == codes.OK && !tt.admin && (cause == nil || cause.Error() != "cancelled by alice: because [31m red"):
				t.Errorf("cancel cause %q", cause)
			}
			if tt.token == opToken && rel.calls > 0 {
				t.Errorf("the operator token went to the API (%d calls)", rel.calls)
			}
		})
	}
}

func TestAccessIsCachedBriefly(t *testing.T) {
	s, rel := accessRig(t)
	now := time.Unix(1000, 0)
	s.access.now = func() time.Time { return now }
	ctx := withToken("alice-token", false)
	get := func() {
		if _, err := s.GetBuild(ctx, &ingestv1.GetBuildRequest{BuildId: "1"}); err != nil {
			t.Fatal(err)
		}
	}
	get()
	first := rel.calls
	get()
	if rel.calls != first {
		t.Errorf("a second call within %s asked the API again (%d → %d)", accessTTL, first, rel.calls)
	}
	now = now.Add(accessTTL + time.Second)
	get()
	if rel.calls == first {
		t.Errorf("after %s the API was not asked again", accessTTL)
	}
	// No answer is cached for a token that has no access.
	bob := withToken("bob-token", false)
	for range 2 {
		if _, err := s.GetBuild(bob, &ingestv1.GetBuildRequest{BuildId: "1"}); status.Code(err) != codes.NotFound {
			t.Fatalf("bob: %v", err)
		}
	}
}

func TestSecretsOnlyForTheJobsTicket(t *testing.T) {
	s, _ := accessRig(t)
	tests := []struct {
		name                   string
		build, svc, job, token string
		want                   codes.Code
	}{
		{"the job's executor", "1", "main", "1/main", "ticket-1", codes.OK},
		{"no ticket", "1", "main", "1/main", "", codes.PermissionDenied},
		{"a wrong ticket", "1", "main", "1/main", "ticket-2", codes.PermissionDenied},
		{"another build with this ticket", "2", "main", "1/main", "ticket-1", codes.PermissionDenied},
		{"another service with this ticket", "1", "other", "1/main", "ticket-1", codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.GetBuildSecrets(context.Background(), &ingestv1.GetBuildSecretsRequest{BuildId: tt.build, Service: tt.svc, JobId: tt.job, Ticket: tt.token})
			if status.Code(err) != tt.want {
				t.Fatalf("GetBuildSecrets: %v, want %v", err, tt.want)
			}
			if tt.want != codes.OK && resp != nil {
				t.Errorf("secrets given: %v", resp)
			}
			if tt.want == codes.OK && (len(resp.GetSecrets()) != 1 || string(resp.GetSecrets()[0].GetContent()) != "secret") {
				t.Errorf("secrets = %v", resp.GetSecrets())
			}
		})
	}
}

func TestSlotsBoundPushesPerUserAndInAll(t *testing.T) {
	sl := newSlots(3, 2)
	a1, err := sl.take("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sl.take("alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := sl.take("alice"); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "OBB_MAX_BUILDS_PER_USER") {
		t.Errorf("third of alice: %v", err)
	}
	if _, err := sl.take("bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := sl.take("carol"); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "OBB_MAX_BUILDS)") {
		t.Errorf("fourth in all: %v", err)
	}
	a1()
	a1() // a second free is a no-op
	if _, err := sl.take("carol"); err != nil {
		t.Errorf("after a free: %v", err)
	}
	if _, err := sl.take("dave"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a double free gave back two slots: %v", err)
	}
}

// A list asks the API once per fleet, not once per build.
func TestListAsksOncePerFleet(t *testing.T) {
	s, rel := accessRig(t)
	for i := 3; i < 13; i++ {
		id := fmt.Sprint(i)
		ctx, cancel := context.WithCancelCause(context.Background())
		t.Cleanup(func() { cancel(nil) })
		s.builds.Add(id, &build{id: id, releaseID: int64(i), fleet: &releasev1.Fleet{Slug: "bob/app"}, user: "bob", hub: hub.New(), ctx: ctx, cancel: cancel,
			plan: &project.Plan{}, services: map[string]*serviceRun{}, state: buildv1.BuildState_BUILD_STATE_RUNNING})
	}
	before := rel.calls
	list, err := s.ListBuilds(withToken("alice-token", false), &ingestv1.ListBuildsRequest{})
	if err != nil || len(list.GetBuilds()) != 1 {
		t.Fatalf("alice's list: %v, %v", list, err)
	}
	// whoami, alice/app and bob/app: not one call per build of bob's.
	if n := rel.calls - before; n > 3 {
		t.Errorf("listing 12 builds of 2 fleets asked the API %d times", n)
	}
}
