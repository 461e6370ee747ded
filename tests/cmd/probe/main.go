// Command probe plays a RUN step that reaches the builder's loopback (a
// Docker host on the builder's machine, host networking): it calls the
// powerful RPCs of every internal service, and the operator surface,
// without credentials, and prints one line per call:
//
//	probe: <service> <method>: <gRPC code or HTTP status>
//
// The e2e suite builds it into a project and checks that nothing answered.
// Usage: probe ingest=ADDR scheduler=ADDR executor=ADDR release=ADDR admin=ADDR
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	executorv1 "github.com/open-balena-builder/builder/proto/builder/executor/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

func main() {
	addrs := map[string]string{}
	for _, a := range os.Args[1:] {
		k, v, _ := strings.Cut(a, "=")
		addrs[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A guessed process secret and a user-ish token: neither may help.
	ctx = metadata.AppendToOutgoingContext(ctx, "obb-internal-secret", "guess", "authorization", "Bearer guess", "obb-surface", "admin")
	conn := func(addr string) *grpc.ClientConn {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Println("probe: dial", addr, err)
			os.Exit(0)
		}
		return cc
	}
	report := func(svc, method string, err error) {
		fmt.Printf("probe: %s %s: %s\n", svc, method, status.Code(err))
	}
	for _, svc := range []string{"ingest", "scheduler", "executor", "release", "admin"} {
		cc := conn(addrs[svc])
		defer cc.Close()
		stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err == nil {
			// A refused stream may fail Send with io.EOF: its status
			// comes with Recv.
			_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
			_, err = stream.Recv()
		}
		report(svc, "reflection", err)
	}
	ing, sch, exe, rel, adm := conn(addrs["ingest"]), conn(addrs["scheduler"]), conn(addrs["executor"]), conn(addrs["release"]), conn(addrs["admin"])
	_, err := ingestv1.NewContextServiceClient(ing).GetBuildSecrets(ctx, &ingestv1.GetBuildSecretsRequest{BuildId: "1", Service: "main"})
	report("ingest", "GetBuildSecrets", err)
	oc, err := ingestv1.NewContextServiceClient(ing).OpenContext(ctx, &ingestv1.OpenContextRequest{BuildId: "1", Service: "main"})
	if err == nil {
		_, err = oc.Recv()
	}
	report("ingest", "OpenContext", err)
	_, err = ingestv1.NewIngestServiceClient(ing).ListBuilds(ctx, &ingestv1.ListBuildsRequest{})
	report("ingest", "ListBuilds", err)
	_, err = ingestv1.NewIngestServiceClient(ing).CancelBuild(ctx, &ingestv1.CancelBuildRequest{BuildId: "1"})
	report("ingest", "CancelBuild", err)
	_, err = releasev1.NewReleaseServiceClient(rel).RegistryToken(ctx, &releasev1.RegistryTokenRequest{JobId: "1/main"})
	report("release", "RegistryToken", err)
	cd, err := releasev1.NewReleaseServiceClient(rel).CreateDeltas(ctx, &releasev1.CreateDeltasRequest{UserToken: "x", FleetId: 1, ReleaseId: 1})
	if err == nil {
		_, err = cd.Recv()
	}
	report("release", "CreateDeltas", err)
	_, err = schedulerv1.NewSchedulerServiceClient(sch).RegisterHosts(ctx, &schedulerv1.RegisterHostsRequest{Hosts: []*schedulerv1.Host{{Name: "amd64", ExecutorAddress: "127.0.0.1:1"}}})
	report("scheduler", "RegisterHosts", err)
	_, err = schedulerv1.NewSchedulerServiceClient(sch).SubmitBuild(ctx, &schedulerv1.SubmitBuildRequest{BuildId: "x", Jobs: []*buildv1.Job{{JobId: "x/main"}}})
	report("scheduler", "SubmitBuild", err)
	_, err = schedulerv1.NewSchedulerServiceClient(sch).DrainHost(ctx, &schedulerv1.DrainHostRequest{Name: "amd64"})
	report("scheduler", "DrainHost", err)
	_, err = schedulerv1.NewSchedulerServiceClient(sch).AuthorizeJob(ctx, &schedulerv1.AuthorizeJobRequest{JobId: "1/main"})
	report("scheduler", "AuthorizeJob", err)
	rj, err := executorv1.NewExecutorServiceClient(exe).RunJob(ctx, &executorv1.RunJobRequest{Host: "amd64", Job: &buildv1.Job{JobId: "x/main"}})
	if err == nil {
		_, err = rj.Recv()
	}
	report("executor", "RunJob", err)
	_, err = schedulerv1.NewSchedulerServiceClient(adm).DrainHost(ctx, &schedulerv1.DrainHostRequest{Name: "amd64"})
	report("admin", "DrainHost", err)
	_, err = ingestv1.NewIngestServiceClient(adm).ListBuilds(ctx, &ingestv1.ListBuildsRequest{})
	report("admin", "ListBuilds", err)
	for _, path := range []string{"/v1/hosts", "/v1/builds", "/metrics"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addrs["admin"]+path, nil)
		req.Header.Set("Authorization", "Bearer guess")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Printf("probe: admin GET %s: %v\n", path, err)
			continue
		}
		resp.Body.Close()
		fmt.Printf("probe: admin GET %s: HTTP %d\n", path, resp.StatusCode)
	}
}
