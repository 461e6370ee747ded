// Package hub keeps the events of one build and lets any number of
// watchers replay them from the start and follow them to the end.
package hub

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

// maxEvents bounds what a hub keeps for replay, whatever their size; older
// log lines are dropped (watchers that join late see the tail). Image build
// logs are collected separately and are not affected.
const maxEvents = 50_000

// eventOverhead is what an event counts for besides its log text.
const eventOverhead = 64

// Limits bound what a hub keeps in memory. Zero fields take the defaults.
type Limits struct {
	// MaxBytes bounds the log text kept for replay (OBB_MAX_LOG_BYTES,
	// default 8 MiB; each event counts 64 bytes more); beyond it the
	// oldest log lines go (job updates stay), and a watcher that had not
	// seen them is told so first.
	MaxBytes int
	// MaxLineBytes bounds one log line's text (OBB_MAX_LOG_LINE_BYTES,
	// default 64 KiB); a longer one is cut at a UTF-8 boundary, with the
	// marker " … [line cut: N bytes, the limit is M]".
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
//
// Beyond its limits a hub drops the oldest log lines; job updates and the
// end of the build (few and small) are kept, so a late watcher still sees
// every state change. Dropped events stay as holes (nil) until they are
// half of the slice, then the slice is compacted: Publish is amortized O(1).
type Hub struct {
	lim Limits

	mu      sync.Mutex
	events  []entry // in order of seq; e == nil: dropped
	seq     int     // events published so far: the seq of the next one
	kept    int     // events not dropped
	holes   int     // dropped events still in the slice
	bytes   int     // of the events kept
	dropAt  int     // no log line to drop before this index
	closed  bool
	changed chan struct{}
}

type entry struct {
	seq int
	e   *buildv1.Event
}

// New returns an empty, open hub with the default limits.
func New() *Hub { return NewWithLimits(Limits{}) }

// NewWithLimits returns an empty, open hub keeping at most lim (zero fields:
// the defaults).
func NewWithLimits(lim Limits) *Hub {
	return &Hub{lim: lim.withDefaults(), changed: make(chan struct{})}
}

func size(e *buildv1.Event) int { return eventOverhead + len(e.GetLog().GetText()) }

// Publish appends an event and wakes the watchers. A log line longer than
// MaxLineBytes is cut, on a copy (the caller's event is left as it is).
// Beyond MaxBytes the oldest log lines are dropped, never the newest event.
// Publishing to a closed hub is a no-op.
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
	h.events = append(h.events, entry{seq: h.seq, e: e})
	h.seq++
	h.kept++
	h.bytes += size(e)
	for h.kept > 1 && (h.bytes > h.lim.MaxBytes || h.kept > maxEvents) {
		if !h.dropOldestLog() && !(h.kept > maxEvents && h.dropOldest()) {
			break // only job updates left besides the newest event
		}
	}
	if h.holes > len(h.events)/2 && h.holes >= 64 {
		h.compact()
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// dropOldestLog drops the oldest log line but the newest event.
func (h *Hub) dropOldestLog() bool {
	for i := h.dropAt; i < len(h.events)-1; i++ {
		if e := h.events[i].e; e != nil && e.GetLog() != nil {
			h.drop(i)
			h.dropAt = i + 1
			return true
		}
	}
	h.dropAt = max(len(h.events)-1, 0)
	return false
}

// dropOldest drops the oldest event of any kind but the newest: only when
// there are more than maxEvents job updates (which a build does not send).
func (h *Hub) dropOldest() bool {
	for i := 0; i < len(h.events)-1; i++ {
		if h.events[i].e != nil {
			h.drop(i)
			return true
		}
	}
	return false
}

func (h *Hub) drop(i int) {
	h.bytes -= size(h.events[i].e)
	h.events[i].e = nil
	h.kept--
	h.holes++
}

// compact removes the holes, into a new slice: watchers copy what they
// deliver under the lock, but a fresh array keeps them apart anyway.
func (h *Hub) compact() {
	events := make([]entry, 0, h.kept+h.kept/4)
	dropAt := 0
	for i, en := range h.events {
		if i == h.dropAt {
			dropAt = len(events)
		}
		if en.e != nil {
			events = append(events, en)
		}
	}
	if h.dropAt >= len(h.events) {
		dropAt = len(events)
	}
	h.events, h.dropAt, h.holes = events, dropAt, 0
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
		Text: fmt.Sprintf("[%d earlier log lines dropped: the builder keeps the last %s of a build's log]", n, sizeText(h.lim.MaxBytes))}}}
}

// sizeText formats a limit for a message: "8 MiB", "64 KiB", "10.4 KiB",
// "100 bytes".
func sizeText(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(math.Round(float64(n)/(1<<20)*10)/10, 'f', -1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(math.Round(float64(n)/(1<<10)*10)/10, 'f', -1, 64) + " KiB"
	}
	return strconv.Itoa(n) + " bytes"
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
// fails (returns its error). When events it has not seen were dropped, fn
// first gets a LEVEL_WARN log line saying how many.
func (h *Hub) Watch(ctx context.Context, fn func(*buildv1.Event) error) error {
	next := 0 // seq of the next event to deliver
	var batch []*buildv1.Event
	for {
		h.mu.Lock()
		i := sort.Search(len(h.events), func(i int) bool { return h.events[i].seq >= next })
		batch = batch[:0]
		for _, en := range h.events[i:] {
			if en.e != nil {
				batch = append(batch, en.e)
			}
		}
		missed := h.seq - next - len(batch)
		next = h.seq
		closed, changed := h.closed, h.changed
		var notice *buildv1.Event
		if missed > 0 {
			notice = h.droppedNotice(missed)
		}
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
			clear(batch) // hold no dropped event
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
