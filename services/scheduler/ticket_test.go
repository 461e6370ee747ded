package scheduler

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	executorv1 "github.com/open-balena-builder/builder/proto/builder/executor/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

// A job's ticket opens the job to its executor while it runs, and to
// nobody else: not with another job's ticket, not after the job ended.
func TestTicketOpensARunningJobOnly(t *testing.T) {
	type check struct {
		name string
		code codes.Code
	}
	var r *rig
	var tickets = map[string]string{}
	var during []check
	r = newRig(t, func(ctx context.Context, req *executorv1.RunJobRequest, _ func(*buildv1.Event)) *buildv1.JobUpdate {
		tk := req.GetTicket()
		tickets[req.GetJob().GetJobId()] = tk
		ask := func(name, job, ticket string) {
			resp, err := r.client.AuthorizeJob(ctx, &schedulerv1.AuthorizeJobRequest{JobId: job, Ticket: ticket})
			during = append(during, check{name, status.Code(err)})
			if err == nil && (resp.GetJob().GetImageLocation() != "reg/v2/abc" || resp.GetHost() != "amd") {
				t.Errorf("%s: AuthorizeJob = %v", name, resp)
			}
		}
		ask("own ticket", req.GetJob().GetJobId(), tk)
		ask("no ticket", req.GetJob().GetJobId(), "")
		ask("wrong ticket", req.GetJob().GetJobId(), tk+"x")
		ask("another job", "9/main", tk)
		return &buildv1.JobUpdate{State: buildv1.JobState_JOB_STATE_SUCCEEDED, Result: &buildv1.ImageResult{Digest: "sha256:1"}}
	})
	req := jobs("1", "amd64", "main")
	req.Jobs[0].ImageLocation = "reg/v2/abc"
	ctx := context.Background()
	if _, err := r.client.SubmitBuild(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, fin := r.watch(t, ctx, "1"); fin.GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Fatalf("build ended %v", fin)
	}
	want := []check{{"own ticket", codes.OK}, {"no ticket", codes.PermissionDenied}, {"wrong ticket", codes.PermissionDenied}, {"another job", codes.PermissionDenied}}
	if len(during) != len(want) {
		t.Fatalf("checks = %v", during)
	}
	for i := range want {
		if during[i] != want[i] {
			t.Errorf("%s: %v, want %v", want[i].name, during[i].code, want[i].code)
		}
	}
	if tickets["1/main"] == "" || len(tickets["1/main"]) < 32 {
		t.Fatalf("ticket %q: want a long random one", tickets["1/main"])
	}
	_, err := r.client.AuthorizeJob(ctx, &schedulerv1.AuthorizeJobRequest{JobId: "1/main", Ticket: tickets["1/main"]})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("after the job ended: %v, want PermissionDenied", err)
	}
}
