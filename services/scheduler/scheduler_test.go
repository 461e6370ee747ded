package scheduler

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	executorv1 "github.com/open-balena-builder/builder/proto/builder/executor/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

// fakeExecutor runs jobs with a function per service.
type fakeExecutor struct {
	executorv1.UnimplementedExecutorServiceServer
	run func(ctx context.Context, req *executorv1.RunJobRequest, send func(*buildv1.Event)) *buildv1.JobUpdate

	mu      sync.Mutex
	traceID map[string]trace.TraceID
}

func (f *fakeExecutor) RunJob(req *executorv1.RunJobRequest, stream grpc.ServerStreamingServer[executorv1.RunJobResponse]) error {
	f.mu.Lock()
	f.traceID[req.GetJob().GetService()] = trace.SpanContextFromContext(stream.Context()).TraceID()
	f.mu.Unlock()
	send := func(e *buildv1.Event) { _ = stream.Send(&executorv1.RunJobResponse{Event: e}) }
	u := f.run(stream.Context(), req, send)
	send(&buildv1.Event{Service: req.GetJob().GetService(), Kind: &buildv1.Event_Job{Job: u}})
	return nil
}

type rig struct {
	client  schedulerv1.SchedulerServiceClient
	exec    *fakeExecutor
	metrics *sdkmetric.ManualReader
}

// sum returns the value of a counter or gauge data point with attribute
// key=value (all points if key is "").
func (r *rig) sum(t *testing.T, name, key, value string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			var points []metricdata.DataPoint[int64]
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				points = d.DataPoints
			case metricdata.Gauge[int64]:
				points = d.DataPoints
			}
			for _, p := range points {
				if v, ok := p.Attributes.Value(attribute.Key(key)); key == "" || ok && v.Emit() == value {
					total += p.Value
				}
			}
		}
	}
	return total
}

