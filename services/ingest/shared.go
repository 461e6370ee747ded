package ingest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	"github.com/open-balena-builder/builder/services/ingest/journal"
)

// Builds in the journal: every builder sharing the database writes its
// builds' views and events there, so that any of them shows any build, its
// log, and takes a cancel for it; a builder whose lease expired has its
// builds settled by another.

// Abandoned is what the images and releases of a build say when the builder
// running it stopped (its lease expired) and another one settled it.
const Abandoned = "the builder running this build stopped"

const (
	// journalFlush is how often a running build's new events are written.
	journalFlush = 200 * time.Millisecond
	// journalLogBytes bounds the log text kept per build in the journal
	// (the API keeps each image's final log anyway).
	journalLogBytes = 2 << 20
	// followPoll is how often a watcher of another builder's build looks
	// for new events.
	followPoll = 250 * time.Millisecond
	// finalSeq numbers the end event a settling builder adds: after any.
	finalSeq = int64(1) << 62
)

// find returns a build this builder has, or the journal's view of it.
func (s *Server) find(ctx context.Context, id string) (*build, *ingestv1.Build, error) {
	if b, ok := s.builds.Get(id); ok {
		return b, b.view(), nil
	}
	if s.cfg.Journal == nil {
		return nil, nil, status.Errorf(codes.NotFound, "build %q not found", id)
	}
	jb, err := s.cfg.Journal.Get(ctx, id)
	if errors.Is(err, journal.ErrNotFound) {
		return nil, nil, status.Errorf(codes.NotFound, "build %q not found", id)
	}
	if err != nil {
		return nil, nil, status.Errorf(codes.Unavailable, "build %q: %v", id, err)
	}
	v, err := decodeView(jb)
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "build %q: %v", id, err)
	}
	return nil, v, nil
}

func decodeView(jb journal.Build) (*ingestv1.Build, error) {
	v := &ingestv1.Build{}
	if err := proto.Unmarshal(jb.View, v); err != nil {
		return nil, fmt.Errorf("journal view: %w", err)
	}
	return v, nil
}

// allViews returns this builder's builds and the journal's newest, newest
// first, each once (this builder's view wins: it is the freshest).
func (s *Server) allViews(ctx context.Context, limit int) ([]*ingestv1.Build, error) {
	byID := map[string]*ingestv1.Build{}
	for _, b := range s.builds.All() {
		byID[b.id] = b.view()
	}
	if s.cfg.Journal != nil {
		list, err := s.cfg.Journal.List(ctx, limit)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "builds: %v", err)
		}
		for _, jb := range list {
			if _, ok := byID[jb.ID]; ok {
				continue
			}
			if v, err := decodeView(jb); err == nil {
				byID[jb.ID] = v
			}
		}
	}
	out := make([]*ingestv1.Build, 0, len(byID))
	for _, v := range byID {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].GetCreatedAt().AsTime(), out[j].GetCreatedAt().AsTime()
		if !a.Equal(b) {
			return a.After(b)
		}
		return out[i].GetReleaseId() > out[j].GetReleaseId()
	})
	return out, nil
}

// followJournal sends a build's events from the journal and follows them
// until its end event.
func (s *Server) followJournal(ctx context.Context, id string, send func(*buildv1.Event) error) error {
	after := int64(0)
	idle := 0
	for {
		evs, err := s.cfg.Journal.Events(ctx, id, after, 500)
		if err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Errorf(codes.Unavailable, "build %q: %v", id, err)
		}
		for _, je := range evs {
			after = je.Seq
			e := &buildv1.Event{}
			if err := proto.Unmarshal(je.Data, e); err != nil {
				continue
			}
			if err := send(e); err != nil {
				return err
			}
			if e.GetFinished() != nil {
				return nil
			}
		}
		if len(evs) == 500 {
			continue
		}
		idle++
		if idle%20 == 0 {
			// A build that ended without an end event (a settler died
			// half way): its view says so.
			if jb, err := s.cfg.Journal.Get(ctx, id); err == nil && !jb.Finished.IsZero() {
				if v, err := decodeView(jb); err == nil {
					return send(&buildv1.Event{BuildId: id, Time: timestamppb.Now(), Kind: &buildv1.Event_Finished{
						Finished: &buildv1.BuildFinished{State: v.GetState(), Error: v.GetError()}}})
				}
			}
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-time.After(followPoll):
		}
	}
}

