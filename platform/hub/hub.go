// Package hub keeps the events of one build and lets any number of
// watchers replay them from the start and follow them to the end.
package hub

import (
	"context"
	"sync"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

// maxEvents bounds what a hub keeps for replay; older events are dropped
// (watchers that join late see the tail). Image build logs are collected
// separately and are not affected.
const maxEvents = 50_000

// Hub is an append-only event log with followers. The zero value is not
// usable; call New.
type Hub struct {
	mu      sync.Mutex
	events  []*buildv1.Event
	dropped int
	closed  bool
	changed chan struct{}
}

// New returns an empty, open hub.
func New() *Hub { return &Hub{changed: make(chan struct{})} }

// Publish appends an event and wakes the watchers. Publishing to a closed
// hub is a no-op.
func (h *Hub) Publish(e *buildv1.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.events = append(h.events, e)
	if len(h.events) > maxEvents {
		n := len(h.events) - maxEvents
		h.events = append(h.events[:0:0], h.events[n:]...)
		h.dropped += n
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// Close marks the end of the log; watchers return after the last event.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	close(h.changed)
}

// Closed reports whether the hub was closed.
func (h *Hub) Closed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// Watch calls fn for every event from the start, then for each new one,
// until the hub closes (returns nil), ctx ends (returns ctx.Err()) or fn
// fails (returns its error).
func (h *Hub) Watch(ctx context.Context, fn func(*buildv1.Event) error) error {
	next := 0 // absolute index of the next event to deliver
	for {
		h.mu.Lock()
		start := next - h.dropped
		if start < 0 {
			start = 0
			next = h.dropped
		}
		batch := h.events[start:]
		next += len(batch)
		closed, changed := h.closed, h.changed
		h.mu.Unlock()

		for _, e := range batch {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(batch) > 0 {
			continue
		}
		if closed {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
