package ingest

import (
	"context"
	"io"
	"time"

	"google.golang.org/grpc/status"

	"github.com/open-balena-builder/builder/platform/hostrules"
	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

// apiTimeout bounds each call that records an outcome, so that a build
// that was cancelled still gets its images and release closed.
const apiTimeout = 2 * time.Minute

// run drives a build from submission to its recorded outcome. Whatever
// happens, every image and the release end success, failed or cancelled.
func (s *Server) run(b *build, spec *ingestv1.BuildSpec) {
	start := time.Now()
	done := make(chan struct{})
	defer func() {
		close(done)
		b.cancel(nil)
		b.forgetSecrets()
		if err := removeAll(b.dir); err != nil {
			s.log.Warn("cannot remove a build's upload", "build", b.id, "error", err)
		}
		s.forgetInFlight(b.id)
		s.builds.Finish(b.id)
	}()
	b.info("Starting build for %s, user %s", b.fleet.GetAppName(), b.user)
	for _, w := range b.plan.Warnings {
		b.say(buildv1.Level_LEVEL_WARN, "%s", w)
	}

	final, why := s.schedule(b, spec, done)
	s.closeImages(b, final, why)
	if final == buildv1.BuildState_BUILD_STATE_SUCCEEDED {
		s.deltas(b)
	}
	final = s.closeRelease(b, final)
	s.summarize(b, final, why, time.Since(start))

	b.mu.Lock()
	b.state, b.finished = final, time.Now()
	if final != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
		b.err = why
	}
	b.mu.Unlock()
	b.hub.Publish(&buildv1.Event{BuildId: b.id, Kind: &buildv1.Event_Finished{Finished: &buildv1.BuildFinished{State: final, Error: why}}})
	b.hub.Close()
	if b.journaled != nil {
		select {
		case <-b.journaled:
		case <-time.After(time.Minute):
			s.log.Warn("the journal is slow: a build's last events may be missing there", "build", b.id)
		}
	}
	s.metrics.ended(final, time.Since(start))
	s.log.Info("build finished", "build", b.id, "state", final.String(), "duration", time.Since(start).Round(time.Millisecond))
}

// schedule submits the jobs and relays the scheduler's events until the
// build ends. It returns the build's state and, unless it succeeded, why.
func (s *Server) schedule(b *build, spec *ingestv1.BuildSpec, done <-chan struct{}) (buildv1.BuildState, string) {
	platform, _ := hostrules.Platform(b.fleet.GetArch())
	req := &schedulerv1.SubmitBuildRequest{BuildId: b.id}
	for _, svc := range b.plan.Services {
		req.Jobs = append(req.Jobs, &buildv1.Job{
			JobId: b.id + "/" + svc.Name, BuildId: b.id, Service: svc.Name, Fleet: b.fleet.GetSlug(),
			Arch: b.fleet.GetArch(), Platform: platform, Emulated: spec.GetEmulated(), Nocache: spec.GetNocache(),
			Dockerfile: svc.Dockerfile, ImageLocation: b.images[svc.Name].GetLocation(), ContextAddress: s.cfg.ContextAddress,
			BuildArgs: svc.BuildArgs, Labels: svc.BuildLabels, PullImage: svc.PullImage, Target: svc.Target, NeedsSecrets: len(svc.Secrets) > 0,
		})
	}
	// The watch must outlive a cancel: it is how the cancelled jobs' ends arrive.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	if _, err := s.scheduler.SubmitBuild(watchCtx, req); err != nil {
		return buildv1.BuildState_BUILD_STATE_FAILED, "cannot queue the build: " + status.Convert(err).Message()
	}
	go s.forwardCancel(b, done)
	if s.cfg.StatusPoll > 0 {
		go s.pollReleaseStatus(b, done)
	}
	stream, err := s.scheduler.WatchBuild(watchCtx, &schedulerv1.WatchBuildRequest{BuildId: b.id})
	if err != nil {
		return buildv1.BuildState_BUILD_STATE_FAILED, "lost the scheduler: " + status.Convert(err).Message()
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return buildv1.BuildState_BUILD_STATE_FAILED, "lost the scheduler: " + status.Convert(err).Message()
		}
		e := resp.GetEvent()
		if fin := e.GetFinished(); fin != nil {
			if cause := context.Cause(b.ctx); cause != nil && fin.GetState() == buildv1.BuildState_BUILD_STATE_CANCELLED {
				return fin.GetState(), cause.Error()
			}
			return fin.GetState(), fin.GetError()
		}
		s.record(b, e)
		b.hub.Publish(e)
	}
}

// record keeps what a job event tells about its service.
func (s *Server) record(b *build, e *buildv1.Event) {
	if e.GetService() == "" {
		return
	}
	run := b.service(e.GetService())
	if l := e.GetLog(); l != nil && !l.GetReplace() {
		run.log.add(l.GetText())
		return
	}
	u := e.GetJob()
	if u == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch u.GetState() {
	case buildv1.JobState_JOB_STATE_RUNNING:
		run.started, run.host = time.Now(), u.GetHost()
	case buildv1.JobState_JOB_STATE_SUCCEEDED, buildv1.JobState_JOB_STATE_FAILED, buildv1.JobState_JOB_STATE_CANCELLED:
		run.state, run.ended, run.result, run.failure = u.GetState(), time.Now(), u.GetResult(), u.GetError()
	}
}

