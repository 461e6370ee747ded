package e2e

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

// runningContainers lists the containers running on the amd64 daemon.
func runningContainers(t *testing.T) []map[string]any {
	t.Helper()
	var list []map[string]any
	if err := env.AMD64.Engine().JSON(context.Background(), http.MethodGet, "/containers/json", nil, nil, &list); err != nil {
		t.Fatal(err)
	}
	return list
}

// waitFor polls cond until it holds or a generous deadline passes (a bound
// against hanging, not a speed assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after 60s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClientDisconnectCancelsTheBuild(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	dir := project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo sleeping && sleep 120\n"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var releaseID int64
	_, err := harness.Push(ctx, env.BuilderURL, dir, harness.PushOptions{Slug: f.fleet.Slug, Token: f.token,
		OnMessage: func(m harness.Message) {
			if m.Resource == "buildLogId" {
				releaseID = int64(m.Value.(float64))
			}
			if strings.Contains(m.Message, "sleeping") {
				cancel() // what Ctrl-C in balena-cli does to the connection
			}
		}})
	if err == nil {
		t.Fatal("the push ended normally; the build was supposed to be interrupted")
	}
	if releaseID == 0 {
		t.Fatal("no buildLogId before the cancel")
	}
	rel := waitRelease(t, releaseID)
	if rel.Status != "cancelled" || rel.EndTimestamp == nil {
		t.Errorf("release status %q end %v, want cancelled", rel.Status, rel.EndTimestamp)
	}
	imgs := imagesOf(t, releaseID)
	if len(imgs) != 1 || imgs[0].Status != "cancelled" {
		t.Errorf("image = %+v, want cancelled", imgs)
	}
	waitFor(t, "the build container to go", func() bool { return len(runningContainers(t)) == 0 })
	// It stays cancelled.
	time.Sleep(500 * time.Millisecond)
	if r, _ := env.API.Release(releaseID); r.Status != "cancelled" {
		t.Errorf("release turned %q after the cancel", r.Status)
	}
}

func TestReleaseCancelledThroughTheAPIStopsTheBuild(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	dir := project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo sleeping && sleep 120\n"})
	var releaseID int64
	res, err := harness.Push(context.Background(), env.BuilderURL, dir, harness.PushOptions{Slug: f.fleet.Slug, Token: f.token,
		OnMessage: func(m harness.Message) {
			if m.Resource == "buildLogId" {
				releaseID = int64(m.Value.(float64))
			}
			if strings.Contains(m.Message, "sleeping") {
				// What balena-cli's Ctrl-C sends before it drops the connection.
				req, _ := http.NewRequest(http.MethodPatch, env.APIURL+"/v7/release("+itoa(releaseID)+")?$filter=status%20ne%20'success'",
					strings.NewReader(`{"status":"cancelled","end_timestamp":`+itoa(time.Now().UnixMilli())+`}`))
				req.Header.Set("Authorization", "Bearer "+f.token)
				req.Header.Set("Content-Type", "application/json")
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError || !strings.Contains(res.Text(), "Build cancelled") {
		t.Errorf("the stream does not end with a cancel error:\n%s", res.Text())
	}
	if rel := waitRelease(t, releaseID); rel.Status != "cancelled" {
		t.Errorf("release status %q, want cancelled", rel.Status)
	}
	waitFor(t, "the build container to go", func() bool { return len(runningContainers(t)) == 0 })
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
