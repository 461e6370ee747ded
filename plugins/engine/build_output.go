package engine

import (
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

var (
	// The classic builder announces each step's container before starting it.
	runningInRE = regexp.MustCompile(`^\s*---> Running in ([0-9a-f]{12,64})\s*$`)
	builtRE     = regexp.MustCompile(`^Successfully built ([0-9a-f]{12,64})\s*$`)
	// A base image pulled (FROM, COPY --from) ends with one of these.
	pulledRE = regexp.MustCompile(`^Status: (?:Downloaded newer image|Image is up to date) for (\S+)\s*$`)
)

// buildFailedError is a failed build step, with the daemon's message
// ("The command '/bin/sh -c exit 3' returned a non-zero code: 3").
type buildFailedError struct{ msg string }

func (e *buildFailedError) Error() string { return "build failed: " + e.msg }

// buildOutput follows a classic-builder message stream: it sends the text
// to logs line by line and remembers the image id and the containers the
// build ran, for clean-up after a cancel.
type buildOutput struct {
	logs       sdk.LogSink
	lines      lineBuffer // stream text after the last newline
	progress   progressLines
	imageID    string
	shortID    string // from "Successfully built", if no aux came
	containers []string
	pulled     []string // base images the daemon pulled, as it names them
}

func (o *buildOutput) handle(m *jsonmessage.JSONMessage) error {
	if msg := messageError(m); msg != "" {
		if err := o.flush(); err != nil {
			return err
		}
		if err := o.logs(&pluginv1.Log{Text: msg, Error: true}); err != nil {
			return err
		}
		return &buildFailedError{msg: msg}
	}
	if m.Aux != nil {
		var res build.Result
		if err := json.Unmarshal(*m.Aux, &res); err == nil && res.ID != "" {
			o.imageID = res.ID
		}
	}
	if m.Stream != "" {
		return o.text(m.Stream)
	}
	if m.Status != "" { // pulling the base image
		if p := pulledRE.FindStringSubmatch(m.Status); p != nil && !slices.Contains(o.pulled, p[1]) {
			o.pulled = append(o.pulled, p[1])
		}
		if err := o.flush(); err != nil {
			return err
		}
		return o.logs(o.progress.line(m))
	}
	return nil
}

// text emits the complete lines of s and keeps the rest for later.
func (o *buildOutput) text(s string) error {
	for _, line := range o.lines.add(s) {
		if err := o.line(line); err != nil {
			return err
		}
	}
	return nil
}

func (o *buildOutput) line(line string) error {
	line = strings.TrimRight(line, "\r")
	if strings.TrimSpace(line) == "" {
		return nil
	}
	if m := runningInRE.FindStringSubmatch(line); m != nil {
		o.containers = append(o.containers, m[1])
	}
	if m := builtRE.FindStringSubmatch(line); m != nil {
		o.shortID = m[1]
	}
	return o.logs(&pluginv1.Log{Text: line})
}

// flush emits a last line that had no newline.
func (o *buildOutput) flush() error {
	return o.line(o.lines.rest())
}

// image returns the built image's id once the stream has ended.
func (o *buildOutput) image() (string, error) {
	switch {
	case o.imageID != "":
		return o.imageID, nil
	case o.shortID != "":
		return o.shortID, nil
	default:
		return "", errors.New("build stream ended without an image id")
	}
}
