// Package hub keeps the events of one build and lets any number of
// watchers replay them from the start and follow them to the end.
package hub

import (
	"context"
	"fmt"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

// maxEvents bounds what a hub keeps for replay, whatever their size; older
// events are dropped (watchers that join late see the tail). Image build
// logs are collected separately and are not affected.
const maxEvents = 50_000

// eventOverhead is what an event counts for besides its log text.
const eventOverhead = 64

// Limits bound what a hub keeps in memory. Zero fields take the defaults.
type Limits struct {
	// MaxBytes bounds the log text kept for replay (OBB_MAX_LOG_BYTES);
	// beyond it the oldest events go, and a late watcher is told so.
	MaxBytes int
	// MaxLineBytes bounds one log line (OBB_MAX_LOG_LINE_BYTES); a longer
	// one is cut, with a marker.
	MaxLineBytes int
}

// Defaults of Limits.
const (
	DefaultMaxBytes     = 8 << 20
	DefaultMaxLineBytes = 64 << 10
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = DefaultMaxLineBytes
	}
	return l
}

// Hub is an append-only event log with followers. The zero value is not
// usable; call New.
type Hub struct {
	lim Limits

	mu      sync.Mutex
	events  []*buildv1.Event
	bytes   int // of the events kept
	dropped int
	closed  bool
	changed chan struct{}
}

// New returns an empty, open hub with the default limits.
func New() *Hub { return NewWithLimits(Limits{}) }

// NewWithLimits returns an empty, open hub keeping at most lim.
func NewWithLimits(lim Limits) *Hub {
	return &Hub{lim: lim.withDefaults(), changed: make(chan struct{})}
}

func size(e *buildv1.Event) int { return eventOverhead + len(e.GetLog().GetText()) }

// Publish appends an event and wakes the watchers. A log line longer than
// the limit is cut (the caller's event is left as it is). Publishing to a
// closed hub is a no-op.
func (h *Hub) Publish(e *buildv1.Event) {
	if l := e.GetLog(); l != nil && len(l.GetText()) > h.lim.MaxLineBytes {
		e = proto.CloneOf(e)
		e.GetLog().Text = cut(l.GetText(), h.lim.MaxLineBytes)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.events = append(h.events, e)
	h.bytes += size(e)
	n := 0
	for n < len(h.events)-1 && (len(h.events)-n > maxEvents || h.bytes > h.lim.MaxBytes) {
		h.bytes -= size(h.events[n])
		n++
	}
	if n > 0 {
		h.events = append(h.events[:0:0], h.events[n:]...)
		h.dropped += n
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// cut shortens text to at most max bytes (at a character boundary) and
// says so.
func cut(text string, max int) string {
	end := max
	for end > 0 && !utf8.RuneStart(text[end]) {
		end--
	}
	return fmt.Sprintf("%s … [line cut: %d bytes, the limit is %d]", text[:end], len(text), max)
}

// droppedNotice is the first event a watcher sees when the start of the
// log is gone.
func (h *Hub) droppedNotice(n int) *buildv1.Event {
	return &buildv1.Event{Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Level: buildv1.Level_LEVEL_WARN,
		Text: fmt.Sprintf("[%d earlier log lines dropped: the builder keeps the last %s of a build's log]", n, kib(h.lim.MaxBytes))}}}
}

func kib(n int) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
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
		var notice *buildv1.Event
		if start < 0 {
			notice = h.droppedNotice(-start)
			start = 0
			next = h.dropped
		}
		batch := h.events[start:]
		next += len(batch)
		closed, changed := h.closed, h.changed
		h.mu.Unlock()

		if notice != nil {
			if err := fn(notice); err != nil {
				return err
			}
		}
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
