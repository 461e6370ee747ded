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
	end := s.placeAndRun(b, j)
	s.metrics.ended(end.state, start)
	s.jobDone(b, j, end)
}

// jobEnd is how a job ended: its final state, its image when it succeeded,
// why not otherwise.
type jobEnd struct {
	state   buildv1.JobState
	result  *buildv1.ImageResult
	failure string
}

func (e jobEnd) succeeded() bool { return e.state == buildv1.JobState_JOB_STATE_SUCCEEDED }

func failed(state buildv1.JobState, why string) jobEnd {
	if why == "" {
		why = "failed"
	}
	return jobEnd{state: state, failure: why}
}

// placeAndRun places the job, runs it and says how it ended.
func (s *Server) placeAndRun(b *build, j *buildv1.Job) jobEnd {
	key := j.GetFleet() + "/" + j.GetService()
	var p placement
	warned := false
	var poll <-chan time.Time
	if s.cfg.Poll > 0 {
		t := time.NewTicker(s.cfg.Poll)
		defer t.Stop()
		poll = t.C
	}
	last := s.lastHost(b.ctx, j, key) // once: not on every retry of a waiting job
	for {
		freed := s.freedChan()
		var ok bool
		var err error
		p, ok, err = s.place(b.ctx, j, key, last)
		if err != nil {
			s.stopWaiting(warned)
			return s.endJob(b, j, "", failed(buildv1.JobState_JOB_STATE_FAILED, err.Error()))
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
			return s.endJob(b, j, "", failed(stateFor(b.ctx), causeText(b.ctx)))
		case <-freed:
		case <-poll:
		}
	}
	defer s.giveBack(j, p.host)

	b.hub.Publish(jobEvent(j, &buildv1.JobUpdate{State: buildv1.JobState_JOB_STATE_RUNNING, Host: p.host, Emulated: p.emulated}))
	b.hub.Publish(logEvent(j, buildv1.Level_LEVEL_INFO, p.why))
	end := s.execute(b, j, p)
	if !end.succeeded() {
		return s.endJob(b, j, p.host, end)
	}
	if err := s.ledger.Remember(context.WithoutCancel(b.ctx), key, p.host); err != nil {
		s.log.Warn("cannot record cache affinity", "job", j.GetJobId(), "error", err)
	}
	b.hub.Publish(jobEvent(j, &buildv1.JobUpdate{State: end.state, Host: p.host, Emulated: p.emulated, Result: end.result}))
	return end
}

// lastHost is the host that built key last, for affinity ("" in spread
// mode, or when the ledger cannot say).
func (s *Server) lastHost(ctx context.Context, j *buildv1.Job, key string) string {
	if s.cfg.Placement != PlaceAffinity {
		return ""
	}
	last, err := s.ledger.Last(ctx, key)
	if err != nil {
		s.log.Warn("cannot read cache affinity", "job", j.GetJobId(), "error", err)
	}
	return last
}

// place takes a slot for j on the best host that has one, last being the
// host that built its service last. ok=false: the
// suitable hosts are all busy (the job waits).
func (s *Server) place(ctx context.Context, j *buildv1.Job, key, last string) (placement, bool, error) {
	o, err := s.pool.candidates(j.GetArch(), j.GetEmulated(), j.GetNeedsSecrets(), s.cfg.Placement, last)
	if err != nil {
		return placement{}, false, err
	}
	host, err := s.ledger.Take(ctx, j.GetJobId(), o.names())
	if err != nil {
		s.log.Warn("cannot take a host slot: retrying", "job", j.GetJobId(), "error", err)
		return placement{}, false, nil
	}
	if host == "" {
		return placement{}, false, nil
	}
	s.pool.took(host)
	for _, c := range o.cands {
		if c.h.info.GetName() == host {
			return placement{host: host, executor: c.h.info.GetExecutorAddress(), emulated: c.emulated,
				why: s.why(j, key, host, o)}, true, nil
		}
	}
	return placement{}, false, fmt.Errorf("the ledger placed job %s on %s, which is not a candidate", j.GetJobId(), host)
}

