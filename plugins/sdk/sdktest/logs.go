package sdktest

import (
	"strings"
	"sync"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// LogRecorder collects the lines of one build and lets a test wait for a line.
type LogRecorder struct {
	mu    sync.Mutex
	lines []*pluginv1.Log
	waits []logWait
}

type logWait struct {
	substr string
	ch     chan struct{}
}

// Sink is the LogSink to hand to Build.
func (r *LogRecorder) Sink() sdk.LogSink {
	return func(l *pluginv1.Log) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.lines = append(r.lines, l)
		kept := r.waits[:0]
		for _, w := range r.waits {
			if strings.Contains(l.GetText(), w.substr) {
				close(w.ch)
			} else {
				kept = append(kept, w)
			}
		}
		r.waits = kept
		return nil
	}
}

// Lines returns the lines so far.
func (r *LogRecorder) Lines() []*pluginv1.Log {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*pluginv1.Log(nil), r.lines...)
}

// Find returns the first line containing substr.
func (r *LogRecorder) Find(substr string) (*pluginv1.Log, bool) {
	for _, l := range r.Lines() {
		if strings.Contains(l.GetText(), substr) {
			return l, true
		}
	}
	return nil, false
}

// Seen returns a channel closed once a line containing substr has arrived.
func (r *LogRecorder) Seen(substr string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{})
	for _, l := range r.lines {
		if strings.Contains(l.GetText(), substr) {
			close(ch)
			return ch
		}
	}
	r.waits = append(r.waits, logWait{substr: substr, ch: ch})
	return ch
}

// String joins the lines for failure messages.
func (r *LogRecorder) String() string {
	var b strings.Builder
	for _, l := range r.Lines() {
		b.WriteString(l.GetText())
		b.WriteByte('\n')
	}
	return b.String()
}
