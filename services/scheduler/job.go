package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	executorv1 "github.com/open-balena-builder/builder/proto/builder/executor/v1"
)

func now() *timestamppb.Timestamp { return timestamppb.Now() }

func jobEvent(j *buildv1.Job, u *buildv1.JobUpdate) *buildv1.Event {
	return &buildv1.Event{BuildId: j.GetBuildId(), Service: j.GetService(), Time: now(), Kind: &buildv1.Event_Job{Job: u}}
}

func logEvent(j *buildv1.Job, level buildv1.Level, text string) *buildv1.Event {
	return &buildv1.Event{BuildId: j.GetBuildId(), Service: j.GetService(), Time: now(),
		Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Text: text, Level: level}}}
}

// runJob places one job, runs it and reports its end. It always ends the
// job, whatever happens.
func (s *Server) runJob(b *build, j *buildv1.Job) {
	start := time.Now()
	failure, state := s.placeAndRun(b, j)
	s.metrics.ended(state, start)
	s.jobDone(b, j, failure)
}

// placeAndRun returns "" when the job succeeded, else why it did not, and
// the job's final state.
func (s *Server) placeAndRun(b *build, j *buildv1.Job) (string, buildv1.JobState) {
	key := j.GetFleet() + "/" + j.GetService()
	var p placement
	warned := false
	for {
		freed := s.freedChan()
		var ok bool
		var err error
		p, ok, err = s.pool.place(j.GetArch(), j.GetEmulated(), key)
		if err != nil {
			s.stopWaiting(warned)
			return s.endJob(b, j, buildv1.JobState_JOB_STATE_FAILED, "", err.Error())
		}
		if ok {
			s.stopWaiting(warned)
			break
		}
		if !warned {
			b.hub.Publish(logEvent(j, buildv1.Level_LEVEL_INFO, fmt.Sprintf("Waiting for a free %s build host...", j.GetArch())))
			s.metrics.waiting.Add(context.Background(), 1)
			warned = true
		}
		select {
		case <-b.ctx.Done():
			s.stopWaiting(warned)
			return s.endJob(b, j, stateFor(b.ctx), "", causeText(b.ctx))
		case <-freed:
		}
	}
	defer s.wake()

	b.hub.Publish(jobEvent(j, &buildv1.JobUpdate{State: buildv1.JobState_JOB_STATE_RUNNING, Host: p.host, Emulated: p.emulated}))
	result, failure, state := s.execute(b, j, p)
	s.pool.release(p.host, key, state == buildv1.JobState_JOB_STATE_SUCCEEDED)
	if state == buildv1.JobState_JOB_STATE_SUCCEEDED {
		b.hub.Publish(jobEvent(j, &buildv1.JobUpdate{State: state, Host: p.host, Emulated: p.emulated, Result: result}))
		return "", state
	}
	return s.endJob(b, j, state, p.host, failure)
}

// stopWaiting takes a job that waited out of the waiting count.
func (s *Server) stopWaiting(waited bool) {
	if waited {
		s.metrics.waiting.Add(context.Background(), -1)
	}
}

func (s *Server) endJob(b *build, j *buildv1.Job, state buildv1.JobState, hostName, failure string) (string, buildv1.JobState) {
	b.hub.Publish(jobEvent(j, &buildv1.JobUpdate{State: state, Host: hostName, Error: failure}))
	if failure == "" {
		failure = "failed"
	}
	return failure, state
}

// execute runs the job on its executor and relays its events.
func (s *Server) execute(b *build, j *buildv1.Job, p placement) (*buildv1.ImageResult, string, buildv1.JobState) {
	client, err := s.dial(p.executor)
	if err != nil {
		return nil, fmt.Sprintf("host %s: executor unreachable: %v", p.host, err), buildv1.JobState_JOB_STATE_FAILED
	}
	ticket, withdraw := s.tickets.issue(j, p.host)
	defer withdraw()
	stream, err := client.RunJob(b.ctx, &executorv1.RunJobRequest{Job: j, Host: p.host, Emulated: p.emulated, Ticket: ticket})
	if err != nil {
		return s.streamEnd(b, p, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return s.streamEnd(b, p, err)
		}
		e := resp.GetEvent()
		if u := e.GetJob(); u != nil {
			switch u.GetState() {
			case buildv1.JobState_JOB_STATE_SUCCEEDED:
				return u.GetResult(), "", u.GetState()
			case buildv1.JobState_JOB_STATE_FAILED, buildv1.JobState_JOB_STATE_CANCELLED:
				if b.ctx.Err() != nil {
					return nil, causeText(b.ctx), stateFor(b.ctx)
				}
				return nil, u.GetError(), u.GetState()
			}
			continue
		}
		b.hub.Publish(e)
	}
}

// streamEnd explains a RunJob stream that ended without a final state.
func (s *Server) streamEnd(b *build, p placement, err error) (*buildv1.ImageResult, string, buildv1.JobState) {
	if b.ctx.Err() != nil {
		return nil, causeText(b.ctx), stateFor(b.ctx)
	}
	if errors.Is(err, io.EOF) {
		return nil, fmt.Sprintf("host %s: executor ended the job without a result", p.host), buildv1.JobState_JOB_STATE_FAILED
	}
	return nil, fmt.Sprintf("host %s: %s", p.host, status.Convert(err).Message()), buildv1.JobState_JOB_STATE_FAILED
}

func stateFor(ctx context.Context) buildv1.JobState {
	if errors.Is(context.Cause(ctx), errCancelled) {
		return buildv1.JobState_JOB_STATE_CANCELLED
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return buildv1.JobState_JOB_STATE_FAILED
	}
	return buildv1.JobState_JOB_STATE_CANCELLED
}

func causeText(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil {
		return c.Error()
	}
	return "cancelled"
}
