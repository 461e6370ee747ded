package driver

import (
	"fmt"
	"strings"
	"time"

	bkclient "github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// maxLineBytes cuts a very long output line (the executor limits lines too).
const maxLineBytes = 64 << 10

// progress turns BuildKit's solve status into log lines, in the form of
// `docker buildx build --progress=plain`: "#N <step>", the step's output
// lines "#N <line>", then "#N CACHED", "#N DONE 1.2s" or "#N ERROR: ...".
type progress struct {
	logs    sdk.LogSink
	index   map[digest.Digest]int
	started map[digest.Digest]bool
	done    map[digest.Digest]bool
	partial map[digest.Digest]string
	failed  string // the first step error
}

func newProgress(logs sdk.LogSink) *progress {
	return &progress{logs: logs, index: map[digest.Digest]int{}, started: map[digest.Digest]bool{},
		done: map[digest.Digest]bool{}, partial: map[digest.Digest]string{}}
}

func (p *progress) id(d digest.Digest) int {
	if n, ok := p.index[d]; ok {
		return n
	}
	n := len(p.index) + 1
	p.index[d] = n
	return n
}

func (p *progress) line(text string, isErr bool) error {
	if len(text) > maxLineBytes {
		text = text[:maxLineBytes] + "…"
	}
	return p.logs(&pluginv1.Log{Text: text, Error: isErr})
}

// status handles one SolveStatus.
func (p *progress) status(st *bkclient.SolveStatus) error {
	for _, v := range st.Vertexes {
		if v.Started != nil && !p.started[v.Digest] {
			p.started[v.Digest] = true
			if err := p.line(fmt.Sprintf("#%d %s", p.id(v.Digest), v.Name), false); err != nil {
				return err
			}
		}
		if v.Cached && !p.done[v.Digest] {
			p.done[v.Digest] = true
			if !p.started[v.Digest] {
				p.started[v.Digest] = true
				if err := p.line(fmt.Sprintf("#%d %s", p.id(v.Digest), v.Name), false); err != nil {
					return err
				}
			}
			if err := p.line(fmt.Sprintf("#%d CACHED", p.id(v.Digest)), false); err != nil {
				return err
			}
			continue
		}
		if v.Completed != nil && !p.done[v.Digest] {
			p.done[v.Digest] = true
			if err := p.flush(v.Digest); err != nil {
				return err
			}
			n := p.id(v.Digest)
			if v.Error != "" {
				if strings.Contains(v.Error, "context canceled") {
					if err := p.line(fmt.Sprintf("#%d CANCELED", n), false); err != nil {
						return err
					}
					continue
				}
				if cacheStep(v.Name) {
					// The registry cache is an optimisation: a first build of
					// a service has none, and an export that fails loses
					// nothing built. Not an error for the user.
					note := "cache not used: " + v.Error
					if strings.Contains(v.Error, "not found") {
						note = "no cache yet for this fleet's service (its first build here)"
					}
					if err := p.line(fmt.Sprintf("#%d %s", n, note), false); err != nil {
						return err
					}
					continue
				}
				if p.failed == "" {
					p.failed = v.Error
				}
				if err := p.line(fmt.Sprintf("#%d ERROR: %s", n, v.Error), true); err != nil {
					return err
				}
				continue
			}
			var took time.Duration
			if v.Started != nil {
				took = v.Completed.Sub(*v.Started)
			}
			if err := p.line(fmt.Sprintf("#%d DONE %.1fs", n, took.Seconds()), false); err != nil {
				return err
			}
		}
	}
	for _, l := range st.Logs {
		text := p.partial[l.Vertex] + string(l.Data)
		lines := strings.Split(text, "\n")
		p.partial[l.Vertex] = lines[len(lines)-1]
		for _, s := range lines[:len(lines)-1] {
			if err := p.line(fmt.Sprintf("#%d %s", p.id(l.Vertex), strings.TrimRight(s, "\r")), false); err != nil {
				return err
			}
		}
	}
	for _, w := range st.Warnings {
		if err := p.line(fmt.Sprintf("WARNING: %s", w.Short), false); err != nil {
			return err
		}
	}
	return nil
}

// flush writes a step's unterminated last output line.
func (p *progress) flush(d digest.Digest) error {
	if rest := p.partial[d]; rest != "" {
		delete(p.partial, d)
		return p.line(fmt.Sprintf("#%d %s", p.id(d), rest), false)
	}
	return nil
}

// cacheStep tells the registry cache's import and export steps.
func cacheStep(name string) bool {
	return strings.HasPrefix(name, "importing cache manifest") || strings.HasPrefix(name, "exporting cache")
}