// newRig serves a scheduler and a fake executor over in-memory gRPC with
// OpenTelemetry stats handlers, as obb does over TCP.
func newRig(t *testing.T, run func(context.Context, *executorv1.RunJobRequest, func(*buildv1.Event)) *buildv1.JobUpdate) *rig {
	t.Helper()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	serve := func(register func(*grpc.Server)) *grpc.ClientConn {
		lis := bufconn.Listen(1 << 20)
		srv := grpc.NewServer(grpc.StatsHandler(otelgrpc.NewServerHandler()))
		register(srv)
		go srv.Serve(lis)
		t.Cleanup(srv.Stop)
		cc, err := grpc.NewClient("passthrough:///bufnet",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(otelgrpc.NewClientHandler()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	fe := &fakeExecutor{run: run, traceID: map[string]trace.TraceID{}}
	execConn := serve(func(s *grpc.Server) { executorv1.RegisterExecutorServiceServer(s, fe) })
	reader := sdkmetric.NewManualReader()
	sched, err := New(Config{BuildTimeout: time.Minute, Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")},
		func(string) (executorv1.ExecutorServiceClient, error) {
			return executorv1.NewExecutorServiceClient(execConn), nil
		}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cc := serve(func(s *grpc.Server) { schedulerv1.RegisterSchedulerServiceServer(s, sched) })
	r := &rig{client: schedulerv1.NewSchedulerServiceClient(cc), exec: fe, metrics: reader}
	_, err = r.client.RegisterHosts(context.Background(), &schedulerv1.RegisterHostsRequest{Hosts: []*schedulerv1.Host{
		{Name: "amd", NativeArchs: []string{"amd64"}, EmulatedArchs: []string{"aarch64"}, MaxConcurrent: 4, ExecutorAddress: "fake", Healthy: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func jobs(build string, arch string, services ...string) *schedulerv1.SubmitBuildRequest {
	req := &schedulerv1.SubmitBuildRequest{BuildId: build}
	for _, s := range services {
		req.Jobs = append(req.Jobs, &buildv1.Job{JobId: build + "/" + s, BuildId: build, Service: s, Arch: arch, Fleet: "org/app"})
	}
	return req
}

// watch collects a build's events until it finishes.
func (r *rig) watch(t *testing.T, ctx context.Context, build string) ([]*buildv1.Event, *buildv1.BuildFinished) {
	t.Helper()
	stream, err := r.client.WatchBuild(ctx, &schedulerv1.WatchBuildRequest{BuildId: build})
	if err != nil {
		t.Fatal(err)
	}
	var events []*buildv1.Event
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			t.Fatal("watch ended without BuildFinished")
		}
		if err != nil {
			t.Fatal(err)
		}
		if f := resp.GetEvent().GetFinished(); f != nil {
			return events, f
		}
		events = append(events, resp.GetEvent())
	}
}

func finalStates(events []*buildv1.Event) map[string]buildv1.JobState {
	out := map[string]buildv1.JobState{}
	for _, e := range events {
		if u := e.GetJob(); u != nil {
			out[e.GetService()] = u.GetState()
		}
	}
	return out
}

func succeed(_ context.Context, req *executorv1.RunJobRequest, send func(*buildv1.Event)) *buildv1.JobUpdate {
	send(&buildv1.Event{Service: req.GetJob().GetService(), Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Text: "built " + req.GetJob().GetService()}}})
	return &buildv1.JobUpdate{State: buildv1.JobState_JOB_STATE_SUCCEEDED, Result: &buildv1.ImageResult{Digest: "sha256:x"}}
}

func TestBuildSucceedsAndStaysInTheCallersTrace(t *testing.T) {
	r := newRig(t, succeed)
	ctx, span := otel.Tracer("test").Start(context.Background(), "push")
	defer span.End()
	if _, err := r.client.SubmitBuild(ctx, jobs("b1", "amd64", "main", "api")); err != nil {
		t.Fatal(err)
	}
	events, fin := r.watch(t, context.Background(), "b1")
	if fin.GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Fatalf("finished %v: %s", fin.GetState(), fin.GetError())
	}
	logs := 0
	for _, e := range events {
		if strings.HasPrefix(e.GetLog().GetText(), "built ") {
			logs++
		}
	}
	if logs != 2 {
		t.Errorf("relayed %d job log lines, want 2", logs)
	}
	for svc, state := range finalStates(events) {
		if state != buildv1.JobState_JOB_STATE_SUCCEEDED {
			t.Errorf("%s ended %v", svc, state)
		}
	}
	if got := r.sum(t, "obb.scheduler.jobs", "state", "succeeded"); got != 2 {
		t.Errorf("obb.scheduler.jobs{state=succeeded} = %d, want 2", got)
	}
	if got := r.sum(t, "obb.scheduler.host.slots", "host", "amd"); got != 4 {
		t.Errorf("obb.scheduler.host.slots{host=amd} = %d, want 4", got)
	}
	for svc, id := range r.exec.traceID {
		if id != span.SpanContext().TraceID() {
			t.Errorf("job %s ran in trace %s, want the caller's %s", svc, id, span.SpanContext().TraceID())
		}
	}
}

func TestOneFailureCancelsTheOtherServices(t *testing.T) {
	r := newRig(t, func(ctx context.Context, req *executorv1.RunJobRequest, send func(*buildv1.Event)) *buildv1.JobUpdate {
		if req.GetJob().GetService() == "bad" {
			return &buildv1.JobUpdate{State: buildv1.JobState_JOB_STATE_FAILED, Error: "RUN exit 3"}
		}
		<-ctx.Done() // a long build, stopped by the cancel
		return &buildv1.JobUpdate{State: buildv1.JobState_JOB_STATE_CANCELLED}
	})
	if _, err := r.client.SubmitBuild(context.Background(), jobs("b2", "amd64", "bad", "slow")); err != nil {
		t.Fatal(err)
	}
	events, fin := r.watch(t, context.Background(), "b2")
	if fin.GetState() != buildv1.BuildState_BUILD_STATE_FAILED || !strings.Contains(fin.GetError(), "bad: RUN exit 3") {
		t.Errorf("finished %v %q, want FAILED naming bad", fin.GetState(), fin.GetError())
	}
	st := finalStates(events)
	if st["bad"] != buildv1.JobState_JOB_STATE_FAILED || st["slow"] != buildv1.JobState_JOB_STATE_CANCELLED {
		t.Errorf("job states %v", st)
	}
}

func TestCancelBuild(t *testing.T) {
	started := make(chan struct{})
	r := newRig(t, func(ctx context.Context, req *executorv1.RunJobRequest, send func(*buildv1.Event)) *buildv1.JobUpdate {
		close(started)
		<-ctx.Done()
		return &buildv1.JobUpdate{State: buildv1.JobState_JOB_STATE_CANCELLED}
	})
	if _, err := r.client.SubmitBuild(context.Background(), jobs("b3", "amd64", "main")); err != nil {
		t.Fatal(err)
	}
	<-started
	if _, err := r.client.CancelBuild(context.Background(), &schedulerv1.CancelBuildRequest{BuildId: "b3", Reason: "operator"}); err != nil {
		t.Fatal(err)
	}
	_, fin := r.watch(t, context.Background(), "b3")
	if fin.GetState() != buildv1.BuildState_BUILD_STATE_CANCELLED || !strings.Contains(fin.GetError(), "operator") {
		t.Errorf("finished %v %q, want CANCELLED with the reason", fin.GetState(), fin.GetError())
	}
}

func TestNoHostForTheArchFailsClearly(t *testing.T) {
	r := newRig(t, succeed)
	if _, err := r.client.SubmitBuild(context.Background(), jobs("b4", "rpi", "main")); err != nil {
		t.Fatal(err)
	}
	_, fin := r.watch(t, context.Background(), "b4")
	if fin.GetState() != buildv1.BuildState_BUILD_STATE_FAILED || !strings.Contains(fin.GetError(), "no Docker host builds rpi") {
		t.Errorf("finished %v %q", fin.GetState(), fin.GetError())
	}
}

func TestSubmitValidation(t *testing.T) {
	r := newRig(t, succeed)
	tests := []struct {
		name string
		req  *schedulerv1.SubmitBuildRequest
	}{
		{"no id", &schedulerv1.SubmitBuildRequest{Jobs: jobs("x", "amd64", "main").Jobs}},
		{"no jobs", &schedulerv1.SubmitBuildRequest{BuildId: "x"}},
	}
	for _, tt := range tests {
		if _, err := r.client.SubmitBuild(context.Background(), tt.req); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	if _, err := r.client.SubmitBuild(context.Background(), jobs("dup", "amd64", "main")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.SubmitBuild(context.Background(), jobs("dup", "amd64", "main")); err == nil {
		t.Error("the same build submitted twice")
	}
	stream, err := r.client.WatchBuild(context.Background(), &schedulerv1.WatchBuildRequest{BuildId: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.NotFound {
		t.Errorf("watching an unknown build: %v, want NotFound", err)
	}
}
