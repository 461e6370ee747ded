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
// it; ok is false when a build of jobID runs already. A build without a job
// id is not tracked.
func (f *inflight) add(jobID string, cancel context.CancelFunc) (remove func(), ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if jobID == "" {
		return func() {}, true
	}
	if f.builds[jobID] != nil {
		return nil, false
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
	}, true
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