// journalRow is b as the journal keeps it.
func (s *Server) journalRow(b *build) (journal.Build, error) {
	v := b.view()
	data, err := proto.Marshal(v)
	if err != nil {
		return journal.Build{}, err
	}
	jb := journal.Build{ID: b.id, Owner: s.cfg.Instance, Fleet: v.GetFleet(), Created: b.created, View: data}
	if v.GetFinishedAt() != nil {
		jb.Finished = v.GetFinishedAt().AsTime()
	}
	return jb, nil
}

// startJournal writes b's view now and its events as they come, until its
// hub closes; the returned channel closes when all is written.
func (s *Server) startJournal(ctx context.Context, b *build) (<-chan struct{}, error) {
	done := make(chan struct{})
	if s.cfg.Journal == nil {
		close(done)
		return done, nil
	}
	row, err := s.journalRow(b)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Journal.Save(ctx, row); err != nil {
		return nil, err
	}
	w := &journalWriter{s: s, b: b}
	go func() {
		defer close(done)
		stop := make(chan struct{})
		flushed := make(chan struct{})
		go func() {
			defer close(flushed)
			t := time.NewTicker(journalFlush)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					w.flush(false)
				}
			}
		}()
		_ = b.hub.Watch(context.Background(), w.add)
		close(stop)
		<-flushed
		w.flush(true)
	}()
	return done, nil
}

// journalWriter batches one build's events into the journal.
type journalWriter struct {
	s *Server
	b *build

	mu      sync.Mutex
	pending []journal.Event
	seq     int64
	logSize int
	cut     bool
	changed bool // a job update or the end: the view changed
}

func (w *journalWriter) add(e *buildv1.Event) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l := e.GetLog(); l != nil {
		if w.logSize += len(l.GetText()); w.logSize > journalLogBytes {
			if w.cut {
				return nil
			}
			w.cut = true
			e = &buildv1.Event{BuildId: e.GetBuildId(), Service: e.GetService(), Time: e.GetTime(), Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{
				Level: buildv1.Level_LEVEL_WARN, Text: fmt.Sprintf("[log cut: more than %d MiB; the rest is in the builder that ran the build and, when it ends, in the release's images]", journalLogBytes>>20)}}}
		}
	} else {
		w.changed = true
	}
	data, err := proto.Marshal(e)
	if err != nil {
		return nil
	}
	w.seq++
	w.pending = append(w.pending, journal.Event{Seq: w.seq, Data: data})
	return nil
}

// flush writes the pending events and, when it changed (or at the end),
// the view. Failures are logged: the build goes on without its journal.
func (w *journalWriter) flush(final bool) {
	w.mu.Lock()
	evs, changed := w.pending, w.changed || final
	w.pending, w.changed = nil, false
	w.mu.Unlock()
	if len(evs) == 0 && !changed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if len(evs) > 0 {
		if err := w.s.cfg.Journal.Append(ctx, w.b.id, evs); err != nil {
			w.s.log.Warn("cannot write a build's log to the journal", "build", w.b.id, "error", err)
		}
	}
	if !changed {
		return
	}
	row, err := w.s.journalRow(w.b)
	if err == nil {
		err = w.s.cfg.Journal.Save(ctx, row)
	}
	if err != nil {
		w.s.log.Warn("cannot write a build's state to the journal", "build", w.b.id, "error", err)
	}
}

// Leases are the heartbeats of the builders sharing the database.
type Leases interface {
	Beat(ctx context.Context, instance string) error
	Expired(ctx context.Context, self string, lease time.Duration) ([]string, error)
	Forget(ctx context.Context, instance string) error
}

