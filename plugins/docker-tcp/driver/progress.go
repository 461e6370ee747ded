package driver

import (
	"fmt"

	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/go-units"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// progressLines turns status messages (push, base image pull) into log
// lines: "<layer>: Pushing  1.2MB/3.4MB". A line replaces the previous one
// when that was a progress line of the same layer, so a terminal shows one
// line per layer that counts up and ends with "Pushed".
type progressLines struct {
	lastProgressID string // layer of the previous line if it was progress
}

func (p *progressLines) line(m *jsonmessage.JSONMessage) *pluginv1.Log {
	text := m.Status
	if m.ID != "" {
		text = m.ID + ": " + m.Status
	}
	isProgress := m.Progress != nil && m.Progress.Total > 0
	if isProgress {
		text += fmt.Sprintf("  %s/%s", units.HumanSize(float64(m.Progress.Current)), units.HumanSize(float64(m.Progress.Total)))
	}
	l := &pluginv1.Log{Text: text, Replace: m.ID != "" && m.ID == p.lastProgressID}
	p.lastProgressID = ""
	if isProgress {
		p.lastProgressID = m.ID
	}
	return l
}
