package ingest

import (
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

// say publishes a build-level line ([Info], [Success], [Warn], [Error]).
func (b *build) say(level buildv1.Level, format string, args ...any) {
	b.hub.Publish(&buildv1.Event{BuildId: b.id, Time: timestamppb.Now(),
		Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Level: level, Text: fmt.Sprintf(format, args...)}}})
}

func (b *build) info(format string, args ...any) { b.say(buildv1.Level_LEVEL_INFO, format, args...) }
