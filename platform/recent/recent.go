// Package recent keeps records by id: every one still running, and the
// newest finished ones up to a bound (so that operators can still look at a
// build after it ended, without the map growing for ever).
package recent

import "sync"

// Set holds values by id. The zero value is not usable; call New.
type Set[T any] struct {
	mu       sync.Mutex
	items    map[string]T
	finished []string // oldest first
	keep     int
}

// New returns a set that keeps at most keep finished values.
func New[T any](keep int) *Set[T] {
	if keep <= 0 {
		keep = 1
	}
	return &Set[T]{items: map[string]T{}, keep: keep}
}

// Add stores v under id; it returns false (and stores nothing) if id is taken.
func (s *Set[T]) Add(id string, v T) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.items[id]; ok {
		return false
	}
	s.items[id] = v
	return true
}

// Get returns the value of id.
func (s *Set[T]) Get(id string) (T, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.items[id]
	return v, ok
}

// All returns every value, in no particular order.
func (s *Set[T]) All() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, 0, len(s.items))
	for _, v := range s.items {
		out = append(out, v)
	}
	return out
}

// Finish marks id finished; the oldest finished values beyond the bound
// are forgotten.
func (s *Set[T]) Finish(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finished = append(s.finished, id)
	for len(s.finished) > s.keep {
		delete(s.items, s.finished[0])
		s.finished = s.finished[1:]
	}
}
