package ingest

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/open-balena-builder/builder/platform/hub"
	"github.com/open-balena-builder/builder/platform/sqlstore"
	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/ingest/journal"
	"github.com/open-balena-builder/builder/services/ingest/project"
)

// watchStream collects what WatchBuild sends.
type watchStream struct {
	ctx  context.Context
	mu   sync.Mutex
	sent []*buildv1.Event
}

func (w *watchStream) Context() context.Context     { return w.ctx }
func (w *watchStream) SetHeader(metadata.MD) error  { return nil }
func (w *watchStream) SendHeader(metadata.MD) error { return nil }
func (w *watchStream) SetTrailer(metadata.MD)       {}
func (w *watchStream) SendMsg(any) error            { return nil }
func (w *watchStream) RecvMsg(any) error            { return nil }
func (w *watchStream) Send(r *ingestv1.WatchBuildResponse) error {
	w.mu.Lock()
	w.sent = append(w.sent, r.GetEvent())
	w.mu.Unlock()
	return nil
}

// sharedRig is two builders, a and b, on one database.
func sharedRig(t *testing.T) (a, b *Server, db *sqlstore.DB) {
	t.Helper()
	db, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "obb.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rel := &fakeRelease{
		users:  map[string]string{"alice-token": "alice", "bob-token": "bob"},
		fleets: map[string][]string{"alice-token": {"alice/app"}, "bob-token": {"bob/app"}},
	}
	mk := func(instance string) *Server {
		s, err := New(Config{DataDir: t.TempDir(), OperatorToken: opToken, Journal: journal.New(db), Instance: instance, Shared: true}, rel, &fakeJobs{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return mk("a"), mk("b"), db
}

// runningBuild starts a build of alice/app on s, journaled.
func runningBuild(t *testing.T, s *Server, id string) (*build, <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	t.Cleanup(func() { cancel(nil) })
	bl := &build{id: id, releaseID: 7, fleet: &releasev1.Fleet{Slug: "alice/app"}, user: "alice", hub: hub.New(), ctx: ctx, cancel: cancel,
		plan: &project.Plan{Services: []project.Service{{Name: "main"}}}, created: time.Now(),
		services: map[string]*serviceRun{}, state: buildv1.BuildState_BUILD_STATE_RUNNING}
	s.builds.Add(id, bl)
	done, err := s.startJournal(context.Background(), bl)
	if err != nil {
		t.Fatal(err)
	}
	return bl, done
}

func logEv(text string) *buildv1.Event {
	return &buildv1.Event{BuildId: "7", Service: "main", Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Text: text}}}
}

func TestAnotherBuilderShowsFollowsAndCancelsABuild(t *testing.T) {
	a, b, _ := sharedRig(t)
	bl, journaled := runningBuild(t, a, "7")
	bl.hub.Publish(logEv("step one"))

	alice := withToken("alice-token", false)
	got, err := b.GetBuild(alice, &ingestv1.GetBuildRequest{BuildId: "7"})
	if err != nil || got.GetBuild().GetState() != buildv1.BuildState_BUILD_STATE_RUNNING || got.GetBuild().GetFleet() != "alice/app" {
		t.Fatalf("b.GetBuild = %v, %v", got, err)
	}
	if _, err := b.GetBuild(withToken("bob-token", false), &ingestv1.GetBuildRequest{BuildId: "7"}); status.Code(err) != codes.NotFound {
		t.Errorf("bob sees alice's build through b: %v", err)
	}
	list, err := b.ListBuilds(alice, &ingestv1.ListBuildsRequest{})
	if err != nil || len(list.GetBuilds()) != 1 || list.GetBuilds()[0].GetBuildId() != "7" {
		t.Errorf("b.ListBuilds = %v, %v", list, err)
	}

	// b follows the log a writes, to the end.
	w := &watchStream{ctx: alice}
	watched := make(chan error, 1)
	go func() { watched <- b.WatchBuild(&ingestv1.WatchBuildRequest{BuildId: "7"}, w) }()

	// A cancel through b reaches a.
	if _, err := b.CancelBuild(alice, &ingestv1.CancelBuildRequest{BuildId: "7", Reason: "wrong branch"}); err != nil {
		t.Fatal(err)
	}
	if bl.ctx.Err() != nil {
		t.Fatal("b cancelled a's build without a")
	}
	a.takeCancelRequests(context.Background())
	if cause := context.Cause(bl.ctx); cause == nil || cause.Error() != "cancelled by alice: wrong branch" {
		t.Fatalf("a's build: cause %v", cause)
	}
	bl.hub.Publish(logEv("step two"))
	bl.mu.Lock()
	bl.state, bl.finished, bl.err = buildv1.BuildState_BUILD_STATE_CANCELLED, time.Now(), "cancelled by alice: wrong branch"
	bl.mu.Unlock()
	bl.hub.Publish(&buildv1.Event{BuildId: "7", Kind: &buildv1.Event_Finished{Finished: &buildv1.BuildFinished{State: buildv1.BuildState_BUILD_STATE_CANCELLED}}})
	bl.hub.Close()
	<-journaled
	select {
	case err := <-watched:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b's watch did not end with the build")
	}
	var texts []string
	for _, e := range w.sent {
		if l := e.GetLog(); l != nil {
			texts = append(texts, l.GetText())
		}
	}
	if strings.Join(texts, "|") != "step one|step two" || w.sent[len(w.sent)-1].GetFinished() == nil {
		t.Errorf("b's watch saw %v", w.sent)
	}
	got, _ = b.GetBuild(alice, &ingestv1.GetBuildRequest{BuildId: "7"})
	if got.GetBuild().GetState() != buildv1.BuildState_BUILD_STATE_CANCELLED || got.GetBuild().GetFinishedAt() == nil {
		t.Errorf("b.GetBuild after the end = %v", got)
	}
}

func TestAStoppedBuildersBuildsAreSettledByAnother(t *testing.T) {
	a, b, db := sharedRig(t)
	_, _ = runningBuild(t, a, "7") // a dies with it running
	leases := sqlstore.NewLeases(db)
	ctx := context.Background()
	if err := leases.Beat(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	b.takeOver(ctx, leases, 5*time.Millisecond) // a's lease has expired
	alice := withToken("alice-token", false)
	got, err := b.GetBuild(alice, &ingestv1.GetBuildRequest{BuildId: "7"})
	if err == nil {
		// b has no such build locally: the journal's view answers.
		if got.GetBuild().GetState() != buildv1.BuildState_BUILD_STATE_FAILED || got.GetBuild().GetError() != Abandoned {
			t.Errorf("after the takeover: %v", got)
		}
	} else {
		t.Fatal(err)
	}
	w := &watchStream{ctx: alice}
	if err := b.WatchBuild(&ingestv1.WatchBuildRequest{BuildId: "7"}, w); err != nil {
		t.Fatal(err)
	}
	last := w.sent[len(w.sent)-1].GetFinished()
	if last == nil || last.GetState() != buildv1.BuildState_BUILD_STATE_FAILED || last.GetError() != Abandoned {
		t.Errorf("the log's end: %v", w.sent)
	}
	if live, _ := leases.Live(ctx, time.Hour); len(live) != 0 {
		t.Errorf("a's lease stays: %v", live)
	}
}
