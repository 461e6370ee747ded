package engine

import (
	"fmt"

	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/go-units"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// progressLines turns status messages (push, base image pull) into log
// lines: "<layer>: Pushing  1.2MB/3.4MB". Progress lines are marked
// replace, so a terminal shows them on one line that counts up, as
// balenaCloud does; the final status of a layer ("Pushed") is an ordinary
// line and stays.
type progressLines struct{}

func (p *progressLines) line(m *jsonmessage.JSONMessage) *pluginv1.Log {
	text := m.Status
	if m.ID != "" {
		text = m.ID + ": " + m.Status
	}
	isProgress := m.Progress != nil && m.Progress.Total > 0
	if isProgress {
		text += fmt.Sprintf("  %s/%s", units.HumanSize(float64(m.Progress.Current)), units.HumanSize(float64(m.Progress.Total)))
	}
	return &pluginv1.Log{Text: text, Replace: isProgress}
}
