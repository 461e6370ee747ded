package ingest

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// slots bounds the pushes in progress, from the accepted token to the end
// of the build: in all and per user.
type slots struct {
	max, perUser int

	mu     sync.Mutex
	total  int
	byUser map[string]int
}

func newSlots(max, perUser int) *slots {
	return &slots{max: max, perUser: perUser, byUser: map[string]int{}}
}

// take reserves a slot for user, or says why there is none
// (ResourceExhausted: HTTP 429). free gives it back; call it once.
func (s *slots) take(user string) (free func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byUser[user] >= s.perUser {
		return nil, status.Errorf(codes.ResourceExhausted, "you have %d builds in progress, the most this builder runs for one user: wait for one to finish (OBB_MAX_BUILDS_PER_USER)", s.byUser[user])
	}
	if s.total >= s.max {
		return nil, status.Errorf(codes.ResourceExhausted, "the builder is busy: %d builds in progress, its limit (OBB_MAX_BUILDS); try again in a few minutes", s.total)
	}
	s.total++
	s.byUser[user]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.total--
			if s.byUser[user]--; s.byUser[user] == 0 {
				delete(s.byUser, user)
			}
		})
	}, nil
}
