package executor

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	executorv1 "github.com/open-balena-builder/builder/proto/builder/executor/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

const (
	secretToken = "registry-token-that-must-not-leak"
	testTicket  = "ticket-of-job-7"
)

type contextServer struct {
	ingestv1.UnimplementedContextServiceServer
	tar []byte

	mu      sync.Mutex
	tickets []string // job id + ticket of each call
}

func (c *contextServer) saw(jobID, ticket string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tickets = append(c.tickets, jobID+" "+ticket)
}

func (c *contextServer) GetBuildSecrets(_ context.Context, req *ingestv1.GetBuildSecretsRequest) (*ingestv1.GetBuildSecretsResponse, error) {
	c.saw(req.GetJobId(), req.GetTicket())
	return &ingestv1.GetBuildSecretsResponse{RegistryConfig: "cfg", Secrets: []*ingestv1.BuildSecret{{Dest: "app/token", Content: []byte("s")}}}, nil
}

func (c *contextServer) OpenContext(req *ingestv1.OpenContextRequest, s grpc.ServerStreamingServer[ingestv1.OpenContextResponse]) error {
	c.saw(req.GetJobId(), req.GetTicket())
	for b := c.tar; len(b) > 0; {
		n := min(len(b), 100) // many small chunks
		if err := s.Send(&ingestv1.OpenContextResponse{Chunk: b[:n]}); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

type releaseServer struct {
	releasev1.UnimplementedReleaseServiceServer
	jobs []string // job id + ticket of each call
}

func (r *releaseServer) RegistryToken(_ context.Context, req *releasev1.RegistryTokenRequest) (*releasev1.RegistryTokenResponse, error) {
	r.jobs = append(r.jobs, req.GetJobId()+" "+req.GetTicket())
	return &releasev1.RegistryTokenResponse{Token: secretToken}, nil
}

type onePlugin struct{ exec sdk.Executor }

func (p onePlugin) Get(context.Context, string) (sdk.Executor, error) { return p.exec, nil }

func serve(t *testing.T, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

var hosts = []Host{{Plugin: "fake", Conn: &pluginv1.HostConfig{Name: "amd", Endpoint: "unix:///x.sock"}, NativeArchs: []string{"amd64"}, EmulatedArchs: []string{"aarch64"}, MaxConcurrent: 3}}

func newExecutor(t *testing.T, fake *sdktest.FakeExecutor) (executorv1.ExecutorServiceClient, *releaseServer) {
	t.Helper()
	cs := &contextServer{tar: sdktest.ContextTar(t, map[string]string{"Dockerfile": "FROM busybox\n", "app.txt": strings.Repeat("x", 1000)})}
	ctxConn := serve(t, func(s *grpc.Server) { ingestv1.RegisterContextServiceServer(s, cs) })
	t.Cleanup(func() {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		for _, got := range cs.tickets {
			if got != "7/main "+testTicket {
				t.Errorf("context service called with %q, want the job with its ticket", got)
			}
		}
	})
	rel := &releaseServer{}
	relConn := serve(t, func(s *grpc.Server) { releasev1.RegisterReleaseServiceServer(s, rel) })
	ex := New(Config{Hosts: hosts, Address: "exec:1"}, onePlugin{sdktest.Serve(t, fake)},
		func(string) (ingestv1.ContextServiceClient, error) {
			return ingestv1.NewContextServiceClient(ctxConn), nil
		},
		releasev1.NewReleaseServiceClient(relConn), slog.New(slog.DiscardHandler))
	conn := serve(t, func(s *grpc.Server) { executorv1.RegisterExecutorServiceServer(s, ex) })
	return executorv1.NewExecutorServiceClient(conn), rel
}

func runJob(t *testing.T, c executorv1.ExecutorServiceClient, emulated bool) []*buildv1.Event {
	t.Helper()
	stream, err := c.RunJob(context.Background(), &executorv1.RunJobRequest{Host: "amd", Emulated: emulated, Ticket: testTicket, Job: &buildv1.Job{
		JobId: "7/main", BuildId: "7", Service: "main", Arch: "aarch64", Platform: "linux/arm64/v8",
		ImageLocation: "registry.local:5000/v2/0123abcd", Dockerfile: "Dockerfile", BuildArgs: map[string]string{"A": "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	var events []*buildv1.Event
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return events
		}
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, resp.GetEvent())
	}
}

func texts(events []*buildv1.Event) string {
	var sb strings.Builder
	for _, e := range events {
		if l := e.GetLog(); l != nil {
			sb.WriteString(l.GetLevel().String() + " " + l.GetText() + "\n")
		}
	}
	return sb.String()
}

func TestRunJobSucceeds(t *testing.T) {
	var got *pluginv1.BuildSpec
	var files []string
	c, rel := newExecutor(t, &sdktest.FakeExecutor{BuildF: func(_ context.Context, spec *pluginv1.BuildSpec, r io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
		got = spec
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			files = append(files, h.Name)
		}
		logs(&pluginv1.Log{Text: "Step 1/1 : FROM busybox"})
		return &pluginv1.Result{ImageId: "sha256:i", Digest: "sha256:d", Size: 42}, nil
	}})
	events := runJob(t, c, true)
	last := events[len(events)-1].GetJob()
	if last.GetState() != buildv1.JobState_JOB_STATE_SUCCEEDED || last.GetResult().GetDigest() != "sha256:d" || last.GetResult().GetSize() != 42 || !last.GetEmulated() {
		t.Fatalf("last event = %v", last)
	}
	out := texts(events)
	for _, want := range []string{"LEVEL_WARN No native aarch64 host is available", "LEVEL_OUTPUT Step 1/1 : FROM busybox"} {
		if !strings.Contains(out, want) {
			t.Errorf("events lack %q:\n%s", want, out)
		}
	}
	if strings.Join(files, ",") != "Dockerfile,app.txt" {
		t.Errorf("plugin saw context files %v", files)
	}
	if len(got.GetSecrets()) != 1 || got.GetSecrets()[0].GetDest() != "app/token" || got.GetRegistryConfig() != "cfg" {
		t.Errorf("secrets not handed to the plugin: %v", got)
	}
	if got.GetImageRef() != "registry.local:5000/v2/0123abcd" || got.GetRegistryToken() != secretToken || got.GetPlatform() != "linux/arm64/v8" ||
		got.GetHost().GetEndpoint() != "unix:///x.sock" || got.GetBuildArgs()["A"] != "1" {
		t.Errorf("spec = %v", got)
	}
	if len(rel.jobs) != 1 || rel.jobs[0] != "7/main "+testTicket {
		t.Errorf("token asked for %v, want the job with its ticket", rel.jobs)
	}
	for _, e := range events {
		if strings.Contains(e.String(), secretToken) {
			t.Fatal("an event carries the registry token")
		}
	}
}

func TestRunJobFailsWithThePluginsMessage(t *testing.T) {
	c, _ := newExecutor(t, &sdktest.FakeExecutor{BuildF: func(_ context.Context, _ *pluginv1.BuildSpec, r io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
		logs(&pluginv1.Log{Text: "exit code 3", Error: true})
		return nil, errors.New("the command '/bin/sh -c exit 3' returned a non-zero code: 3")
	}})
	events := runJob(t, c, false)
	last := events[len(events)-1].GetJob()
	if last.GetState() != buildv1.JobState_JOB_STATE_FAILED || !strings.Contains(last.GetError(), "non-zero code: 3") || strings.Contains(last.GetError(), "rpc error") {
		t.Fatalf("last event = %v", last)
	}
	if !strings.Contains(texts(events), "LEVEL_ERROR exit code 3") {
		t.Errorf("error line not marked: %s", texts(events))
	}
}

func TestRegisterReportsHealth(t *testing.T) {
	fake := &sdktest.FakeExecutor{HealthF: func(context.Context, *pluginv1.HostConfig) error {
		return errors.New("Cannot connect to the Docker daemon at unix:///x.sock")
	}}
	ex := New(Config{Hosts: hosts, Address: "exec:1"}, onePlugin{fake}, nil, nil, slog.New(slog.DiscardHandler))
	got := ex.checkHosts(context.Background(), 5e9)
	want := &schedulerv1.Host{Name: "amd", Plugin: "fake", NativeArchs: []string{"amd64"}, EmulatedArchs: []string{"aarch64"}, MaxConcurrent: 3,
		ExecutorAddress: "exec:1", Healthy: false, HealthMessage: "Cannot connect to the Docker daemon at unix:///x.sock"}
	if len(got) != 1 || got[0].String() != want.String() {
		t.Errorf("checkHosts = %v, want %v", got, want)
	}
	// What the plugin says the host can do reaches the scheduler; it is
	// asked once the host is healthy, and again after it was down.
	var asked atomic.Int32
	secrets := true
	fake.CapabilitiesF = func(context.Context, *pluginv1.HostConfig) (*pluginv1.CapabilitiesResponse, error) {
		asked.Add(1)
		return &pluginv1.CapabilitiesResponse{Buildkit: secrets, Secrets: secrets, EngineVersion: "28.5.2"}, nil
	}
	fake.HealthF = nil
	if got := ex.checkHosts(context.Background(), 5e9); !got[0].GetHealthy() || !got[0].GetSecrets() || got[0].GetEngineVersion() != "28.5.2" {
		t.Errorf("healthy host reported %v", got[0])
	}
	if got := ex.checkHosts(context.Background(), 5e9); !got[0].GetSecrets() || asked.Load() != 1 {
		t.Errorf("second heartbeat: %v, capabilities asked %d times, want once", got[0], asked.Load())
	}
	fake.HealthF = func(context.Context, *pluginv1.HostConfig) error { return errors.New("down") }
	ex.checkHosts(context.Background(), 5e9)
	fake.HealthF, secrets = nil, false // back, as a classic-builder host
	if got := ex.checkHosts(context.Background(), 5e9); got[0].GetSecrets() || asked.Load() != 2 {
		t.Errorf("after an outage: %v, capabilities asked %d times, want twice", got[0], asked.Load())
	}
}

func TestCacheRef(t *testing.T) {
	job := &buildv1.Job{Fleet: "admin/fleet", Service: "main", ImageLocation: "registry2.x.io/v2/0123456789abcdef0123456789abcdef"}
	// sha256("obb-cache/admin/fleet/main"), as services/release's CacheRepository.
	sum := sha256.Sum256([]byte("obb-cache/admin/fleet/main"))
	if got, want := cacheRef(job), "registry2.x.io/v2/"+hex.EncodeToString(sum[:])+":cache"; got != want {
		t.Errorf("cacheRef = %q, want %q", got, want)
	}
	for _, j := range []*buildv1.Job{
		{Service: "main", ImageLocation: job.GetImageLocation()},
		{Fleet: "admin/fleet", ImageLocation: job.GetImageLocation()},
		{Fleet: "admin/fleet", Service: "main", ImageLocation: "nohost"},
	} {
		if got := cacheRef(j); got != "" {
			t.Errorf("cacheRef(%v) = %q, want none", j, got)
		}
	}
}
