package hub

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

func replay(t *testing.T, h *Hub) []string {
	t.Helper()
	h.Close()
	var out []string
	if err := h.Watch(context.Background(), func(e *buildv1.Event) error {
		out = append(out, e.GetLog().GetText())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLongLinesAreCut(t *testing.T) {
	tests := []struct {
		name, line string
		max        int
		want       string
	}{
		{"short line as it is", "hello", 10, "hello"},
		{"at the limit as it is", "0123456789", 10, "0123456789"},
		{"longer: cut with a marker", "0123456789abc", 10, "0123456789 … [line cut: 13 bytes, the limit is 10]"},
		{"cut at a character boundary", "aaaaaaaaa€€", 10, "aaaaaaaaa … [line cut: 15 bytes, the limit is 10]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewWithLimits(Limits{MaxLineBytes: tt.max})
			e := logEvent(tt.line)
			h.Publish(e)
			got := replay(t, h)
			if len(got) != 1 || got[0] != tt.want || !utf8.ValidString(got[0]) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if e.GetLog().GetText() != tt.line {
				t.Error("the publisher's event was changed")
			}
		})
	}
}

func TestOldestEventsGoBeyondTheByteLimit(t *testing.T) {
	line := strings.Repeat("x", 1000)
	tests := []struct {
		name      string
		maxBytes  int
		lines     int
		wantKept  int
		wantFirst string
	}{
		{"everything fits", 1 << 20, 10, 10, line},
		{"the oldest go", 10 * (1000 + eventOverhead), 25, 10, "[15 earlier log lines dropped: the builder keeps the last 10.4 KiB of a build's log]"},
		{"one huge line is kept alone", 100, 3, 1, "[2 earlier log lines dropped: the builder keeps the last 100 bytes of a build's log]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewWithLimits(Limits{MaxBytes: tt.maxBytes})
			for range tt.lines {
				h.Publish(logEvent(line))
			}
			got := replay(t, h)
			kept := len(got)
			if got[0] != line {
				kept-- // the notice
			}
			if kept != tt.wantKept || got[0] != tt.wantFirst {
				t.Errorf("kept %d, first %.100q; want %d, %q", kept, got[0], tt.wantKept, tt.wantFirst)
			}
			if h.bytes > max(tt.maxBytes, 1000+eventOverhead) {
				t.Errorf("%d bytes kept, over the limit %d", h.bytes, tt.maxBytes)
			}
		})
	}
}

func TestDefaultLimitsNotice(t *testing.T) {
	h := New()
	line := strings.Repeat("x", 64<<10)
	for range 200 { // 12.5 MiB
		h.Publish(logEvent(line))
	}
	got := replay(t, h)
	// Each line counts 64 KiB + 64 bytes: 127 fit in 8 MiB.
	want := "[73 earlier log lines dropped: the builder keeps the last 8 MiB of a build's log]"
	if got[0] != want || len(got) != 1+127 {
		t.Errorf("first %.100q of %d, want %q and 127 lines", got[0], len(got), want)
	}
	if h.lim.MaxLineBytes != 64<<10 || h.lim.MaxBytes != 8<<20 {
		t.Errorf("defaults %+v", h.lim)
	}
	first := replay(t, h)[0]
	if e := h.droppedNotice(1); e.GetLog().GetLevel() != buildv1.Level_LEVEL_WARN || first != want {
		t.Errorf("the notice is %v, %q", e.GetLog().GetLevel(), first)
	}
}

func jobEvent(s buildv1.JobState) *buildv1.Event {
	return &buildv1.Event{Service: "main", Kind: &buildv1.Event_Job{Job: &buildv1.JobUpdate{State: s}}}
}

// describe renders events as "log:<text>", "job:<state>", "finished".
func describe(t *testing.T, h *Hub) []string {
	t.Helper()
	h.Close()
	var out []string
	if err := h.Watch(context.Background(), func(e *buildv1.Event) error {
		switch {
		case e.GetLog() != nil:
			out = append(out, "log:"+e.GetLog().GetText())
		case e.GetJob() != nil:
			out = append(out, "job:"+e.GetJob().GetState().String())
		case e.GetFinished() != nil:
			out = append(out, "finished")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestJobUpdatesOutliveLogLines(t *testing.T) {
	line := func(i int) string { return fmt.Sprintf("%04d%s", i, strings.Repeat("x", 96)) } // 100 bytes
	per := 100 + eventOverhead
	tests := []struct {
		name     string
		maxBytes int
		publish  func(h *Hub)
		want     []string
	}{
		// The 4 other events count 64 bytes each: room for 3 lines.
		{"states before dropped lines stay, in order", 3*per + 4*eventOverhead, func(h *Hub) {
			h.Publish(jobEvent(buildv1.JobState_JOB_STATE_QUEUED))
			for i := range 3 {
				h.Publish(logEvent(line(i)))
			}
			h.Publish(jobEvent(buildv1.JobState_JOB_STATE_RUNNING))
			for i := 3; i < 10; i++ {
				h.Publish(logEvent(line(i)))
			}
			h.Publish(jobEvent(buildv1.JobState_JOB_STATE_SUCCEEDED))
			h.Publish(&buildv1.Event{Kind: &buildv1.Event_Finished{Finished: &buildv1.BuildFinished{}}})
		}, []string{
			"log:[7 earlier log lines dropped: the builder keeps the last 748 bytes of a build's log]",
			"job:JOB_STATE_QUEUED", "job:JOB_STATE_RUNNING",
			"log:" + line(7), "log:" + line(8), "log:" + line(9),
			"job:JOB_STATE_SUCCEEDED", "finished",
		}},
		{"only states: nothing dropped", 100, func(h *Hub) {
			h.Publish(jobEvent(buildv1.JobState_JOB_STATE_QUEUED))
			h.Publish(jobEvent(buildv1.JobState_JOB_STATE_RUNNING))
			h.Publish(jobEvent(buildv1.JobState_JOB_STATE_FAILED))
		}, []string{"job:JOB_STATE_QUEUED", "job:JOB_STATE_RUNNING", "job:JOB_STATE_FAILED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewWithLimits(Limits{MaxBytes: tt.maxBytes})
			tt.publish(h)
			if got := describe(t, h); !slices.Equal(got, tt.want) {
				t.Errorf("replay:\n %q\nwant:\n %q", got, tt.want)
			}
		})
	}
}

// Many lines through a small hub: the holes are compacted away, the bytes
// stay under the limit, and a late watcher sees the tail after its notice.
func TestLongLogThroughASmallHub(t *testing.T) {
	h := NewWithLimits(Limits{MaxBytes: 100 * (10 + eventOverhead)})
	h.Publish(jobEvent(buildv1.JobState_JOB_STATE_RUNNING))
	const n = 100_000
	for i := range n {
		h.Publish(logEvent(fmt.Sprintf("line %05d", i)))
		if h.bytes > h.lim.MaxBytes {
			t.Fatalf("%d bytes kept, over %d", h.bytes, h.lim.MaxBytes)
		}
	}
	if len(h.events) > 4*h.kept {
		t.Errorf("%d entries in the slice for %d kept: the holes are not compacted", len(h.events), h.kept)
	}
	got := describe(t, h)
	// The notice, the job update, then the last lines.
	if len(got) != 2+99 || got[1] != "job:JOB_STATE_RUNNING" || got[len(got)-1] != "log:line 99999" ||
		got[0] != "log:[99901 earlier log lines dropped: the builder keeps the last 7.2 KiB of a build's log]" {
		t.Errorf("got %d events: %q ... %q", len(got), got[:min(3, len(got))], got[len(got)-1])
	}
}

// Watchers that follow a hub dropping lines under them see every line or
// a notice counting it, in order.
func TestWatchersAccountForEveryLine(t *testing.T) {
	h := NewWithLimits(Limits{MaxBytes: 20 * (8 + eventOverhead)})
	const n = 20_000
	var wg sync.WaitGroup
	results := make([]struct {
		seen, dropped int
		err           error
	}, 4)
	for w := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[w]
			last := -1
			r.err = h.Watch(context.Background(), func(e *buildv1.Event) error {
				text := e.GetLog().GetText()
				var k, i int
				if _, err := fmt.Sscanf(text, "[%d earlier log lines dropped", &k); err == nil {
					r.dropped += k
					last += k
					return nil
				}
				if _, err := fmt.Sscanf(text, "l%07d", &i); err != nil {
					return fmt.Errorf("unexpected %q", text)
				}
				if i != last+1 {
					return fmt.Errorf("line %d after %d", i, last)
				}
				last = i
				r.seen++
				if w%2 == 1 {
					runtime.Gosched() // slow watchers
				}
				return nil
			})
		}()
	}
	for i := range n {
		h.Publish(logEvent(fmt.Sprintf("l%07d", i)))
	}
	h.Close()
	wg.Wait()
	for w, r := range results {
		if r.err != nil || r.seen+r.dropped != n {
			t.Errorf("watcher %d: %d seen + %d dropped, want %d; %v", w, r.seen, r.dropped, n, r.err)
		}
		t.Logf("watcher %d: %d lines seen, %d announced as dropped", w, r.seen, r.dropped)
	}
}

func TestSizeText(t *testing.T) {
	for n, want := range map[int]string{8 << 20: "8 MiB", 64 << 10: "64 KiB", 100: "100 bytes", 10640: "10.4 KiB", 3 << 19: "1.5 MiB"} {
		if got := sizeText(n); got != want {
			t.Errorf("sizeText(%d) = %q, want %q", n, got, want)
		}
	}
}
