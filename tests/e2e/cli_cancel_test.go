package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	"github.com/open-balena-builder/builder/tests/harness"
)

func TestCLIDetachedBuildGoesOnAndItsLogCanBeRead(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	res := balenaPush(t, cli(t, f), f, project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo detached-step && sleep 1\n"}), "--detached")
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	// Not a TTY: the CLI echoes the builder's JSON reply verbatim.
	var reply struct {
		Started   bool  `json:"started"`
		ReleaseID int64 `json:"releaseId"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(res.Stdout)), &reply); err != nil || !reply.Started || reply.ReleaseID == 0 {
		t.Fatalf("detached reply %q (%v)", res.Stdout, err)
	}

	// WatchBuild over gRPC, as an operator with grpcurl would: on the
	// admin address, with the operator token.
	cc, err := grpc.NewClient(env.AdminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	octx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+harness.AdminToken)
	stream, err := ingestv1.NewIngestServiceClient(cc).WatchBuild(octx, &ingestv1.WatchBuildRequest{BuildId: itoa(reply.ReleaseID)})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var fin *buildv1.BuildFinished
	for fin == nil {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, resp.GetEvent().GetLog().GetText())
		fin = resp.GetEvent().GetFinished()
	}
	if fin.GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED || !strings.Contains(strings.Join(lines, "\n"), "detached-step") {
		t.Errorf("WatchBuild: finished %v, lines:\n%s", fin, strings.Join(lines, "\n"))
	}
	if r := waitRelease(t, reply.ReleaseID); r.Status != "success" {
		t.Errorf("release %q", r.Status)
	}

	// The same log over REST, after the build ended, as its user with
	// their token on the public port (balena push --detached users).
	resp, err := harness.Call(http.MethodGet, env.BuilderURL+"/v1/builds/"+itoa(reply.ReleaseID)+"/logs", f.token, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "detached-step") || !strings.Contains(string(body), "BUILD_STATE_SUCCEEDED") {
		t.Errorf("GET /v1/builds/%d/logs: %d\n%.3000s", reply.ReleaseID, resp.StatusCode, body)
	}
}

func TestCLICtrlCCancelsTheBuild(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	c := cli(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := c.Command(ctx, "push", f.fleet.AppName, "--source", project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo long-step && sleep 300\n"}))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "long-step") && !strings.Contains(sc.Text(), "RUN") {
			break
		}
	}
	if !strings.Contains(out.String(), "long-step") {
		t.Fatalf("the long RUN never started:\n%s\n%s", plain(out.String()), stderr.String())
	}
	waitFor(t, "the RUN container", func() bool { return len(runningContainers(t)) > 0 })
	sigint := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go io.Copy(&out, stdout)
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Errorf("balena push after SIGINT: %v, want exit 130\n%s\n%s", err, plain(out.String()), stderr.String())
	}
	waitFor(t, "the build container to stop", func() bool { return len(runningContainers(t)) == 0 })
	t.Logf("build stopped on the host %s after SIGINT", time.Since(sigint).Round(time.Millisecond))

	m := regexp.MustCompile(`release ID (\d+)`).FindStringSubmatch(out.String() + stderr.String())
	if m == nil {
		t.Fatalf("the CLI did not cancel a release:\n%s", plain(out.String()+stderr.String()))
	}
	id, _ := strconv.ParseInt(m[1], 10, 64)
	if r := waitRelease(t, id); r.Status != "cancelled" {
		t.Errorf("release status %q, want cancelled", r.Status)
	}
	imgs := imagesOf(t, id)
	waitFor(t, "the image to end", func() bool { img, _ := env.API.Image(imgs[0].ID); return img.Status != "running" })
	if img, _ := env.API.Image(imgs[0].ID); img.Status != "cancelled" {
		t.Errorf("image status %q, want cancelled", img.Status)
	}
	time.Sleep(time.Second) // give a wrong "success" time to land
	if r, _ := env.API.Release(id); r.Status != "cancelled" {
		t.Errorf("release turned %q after the cancel", r.Status)
	}
}
