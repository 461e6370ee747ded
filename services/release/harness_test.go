package release

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/open-balena-builder/builder/internal/apistandin"
	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

const (
	testRegistry     = "127.0.0.1:5000"
	testBuilderToken = "builder-secret-0123456789abcdef"
	testDigest       = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// Compile-time check: the Server is a ReleaseServiceServer.
var _ releasev1.ReleaseServiceServer = (*Server)(nil)

// harness is a Server talking to an open-balena-api stand-in over HTTP.
type harness struct {
	api   *apistandin.Server
	url   string
	key   string // the user's API key: the user token
	fleet apistandin.Fleet
	srv   *Server
	jobs  *fakeJobs
}

// fakeJobs stands in for the scheduler's AuthorizeJob: running jobs by id,
// each with its ticket and image location.
type fakeJobs struct {
	mu      sync.Mutex
	running map[string][2]string // job id → ticket, image location
}

func (f *fakeJobs) run(jobID, ticket, location string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[jobID] = [2]string{ticket, location}
}

func (f *fakeJobs) AuthorizeJob(_ context.Context, req *schedulerv1.AuthorizeJobRequest, _ ...grpc.CallOption) (*schedulerv1.AuthorizeJobResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.running[req.GetJobId()]
	if !ok || j[0] != req.GetTicket() {
		return nil, status.Errorf(codes.PermissionDenied, "job %q is not running, or the ticket is not its own", req.GetJobId())
	}
	return &schedulerv1.AuthorizeJobResponse{Job: &buildv1.Job{JobId: req.GetJobId(), ImageLocation: j[1]}}, nil
}

// newHarness starts a stand-in with user "admin" and fleet admin/<app>;
// wrap (optional) sits between the client and the stand-in.
func newHarness(t *testing.T, deviceType string, wrap func(http.Handler) http.Handler) *harness {
	t.Helper()
	api, err := apistandin.New(apistandin.Config{RegistryHost: testRegistry, Issuer: "api.balena.local", BuilderToken: testBuilderToken})
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = api
	if wrap != nil {
		h = wrap(api)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	key := api.AddUser("admin")
	fleet := api.AddFleet("admin", "testfleet", deviceType)
	client := openbalena.New(hs.URL, hs.Client(), slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		openbalena.WithRetry(openbalena.RetryPolicy{Attempts: 5, Initial: time.Millisecond, Max: 5 * time.Millisecond}))
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	jobs := &fakeJobs{running: map[string][2]string{}}
	srv := New(Config{APIURL: hs.URL, BuilderToken: testBuilderToken, RegistryHost: testRegistry}, client, jobs, logger)
	return &harness{api: api, url: hs.URL, key: key, fleet: fleet, srv: srv, jobs: jobs}
}

// defaultComposition is @balena/compose's defaultComposition() (§6).
func defaultComposition(t *testing.T) *structpb.Struct {
	t.Helper()
	const js = `{"networks":{},"volumes":{"resin-data":{}},"services":{"main":{"build":{"context":"."},
		"privileged":true,"tty":true,"restart":"always","network_mode":"host","volumes":["resin-data:/data"],
		"labels":{"io.resin.features.kernel-modules":"1","io.resin.features.firmware":"1","io.resin.features.dbus":"1",
		"io.resin.features.supervisor-api":"1","io.resin.features.resin-api":"1"}}}}`
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatal(err)
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func defaultLabels() map[string]string {
	return map[string]string{
		"io.resin.features.kernel-modules": "1", "io.resin.features.firmware": "1", "io.resin.features.dbus": "1",
		"io.resin.features.supervisor-api": "1", "io.resin.features.resin-api": "1",
	}
}

// createMain creates a release of the default single "main" service.
func (h *harness) createMain(t *testing.T, draft bool) *releasev1.CreateReleaseResponse {
	t.Helper()
	resp, err := h.srv.CreateRelease(context.Background(), &releasev1.CreateReleaseRequest{
		UserToken:   h.key,
		FleetId:     h.fleet.ID,
		Composition: defaultComposition(t),
		IsDraft:     draft,
		Services:    []*releasev1.ServiceImage{{Service: "main", Labels: defaultLabels()}},
	})
	if err != nil {
		t.Fatalf("CreateRelease: %v", err)
	}
	return resp
}

func (h *harness) finishImageOK(t *testing.T, imageID int64, log string) {
	t.Helper()
	_, err := h.srv.FinishImage(context.Background(), &releasev1.FinishImageRequest{
		UserToken: h.key, ImageId: imageID, Status: releasev1.Status_STATUS_SUCCESS,
		ContentHash: testDigest, ImageSize: 41_234_567, Dockerfile: "FROM busybox\n",
		ProjectType: "Standard Dockerfile", BuildLog: log,
	})
	if err != nil {
		t.Fatalf("FinishImage: %v", err)
	}
}

// patchAsCLI sends a PATCH the way balena-cli does, bypassing the Server.
func (h *harness) patchAsCLI(t *testing.T, pathAndQuery, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPatch, h.url+pathAndQuery, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PATCH %s: %d", pathAndQuery, resp.StatusCode)
	}
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("code = %v (%v), want %v", st.Code(), err, code)
	}
	if !strings.Contains(st.Message(), msgPart) {
		t.Errorf("message %q does not contain %q", st.Message(), msgPart)
	}
}
