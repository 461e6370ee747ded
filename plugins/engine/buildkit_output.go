package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/go-units"
	controlapi "github.com/moby/buildkit/api/services/control"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// Message ids of a BuildKit build's stream (POST /build?version=2).
const (
	// buildkitTraceID: aux is a JSON string, the base64 of a protobuf
	// moby.buildkit.v1.StatusResponse (vertexes, statuses, logs).
	buildkitTraceID = "moby.buildkit.trace"
	// imageIDMessageID: aux is {"ID":"sha256:..."}, the built image.
	imageIDMessageID = "moby.image.id"
)

// buildkitOutput follows a BuildKit message stream and prints it the way
// `docker build --progress=plain` does:
//
//	#5 [2/2] RUN echo hi
//	#5 0.123 hi
//	#5 DONE 0.2s
//
// "#N" numbers the build's steps (vertexes) in the order they appear; a
// step's output lines carry the seconds since the step started. Only the
// final state of a status (a layer pull, the context transfer) is printed,
// not every tick.
type buildkitOutput struct {
	logs     sdk.LogSink
	vertexes map[string]*bkVertex // by digest
	order    []*bkVertex
	failed   *bkVertex // the first step that failed
	imageID  string
	lines    lineBuffer // text of "stream" messages after the last newline
	badTrace bool       // an undecodable trace was reported once
}

// bkVertex is one step of a BuildKit build as printed so far.
type bkVertex struct {
	index    int
	name     string
	started  time.Time
	headed   bool // "#N <name>" printed
	ended    bool // DONE, CACHED, CANCELED or ERROR printed
	err      string
	statuses map[string]bool    // ids of the statuses printed as done
	partial  map[int64]*bkChunk // per stream (1 stdout, 2 stderr): text after the last newline
}

type bkChunk struct {
	lines lineBuffer
	at    time.Time
}

func newBuildKitOutput(logs sdk.LogSink) *buildkitOutput {
	return &buildkitOutput{logs: logs, vertexes: make(map[string]*bkVertex)}
}

func (o *buildkitOutput) handle(m *jsonmessage.JSONMessage) error {
	if msg := messageError(m); msg != "" {
		if err := o.flush(); err != nil {
			return err
		}
		if err := o.logs(&pluginv1.Log{Text: msg, Error: true}); err != nil {
			return err
		}
		if o.failed != nil && o.failed.name != "" && !strings.Contains(msg, o.failed.name) {
			msg = fmt.Sprintf("step %q: %s", o.failed.name, msg)
		}
		return &buildFailedError{msg: msg}
	}
	switch {
	case m.ID == buildkitTraceID && m.Aux != nil:
		var raw []byte // a JSON string: base64
		var st controlapi.StatusResponse
		if err := json.Unmarshal(*m.Aux, &raw); err != nil {
			return o.undecodable(err)
		}
		if err := proto.Unmarshal(raw, &st); err != nil {
			return o.undecodable(err)
		}
		return o.status(&st)
	case m.ID == imageIDMessageID && m.Aux != nil:
		var res build.Result
		if err := json.Unmarshal(*m.Aux, &res); err != nil {
			return fmt.Errorf("decode %s: %w", imageIDMessageID, err)
		}
		o.imageID = res.ID
		return nil
	case m.Stream != "":
		return o.text(m.Stream)
	}
	return nil
}

// undecodable notes, once, that a progress message could not be read. It
// does not fail the build: the result does not depend on the progress.
func (o *buildkitOutput) undecodable(err error) error {
	if o.badTrace {
		return nil
	}
	o.badTrace = true
	return o.logs(&pluginv1.Log{Text: "(BuildKit progress not readable: " + err.Error() + ")"})
}

// status prints what one StatusResponse adds: new steps, their output,
// finished statuses, then the steps that ended.
func (o *buildkitOutput) status(st *controlapi.StatusResponse) error {
	var ended []*controlapi.Vertex
	for _, v := range st.GetVertexes() {
		vx := o.vertex(v.GetDigest())
		if v.GetName() != "" {
			vx.name = v.GetName()
		}
		if v.GetStarted() != nil && vx.started.IsZero() {
			vx.started = v.GetStarted().AsTime()
		}
		if v.GetStarted() != nil || v.GetCached() {
			if err := o.header(vx); err != nil {
				return err
			}
		}
		if v.GetCompleted() != nil || v.GetCached() {
			ended = append(ended, v)
		}
	}
	for _, s := range st.GetStatuses() {
		if err := o.statusLine(s); err != nil {
			return err
		}
	}
	for _, l := range st.GetLogs() {
		if err := o.logLine(l); err != nil {
			return err
		}
	}
	for _, w := range st.GetWarnings() {
		vx := o.vertex(w.GetVertex())
		if err := o.header(vx); err != nil {
			return err
		}
		if err := o.emit(vx, "WARN: "+strings.TrimSpace(string(w.GetShort())), false); err != nil {
			return err
		}
	}
	for _, v := range ended {
		if err := o.end(o.vertex(v.GetDigest()), v); err != nil {
			return err
		}
	}
	return nil
}

// vertex returns the step with digest, numbering it when it is new.
func (o *buildkitOutput) vertex(digest string) *bkVertex {
	vx, ok := o.vertexes[digest]
	if !ok {
		vx = &bkVertex{index: len(o.order) + 1, statuses: map[string]bool{}, partial: map[int64]*bkChunk{}}
		o.vertexes[digest] = vx
		o.order = append(o.order, vx)
	}
	return vx
}

