package ingest

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-balena-builder/builder/platform/hub"
	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/ingest/project"
)

// build is one push from upload to release.
type build struct {
	id        string
	releaseID int64
	commit    string
	fleet     *releasev1.Fleet
	user      string
	draft     bool
	token     string // the user's token: never logged, never stored
	dir       string // extracted project
	plan      *project.Plan
	images    map[string]*releasev1.CreatedImage
	hub       *hub.Hub
	created   time.Time
	// journaled closes once the journal has the build's last event.
	journaled <-chan struct{}

	ctx    context.Context
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	state    buildv1.BuildState
	err      string
	finished time.Time
	services map[string]*serviceRun
}

// serviceRun is what ingest records of one service while it builds.
type serviceRun struct {
	log     logBuffer
	started time.Time
	ended   time.Time
	result  *buildv1.ImageResult
	host    string
	failure string
	state   buildv1.JobState
}

func (b *build) service(name string) *serviceRun {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.services[name]
	if !ok {
		s = &serviceRun{}
		b.services[name] = s
	}
	return s
}

// forgetSecrets drops what the build no longer needs and must not keep:
// the user's token, build secrets and registry credentials. The finished
// build stays watchable without them.
func (b *build) forgetSecrets() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.token = ""
	b.plan.RegistryConfig = ""
	for i := range b.plan.Services {
		b.plan.Services[i].Secrets = nil
	}
}

// userToken is the pushing user's token ("" once the build ended).
func (b *build) userToken() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.token
}

func (b *build) view() *ingestv1.Build {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := &ingestv1.Build{BuildId: b.id, ReleaseId: b.releaseID, Commit: b.commit, Fleet: b.fleet.GetSlug(), User: b.user,
		State: b.state, CreatedAt: timestamppb.New(b.created), Error: b.err}
	if !b.finished.IsZero() {
		v.FinishedAt = timestamppb.New(b.finished)
	}
	for _, s := range b.plan.Services {
		v.Services = append(v.Services, s.Name)
		j := &ingestv1.ServiceJob{Service: s.Name, State: buildv1.JobState_JOB_STATE_QUEUED}
		if run, ok := b.services[s.Name]; ok {
			j.Host = run.host
			switch {
			case run.state != buildv1.JobState_JOB_STATE_UNSPECIFIED:
				j.State = run.state
			case !run.started.IsZero():
				j.State = buildv1.JobState_JOB_STATE_RUNNING
			}
		}
		v.Jobs = append(v.Jobs, j)
	}
	return v
}

// logBuffer keeps a service's plain-text build log, bounded: beyond max
// bytes the oldest lines are dropped (the API keeps the tail anyway).
type logBuffer struct {
	mu    sync.Mutex
	lines []string
	size  int
}

const maxServiceLog = 1 << 20

var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

func (l *logBuffer) add(line string) {
	line = strings.TrimRight(ansi.ReplaceAllString(line, ""), "\r\n")
	if strings.TrimSpace(line) == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	l.size += len(line) + 1
	for l.size > maxServiceLog && len(l.lines) > 1 {
		l.size -= len(l.lines[0]) + 1
		l.lines = l.lines[1:]
	}
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
