package gateway

import (
	"fmt"
	"strings"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

// message is one element of the /v3/build response array, as balena-cli
// reads it (remote-build.ts).
type message struct {
	Message  string `json:"message,omitempty"`
	Replace  bool   `json:"replace,omitempty"`
	IsError  bool   `json:"isError,omitempty"`
	Type     string `json:"type,omitempty"`
	Resource string `json:"resource,omitempty"`
	Value    any    `json:"value,omitempty"`
}

func buildLogID(releaseID int64) message {
	return message{Type: "metadata", Resource: "buildLogId", Value: releaseID}
}

var cursorErase = message{Type: "metadata", Resource: "cursor", Value: "erase"}

// balenaCloud's colours for the line prefixes.
const (
	cyan    = "\x1b[36m"
	green   = "\x1b[32m"
	yellow  = "\x1b[33m"
	red     = "\x1b[31m"
	blue    = "\x1b[34m"
	magenta = "\x1b[35m"
	reset   = "\x1b[39m"
)

// prefix pads a coloured tag to column 11, as balenaCloud's builder does.
func prefix(colour, tag string) string {
	pad := 11 - len(tag)
	if pad < 1 {
		pad = 1
	}
	return colour + tag + reset + strings.Repeat(" ", pad)
}

// Lines are the lines balena-cli prints for one build event (with its
// colours): for other clients of the build stream, such as `obb builds
// logs`.
func Lines(e *buildv1.Event) []string {
	var out []string
	for _, m := range render(e) {
		out = append(out, m.Message)
	}
	return out
}

// render turns one build event into the messages balena-cli prints. Job
// state changes and the end of the build render as nothing: the lines
// around them tell the story.
func render(e *buildv1.Event) []message {
	l := e.GetLog()
	if l == nil {
		return nil
	}
	text := strings.TrimRight(l.GetText(), "\r\n")
	switch l.GetLevel() {
	case buildv1.Level_LEVEL_INFO:
		return []message{{Message: prefix(cyan, "[Info]") + text}}
	case buildv1.Level_LEVEL_SUCCESS:
		return []message{{Message: prefix(green, "[Success]") + text}}
	case buildv1.Level_LEVEL_WARN:
		return []message{{Message: prefix(yellow, "[Warn]") + text}}
	case buildv1.Level_LEVEL_DELTA:
		return []message{{Message: prefix(magenta, "[Delta]") + text}}
	case buildv1.Level_LEVEL_ERROR:
		if e.GetService() != "" {
			return []message{{Message: prefix(red, "["+e.GetService()+"]") + text, IsError: true}}
		}
		return []message{{Message: prefix(red, "[Error]") + text, IsError: true}}
	case buildv1.Level_LEVEL_OUTPUT:
		return []message{{Message: prefix(blue, "["+e.GetService()+"]") + text, Replace: l.GetReplace()}}
	}
	return []message{{Message: text, Replace: l.GetReplace()}}
}

// errorMessage is the element that reports a failure after the stream began.
func errorMessage(format string, args ...any) message {
	return message{Message: prefix(red, "[Error]") + fmt.Sprintf(format, args...), IsError: true}
}