// header prints "#N <name>" once, when the step's name is known.
func (o *buildkitOutput) header(vx *bkVertex) error {
	if vx.headed || vx.name == "" {
		return nil
	}
	vx.headed = true
	return o.emit(vx, vx.name, false)
}

func (o *buildkitOutput) emit(vx *bkVertex, text string, isErr bool) error {
	return o.logs(&pluginv1.Log{Text: fmt.Sprintf("#%d %s", vx.index, text), Error: isErr})
}

// end prints how a step ended: CACHED, DONE <seconds>, CANCELED or ERROR.
func (o *buildkitOutput) end(vx *bkVertex, v *controlapi.Vertex) error {
	if vx.ended {
		return nil
	}
	vx.ended = true
	if err := o.header(vx); err != nil {
		return err
	}
	if err := o.flushVertex(vx); err != nil {
		return err
	}
	switch msg := v.GetError(); {
	case v.GetCached() && msg == "":
		return o.emit(vx, "CACHED", false)
	case msg == "":
		return o.emit(vx, fmt.Sprintf("DONE %.1fs", duration(v.GetStarted(), v.GetCompleted()).Seconds()), false)
	case strings.HasSuffix(msg, "context canceled"):
		return o.emit(vx, "CANCELED", false)
	default:
		vx.err = msg
		if o.failed == nil {
			o.failed = vx
		}
		return o.emit(vx, "ERROR: "+msg, true)
	}
}

// statusLine prints a finished status: "#3 sha256:ab… 2.1MB / 2.1MB 0.3s done",
// "#1 transferring context: 98B done".
func (o *buildkitOutput) statusLine(s *controlapi.VertexStatus) error {
	vx := o.vertex(s.GetVertex())
	if s.GetCompleted() == nil || vx.statuses[s.GetID()] {
		return nil
	}
	vx.statuses[s.GetID()] = true
	if err := o.header(vx); err != nil {
		return err
	}
	text := s.GetID()
	switch {
	case s.GetTotal() > 0:
		text += fmt.Sprintf(" %s / %s", units.HumanSize(float64(s.GetCurrent())), units.HumanSize(float64(s.GetTotal())))
	case s.GetCurrent() > 0:
		text += " " + units.HumanSize(float64(s.GetCurrent()))
	}
	if d := duration(s.GetStarted(), s.GetCompleted()); d >= 100*time.Millisecond {
		text += fmt.Sprintf(" %.1fs", d.Seconds())
	}
	return o.emit(vx, text+" done", false)
}

// logLine prints the complete lines of a step's output as
// "#N <seconds since the step started> <line>", keeping the rest.
func (o *buildkitOutput) logLine(l *controlapi.VertexLog) error {
	vx := o.vertex(l.GetVertex())
	if err := o.header(vx); err != nil {
		return err
	}
	at := l.GetTimestamp().AsTime()
	c := vx.partial[l.GetStream()]
	if c == nil {
		c = &bkChunk{at: at}
		vx.partial[l.GetStream()] = c
	}
	if !c.lines.pending() {
		c.at = at
	}
	for _, line := range c.lines.add(string(l.GetMsg())) {
		if err := o.output(vx, c.at, line); err != nil {
			return err
		}
		c.at = at
	}
	return nil
}

// output prints one line of a step's output. Of a line redrawn with
// carriage returns (a progress bar) only the last state is kept.
func (o *buildkitOutput) output(vx *bkVertex, at time.Time, line string) error {
	line = strings.TrimRight(line, "\r")
	if i := strings.LastIndexByte(line, '\r'); i >= 0 {
		line = line[i+1:]
	}
	if strings.TrimSpace(line) == "" {
		return nil
	}
	var secs float64
	if !vx.started.IsZero() && at.After(vx.started) {
		secs = at.Sub(vx.started).Seconds()
	}
	return o.emit(vx, fmt.Sprintf("%.3f %s", secs, line), false)
}

// flushVertex prints a step's last output lines that had no newline.
func (o *buildkitOutput) flushVertex(vx *bkVertex) error {
	streams := make([]int64, 0, len(vx.partial))
	for s := range vx.partial {
		streams = append(streams, s)
	}
	slices.Sort(streams)
	for _, s := range streams {
		c := vx.partial[s]
		if err := o.output(vx, c.at, c.lines.rest()); err != nil {
			return err
		}
	}
	return nil
}

// text prints plain "stream" messages (the daemon's own notes) line by line.
func (o *buildkitOutput) text(s string) error {
	for _, line := range o.lines.add(s) {
		if line = strings.TrimRight(line, "\r"); strings.TrimSpace(line) != "" {
			if err := o.logs(&pluginv1.Log{Text: line}); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush prints all output still held back, once the stream has ended.
func (o *buildkitOutput) flush() error {
	for _, vx := range o.order {
		if err := o.flushVertex(vx); err != nil {
			return err
		}
	}
	rest := o.lines.rest()
	if strings.TrimSpace(rest) == "" {
		return nil
	}
	return o.logs(&pluginv1.Log{Text: strings.TrimRight(rest, "\r")})
}

// image returns the built image's id once the stream has ended.
func (o *buildkitOutput) image() (string, error) {
	if o.imageID == "" {
		return "", errors.New("BuildKit build stream ended without an image id (" + imageIDMessageID + ")")
	}
	return o.imageID, nil
}

// duration is completed - started, 0 when either is missing.
func duration(started, completed *timestamppb.Timestamp) time.Duration {
	if started == nil || completed == nil {
		return 0
	}
	if d := completed.AsTime().Sub(started.AsTime()); d > 0 {
		return d
	}
	return 0
}