// why says, for the build log, why a job went to host.
func (s *Server) why(j *buildv1.Job, key, host string, o offer) string {
	switch {
	case s.cfg.Placement == PlaceSpread:
		return fmt.Sprintf("Building on %s: spread placement (OBB_PLACEMENT=spread)", host)
	case host == o.last:
		return fmt.Sprintf("Building on %s: it built %s last, its cache is warm", host, key)
	case len(o.cands) == 1:
		return fmt.Sprintf("Building on %s: the only host that builds %s", host, j.GetArch())
	}
	n := max(o.free, 1)
	plural := "s"
	if n == 1 {
		plural = ""
	}
	switch {
	case o.last != "" && o.lastCand:
		return fmt.Sprintf("Building on %s: least loaded of %d free host%s (%s built %s last but is busy)", host, n, plural, o.last, key)
	case o.last != "":
		return fmt.Sprintf("Building on %s: least loaded of %d free host%s (%s built %s last but is not available)", host, n, plural, o.last, key)
	}
	return fmt.Sprintf("Building on %s: least loaded of %d free host%s", host, n, plural)
}

// giveBack returns a job's slot and wakes the jobs waiting for one.
func (s *Server) giveBack(j *buildv1.Job, host string) {
	s.pool.gave(host)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.ledger.Give(ctx, j.GetJobId()); err != nil {
		// Reclaimed when this builder restarts; meanwhile one slot is lost.
		s.log.Error("cannot give a host slot back", "job", j.GetJobId(), "host", host, "error", err)
	}
	s.wake()
}

// stopWaiting takes a job that waited out of the waiting count.
func (s *Server) stopWaiting(waited bool) {
	if waited {
		s.metrics.waiting.Add(context.Background(), -1)
	}
}

// endJob publishes a job's end that is not a success.
func (s *Server) endJob(b *build, j *buildv1.Job, hostName string, end jobEnd) jobEnd {
	b.hub.Publish(jobEvent(j, &buildv1.JobUpdate{State: end.state, Host: hostName, Error: end.failure}))
	return end
}

// execute runs the job on its executor and relays its events.
func (s *Server) execute(b *build, j *buildv1.Job, p placement) jobEnd {
	client, err := s.dial(p.executor)
	if err != nil {
		return failed(buildv1.JobState_JOB_STATE_FAILED, fmt.Sprintf("host %s: executor unreachable: %v", p.host, err))
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
				return jobEnd{state: u.GetState(), result: u.GetResult()}
			case buildv1.JobState_JOB_STATE_FAILED, buildv1.JobState_JOB_STATE_CANCELLED:
				if b.ctx.Err() != nil {
					return failed(stateFor(b.ctx), causeText(b.ctx))
				}
				return failed(u.GetState(), u.GetError())
			}
			continue
		}
		b.hub.Publish(e)
	}
}

// streamEnd explains a RunJob stream that ended without a final state.
func (s *Server) streamEnd(b *build, p placement, err error) jobEnd {
	if b.ctx.Err() != nil {
		return failed(stateFor(b.ctx), causeText(b.ctx))
	}
	if errors.Is(err, io.EOF) {
		return failed(buildv1.JobState_JOB_STATE_FAILED, fmt.Sprintf("host %s: executor ended the job without a result", p.host))
	}
	return failed(buildv1.JobState_JOB_STATE_FAILED, fmt.Sprintf("host %s: %s", p.host, status.Convert(err).Message()))
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

// Place is the placement step alone: it takes a slot for j as a build
// would (affinity, ledger) and returns the host, or ok=false when every
// suitable host is busy. Done gives the slot back. For benchmarks and
// tools; builds go through SubmitBuild.
func (s *Server) Place(ctx context.Context, j *buildv1.Job) (host, why string, ok bool, err error) {
	key := j.GetFleet() + "/" + j.GetService()
	p, ok, err := s.place(ctx, j, key, s.lastHost(ctx, j, key))
	return p.host, p.why, ok, err
}

// Done gives back the slot Place took for j on host; succeeded records the
// host for cache affinity.
func (s *Server) Done(j *buildv1.Job, host string, succeeded bool) {
	if succeeded {
		_ = s.ledger.Remember(context.Background(), j.GetFleet()+"/"+j.GetService(), host)
	}
	s.giveBack(j, host)
}