// Maintain, until ctx ends: renews this builder's lease and settles the
// builds of builders whose lease expired (every third of lease), takes the
// cancel requests other builders leave for this one's builds (every
// CancelPoll, when shared), and prunes the journal to KeepBuilds.
func (s *Server) Maintain(ctx context.Context, leases Leases, lease time.Duration) {
	poll := s.cfg.CancelPoll
	if poll <= 0 || !s.cfg.Shared {
		poll = lease / 3
	}
	every := max(int((lease/3)/poll), 1)
	t := time.NewTicker(poll)
	defer t.Stop()
	for i := 0; ; i++ {
		if s.cfg.Shared {
			s.takeCancelRequests(ctx)
		}
		if i%every == 0 {
			if err := leases.Beat(ctx, s.cfg.Instance); err != nil && ctx.Err() == nil {
				s.log.Error("cannot renew this builder's lease", "error", err)
			}
			if s.cfg.Shared {
				s.takeOver(ctx, leases, lease)
			}
			if s.cfg.Journal != nil {
				if _, err := s.cfg.Journal.Prune(ctx, s.cfg.KeepBuilds); err != nil && ctx.Err() == nil {
					s.log.Warn("cannot prune the journal", "error", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// takeCancelRequests cancels this builder's builds that were cancelled
// through another builder.
func (s *Server) takeCancelRequests(ctx context.Context) {
	reqs, err := s.cfg.Journal.CancelRequests(ctx, s.cfg.Instance)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot read cancel requests", "error", err)
		}
		return
	}
	for id, why := range reqs {
		if b, ok := s.builds.Get(id); ok && b.ctx.Err() == nil {
			s.log.Info("build cancelled through another builder", "build", id, "by", why)
			b.cancel(errCancelled(why))
		}
	}
}

// takeOver settles the builds of every builder whose lease expired: their
// images and releases failed (Abandoned), their journal views failed.
func (s *Server) takeOver(ctx context.Context, leases Leases, lease time.Duration) {
	dead, err := leases.Expired(ctx, s.cfg.Instance, lease)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot read the builders' leases", "error", err)
		}
		return
	}
	for _, d := range dead {
		why := Abandoned
		n, err := s.settleOwner(ctx, d, why)
		if err != nil {
			s.log.Error("cannot settle the builds of a stopped builder: trying again", "instance", d, "error", err)
			continue
		}
		if n > 0 {
			s.log.Warn("settled the builds of a builder whose lease expired", "instance", d, "builds", n, "lease", lease)
		}
		if err := leases.Forget(ctx, d); err != nil {
			s.log.Warn("cannot forget a stopped builder's lease", "instance", d, "error", err)
		}
	}
}

// settleOwner settles owner's builds in flight (another builder's, or this
// one's last run) and fails their journal views with why. It returns how
// many builds it settled.
func (s *Server) settleOwner(ctx context.Context, owner, why string) (int, error) {
	var errs []error
	settled := 0
	if s.cfg.InFlight != nil {
		records, err := s.cfg.InFlight.InFlight(ctx, owner)
		if err != nil {
			return 0, err
		}
		for _, r := range records {
			if owner != s.cfg.Instance {
				ok, err := s.cfg.InFlight.Claim(ctx, r.BuildID, owner, s.cfg.Instance)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if !ok {
					continue // another builder took it
				}
			}
			if err := s.settle(ctx, r, why); err != nil {
				errs = append(errs, err)
				continue
			}
			settled++
		}
	}
	if s.cfg.Journal != nil {
		if err := s.failViews(ctx, owner, why); err != nil {
			errs = append(errs, err)
		}
	}
	return settled, errors.Join(errs...)
}

// failViews marks owner's unfinished journal builds failed with why and
// ends their logs.
func (s *Server) failViews(ctx context.Context, owner, why string) error {
	list, err := s.cfg.Journal.Unfinished(ctx, owner)
	if err != nil {
		return err
	}
	var errs []error
	for _, jb := range list {
		if owner != s.cfg.Instance {
			ok, err := s.cfg.Journal.Claim(ctx, jb.ID, owner, s.cfg.Instance)
			if err != nil || !ok {
				errs = append(errs, err)
				continue
			}
		}
		v, err := decodeView(jb)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		now := time.Now()
		v.State, v.Error, v.FinishedAt = buildv1.BuildState_BUILD_STATE_FAILED, why, timestamppb.New(now)
		if jb.View, err = proto.Marshal(v); err != nil {
			errs = append(errs, err)
			continue
		}
		end, _ := proto.Marshal(&buildv1.Event{BuildId: jb.ID, Time: timestamppb.New(now), Kind: &buildv1.Event_Finished{
			Finished: &buildv1.BuildFinished{State: v.State, Error: why}}})
		note, _ := proto.Marshal(&buildv1.Event{BuildId: jb.ID, Time: timestamppb.New(now), Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{
			Level: buildv1.Level_LEVEL_ERROR, Text: "Build failed: " + why}}})
		if err := s.cfg.Journal.Append(ctx, jb.ID, []journal.Event{{Seq: finalSeq - 1, Data: note}, {Seq: finalSeq, Data: end}}); err != nil {
			errs = append(errs, err)
			continue
		}
		jb.Owner, jb.Finished = s.cfg.Instance, now
		if err := s.cfg.Journal.Save(ctx, jb); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
