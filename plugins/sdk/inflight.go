package sdk

import (
	"context"
	"sync"
)

// inflight tracks the builds a plugin's server is running, by job id, so
// that a Cancel call from the host stops the build's ctx even when the
// plugin's own Cancel does not know the job (yet).
type inflight struct {
	mu     sync.Mutex
	builds map[string]*context.CancelFunc
}

// add registers cancel under jobID and returns the func that unregisters
// it. A second build with the same id is not tracked.
func (f *inflight) add(jobID string, cancel context.CancelFunc) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if jobID == "" || f.builds[jobID] != nil {
		return func() {}
	}
	if f.builds == nil {
		f.builds = make(map[string]*context.CancelFunc)
	}
	entry := &cancel
	f.builds[jobID] = entry
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.builds[jobID] == entry {
			delete(f.builds, jobID)
		}
	}
}

// cancel cancels jobID's build and reports whether one was running.
func (f *inflight) cancel(jobID string) bool {
	f.mu.Lock()
	entry := f.builds[jobID]
	f.mu.Unlock()
	if entry == nil {
		return false
	}
	(*entry)()
	return true
}
