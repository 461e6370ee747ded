package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

func logEvent(s string) *buildv1.Event {
	return &buildv1.Event{Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Text: s}}}
}

func TestWatchReplaysAndFollows(t *testing.T) {
	h := New()
	h.Publish(logEvent("a"))
	var wg sync.WaitGroup
	got := make([][]string, 3)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = h.Watch(context.Background(), func(e *buildv1.Event) error {
				got[i] = append(got[i], e.GetLog().GetText())
				return nil
			})
		}()
	}
	for i := 0; i < 100; i++ {
		h.Publish(logEvent(fmt.Sprint(i)))
	}
	h.Close()
	h.Publish(logEvent("after close"))
	wg.Wait()
	for i, g := range got {
		if len(g) != 101 || g[0] != "a" || g[100] != "99" {
			t.Fatalf("watcher %d got %d events (%v...)", i, len(g), g[:min(3, len(g))])
		}
	}
}

func TestWatchStopsOnContextAndError(t *testing.T) {
	h := New()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Watch(ctx, func(*buildv1.Event) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	h.Publish(logEvent("x"))
	boom := errors.New("boom")
	if err := h.Watch(context.Background(), func(*buildv1.Event) error { return boom }); err != boom {
		t.Fatalf("err = %v, want boom", err)
	}
}