// forwardCancel turns a cancelled build context into a scheduler cancel.
func (s *Server) forwardCancel(b *build, done <-chan struct{}) {
	select {
	case <-done:
	case <-b.ctx.Done():
		select {
		case <-done:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		if _, err := s.scheduler.CancelBuild(ctx, &schedulerv1.CancelBuildRequest{BuildId: b.id, Reason: context.Cause(b.ctx).Error()}); err != nil {
			s.log.Warn("cannot cancel a build's jobs", "build", b.id, "error", err)
		}
	}
}

// pollReleaseStatus cancels the build when its release was cancelled
// through the API (balena-cli's Ctrl-C PATCHes the release before it
// closes the connection).
func (s *Server) pollReleaseStatus(b *build, done <-chan struct{}) {
	t := time.NewTicker(s.cfg.StatusPoll)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StatusPoll)
		st, err := s.release.GetReleaseStatus(ctx, &releasev1.GetReleaseStatusRequest{UserToken: b.userToken(), ReleaseId: b.releaseID})
		cancel()
		if err == nil && st.GetStatus() == "cancelled" {
			b.cancel(errCancelled("the release was cancelled through the API"))
			return
		}
	}
}

// closeImages records every image's outcome exactly once.
func (s *Server) closeImages(b *build, final buildv1.BuildState, why string) {
	for _, svc := range b.plan.Services {
		img := b.images[svc.Name]
		run := b.service(svc.Name)
		b.mu.Lock()
		state, result, failure := run.state, run.result, run.failure
		b.mu.Unlock()
		req := &releasev1.FinishImageRequest{UserToken: b.userToken(), ImageId: img.GetImageId(), Dockerfile: string(svc.Content),
			ProjectType: svc.ProjectType, BuildLog: run.log.String()}
		switch {
		case state == buildv1.JobState_JOB_STATE_SUCCEEDED && final != buildv1.BuildState_BUILD_STATE_CANCELLED:
			req.Status, req.ContentHash, req.ImageSize = releasev1.Status_STATUS_SUCCESS, result.GetDigest(), result.GetSize()
		case state == buildv1.JobState_JOB_STATE_FAILED:
			req.Status, req.ErrorMessage = releasev1.Status_STATUS_FAILED, failure
		case final == buildv1.BuildState_BUILD_STATE_CANCELLED || state == buildv1.JobState_JOB_STATE_CANCELLED:
			req.Status, req.ErrorMessage = releasev1.Status_STATUS_CANCELLED, firstNonEmpty(why, failure, "cancelled")
		default:
			req.Status, req.ErrorMessage = releasev1.Status_STATUS_FAILED, firstNonEmpty(failure, why, "the build ended before this service was built")
		}
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		_, err := s.release.FinishImage(ctx, req)
		cancel()
		if err != nil {
			s.log.Error("cannot record an image's outcome", "build", b.id, "service", svc.Name, "error", status.Convert(err).Message())
		}
	}
}

// deltas has the release service make the deltas from the fleet's target
// release to this one, before this one becomes the target, relaying its
// progress. A delta that fails is a warning: the release goes on.
func (s *Server) deltas(b *build) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout+time.Hour)
	defer cancel()
	stream, err := s.release.CreateDeltas(ctx, &releasev1.CreateDeltasRequest{UserToken: b.userToken(), FleetId: b.fleet.GetId(), ReleaseId: b.releaseID})
	if err != nil {
		b.say(buildv1.Level_LEVEL_WARN, "No deltas: %s", status.Convert(err).Message())
		return
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return
		}
		if err != nil {
			b.say(buildv1.Level_LEVEL_WARN, "No deltas: %s", status.Convert(err).Message())
			return
		}
		level := buildv1.Level_LEVEL_DELTA
		if resp.GetWarning() {
			level = buildv1.Level_LEVEL_WARN
		}
		b.say(level, "%s", resp.GetLine())
	}
}

// closeRelease records the release's outcome; a cancel recorded through the
// API wins over anything else.
func (s *Server) closeRelease(b *build, final buildv1.BuildState) buildv1.BuildState {
	st := map[buildv1.BuildState]releasev1.Status{
		buildv1.BuildState_BUILD_STATE_SUCCEEDED: releasev1.Status_STATUS_SUCCESS,
		buildv1.BuildState_BUILD_STATE_CANCELLED: releasev1.Status_STATUS_CANCELLED,
	}[final]
	if st == releasev1.Status_STATUS_UNSPECIFIED {
		st = releasev1.Status_STATUS_FAILED
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	resp, err := s.release.FinishRelease(ctx, &releasev1.FinishReleaseRequest{UserToken: b.userToken(), ReleaseId: b.releaseID, Status: st})
	if err != nil {
		s.log.Error("cannot record the release's outcome", "build", b.id, "error", status.Convert(err).Message())
		b.say(buildv1.Level_LEVEL_ERROR, "Could not record the release's outcome: %s", status.Convert(err).Message())
		return buildv1.BuildState_BUILD_STATE_FAILED
	}
	if resp.GetStatus() == releasev1.Status_STATUS_CANCELLED {
		return buildv1.BuildState_BUILD_STATE_CANCELLED
	}
	return final
}

// abandon closes a release whose build could not even start.
func (s *Server) abandon(b *build, why string) {
	for _, img := range b.images {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		_, _ = s.release.FinishImage(ctx, &releasev1.FinishImageRequest{UserToken: b.userToken(), ImageId: img.GetImageId(),
			Status: releasev1.Status_STATUS_FAILED, ErrorMessage: why})
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	_, _ = s.release.FinishRelease(ctx, &releasev1.FinishReleaseRequest{UserToken: b.userToken(), ReleaseId: b.releaseID, Status: releasev1.Status_STATUS_FAILED})
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}
