package scheduler

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

// tickets are the capabilities of running jobs. A job gets a fresh random
// ticket when it is sent to its executor; ingest (context, secrets) and
// release (registry token) serve the job only to whoever shows it, and
// only while the job runs. An authenticated internal caller that is not
// the job's executor gets nothing of it.
type tickets struct {
	mu      sync.Mutex
	running map[string]ticket // job id →
}

type ticket struct {
	secret string
	job    *buildv1.Job
	host   string
}

func newTickets() *tickets { return &tickets{running: map[string]ticket{}} }

// issue returns a new ticket for j running on host, and the function that
// withdraws it when the job ends.
func (t *tickets) issue(j *buildv1.Job, host string) (string, func()) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	secret := hex.EncodeToString(b)
	t.mu.Lock()
	t.running[j.GetJobId()] = ticket{secret: secret, job: j, host: host}
	t.mu.Unlock()
	return secret, func() {
		t.mu.Lock()
		if cur, ok := t.running[j.GetJobId()]; ok && cur.secret == secret {
			delete(t.running, j.GetJobId())
		}
		t.mu.Unlock()
	}
}

func (t *tickets) check(jobID, secret string) (ticket, bool) {
	t.mu.Lock()
	cur, ok := t.running[jobID]
	t.mu.Unlock()
	if !ok || secret == "" || subtle.ConstantTimeCompare([]byte(cur.secret), []byte(secret)) != 1 {
		return ticket{}, false
	}
	return cur, true
}

// AuthorizeJob answers with a running job when its ticket is right.
func (s *Server) AuthorizeJob(_ context.Context, req *schedulerv1.AuthorizeJobRequest) (*schedulerv1.AuthorizeJobResponse, error) {
	t, ok := s.tickets.check(req.GetJobId(), req.GetTicket())
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "job %q is not running, or the ticket is not its own", req.GetJobId())
	}
	return &schedulerv1.AuthorizeJobResponse{Job: t.job, Host: t.host}, nil
}
