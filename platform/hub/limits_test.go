package hub

import (
	"context"
	"strings"
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
		{"the oldest go", 10 * (1000 + eventOverhead), 25, 10, "[15 earlier log lines dropped: the builder keeps the last 10 KiB of a build's log]"},
		{"one huge line is kept alone", 100, 3, 1, "[2 earlier log lines dropped: the builder keeps the last 0 KiB of a build's log]"},
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
