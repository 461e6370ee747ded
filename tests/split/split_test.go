// Package split runs each builder service in its own process (`obb serve
// release`, `scheduler`, `executor`, `ingest`), as an operator would spread
// them, and pushes through them: the services reach each other only over
// gRPC. It also checks what operators use: gRPC reflection and health.
package split

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/open-balena-builder/builder/platform/rpc"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
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

// listServices asks a server for its services through reflection.
func listServices(ctx context.Context, cc *grpc.ClientConn) ([]string, error) {
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	// A refused stream may fail Send with io.EOF: its status comes with Recv.
	_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Each internal service answers health to anyone, and everything else
// (reflection included) only to a peer with the builder's certificate:
// between processes the services speak mTLS.
func TestEveryServiceAnswersReflectionAndHealth(t *testing.T) {
	auth, err := rpc.NewTLSInternal(env.TLS.CA, env.TLS.Cert, env.TLS.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(env.TLS.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	noClientCert := credentials.NewTLS(&tls.Config{RootCAs: pool})
	for addr, want := range map[string]string{
		env.Ingest:    "builder.ingest.v1.IngestService",
		env.Scheduler: "builder.scheduler.v1.SchedulerService",
		env.Executor:  "builder.executor.v1.ExecutorService",
		env.Release:   "builder.release.v1.ReleaseService",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		peer, err := rpc.Dial(addr, auth)
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		names, err := listServices(ctx, peer)
		if err != nil || !slices.Contains(names, want) || !slices.Contains(names, "grpc.health.v1.Health") {
			t.Errorf("%s with the builder's certificate lists %v (%v), want %s and health", addr, names, err, want)
		}
		stranger := dial(t, addr, noClientCert)
		if names, err := listServices(ctx, stranger); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s without a client certificate: reflection %v %v, want Unauthenticated", addr, names, err)
		}
		if _, err := listServices(ctx, dial(t, addr, insecure.NewCredentials())); err == nil {
			t.Errorf("%s answers plaintext gRPC", addr)
		}
		h, err := healthpb.NewHealthClient(stranger).Check(ctx, &healthpb.HealthCheckRequest{Service: want})
		if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s health of %s: %v %v", addr, want, h, err)
		}
	}
}

// Operators reach the builds and hosts on the admin address, with the
// operator token: reflection (grpcurl list) and the calls themselves.
func TestOperatorSurfaceAnswersGRPCWithTheToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cc := dial(t, env.AdminAddr, insecure.NewCredentials())
	if _, err := listServices(ctx, cc); status.Code(err) != codes.Unauthenticated {
		t.Errorf("reflection without the token: %v, want Unauthenticated", err)
	}
	octx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+harness.AdminToken)
	names, err := listServices(octx, cc)
	if err != nil || !slices.Contains(names, "builder.ingest.v1.IngestService") || !slices.Contains(names, "builder.scheduler.v1.SchedulerService") {
		t.Errorf("reflection with the token lists %v (%v)", names, err)
	}
	hosts, err := schedulerv1.NewSchedulerServiceClient(cc).ListHosts(octx, &schedulerv1.ListHostsRequest{})
	if err != nil || len(hosts.GetHosts()) == 0 {
		t.Errorf("ListHosts through the admin address: %v %v", hosts, err)
	}
	if _, err := schedulerv1.NewSchedulerServiceClient(cc).RegisterHosts(octx, &schedulerv1.RegisterHostsRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("RegisterHosts through the admin address: %v, want Unimplemented (internal only)", err)
	}
}
