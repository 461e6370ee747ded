// Package split runs each builder service in its own process (`obb serve
// release`, `scheduler`, `executor`, `ingest`), as an operator would spread
// them, and pushes through them: the services reach each other only over
// gRPC. It also checks what operators use: gRPC reflection and health.
package split

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/open-balena-builder/builder/tests/harness"
)

var env *harness.Stack

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	s, err := harness.Start(ctx, harness.Options{Split: true})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "split: cannot start the stack:", err)
		os.Exit(1)
	}
	env = s
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- obb logs (tail) ---\n%s\n", s.BuilderLogTail(60))
	}
	s.Stop()
	os.Exit(code)
}

func TestPushThroughSeparateProcesses(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/Dockerfile", []byte("FROM busybox\nRUN echo split-build\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	token := env.API.AddUser("split")
	fleet := env.API.AddFleet("split", "splitfleet", "genericx86-64-ext")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := harness.Push(ctx, env.BuilderURL, dir, harness.PushOptions{Slug: fleet.Slug, Token: token})
	if err != nil || res.IsError || res.ReleaseID == 0 {
		t.Fatalf("push: %v\n%s", err, res.Text())
	}
	if rel, _ := env.API.Release(res.ReleaseID); rel.Status != "success" {
		t.Errorf("release status %q", rel.Status)
	}
}

func TestEveryServiceAnswersReflectionAndHealth(t *testing.T) {
	for addr, want := range map[string]string{
		env.Ingest:    "builder.ingest.v1.IngestService",
		env.Scheduler: "builder.scheduler.v1.SchedulerService",
		env.Executor:  "builder.executor.v1.ExecutorService",
		env.Release:   "builder.release.v1.ReleaseService",
	} {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		if !slices.Contains(names, want) || !slices.Contains(names, "grpc.health.v1.Health") {
			t.Errorf("%s lists %v, want %s and health", addr, names, want)
		}
		h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: want})
		if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s health of %s: %v %v", addr, want, h, err)
		}
	}
}
