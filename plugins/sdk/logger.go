package sdk

import (
	"io"
	"log/slog"
	"strings"
)

// hclogTimeFormat is the @timestamp layout go-plugin's host parses.
const hclogTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// NewLogger returns the logger a plugin's main should use: JSON on w
// (normally os.Stderr) with the keys go-plugin's host understands (@message,
// @level, @timestamp), so each line reaches the host's slog with its level
// and attributes instead of as plain text.
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.MessageKey:
				a.Key = "@message"
			case slog.LevelKey:
				a.Key = "@level"
				a.Value = slog.StringValue(hclogLevel(a.Value))
			case slog.TimeKey:
				a.Key = "@timestamp"
				a.Value = slog.StringValue(a.Value.Time().Format(hclogTimeFormat))
			}
			return a
		},
	}))
}

// hclogLevel maps a slog level to hclog's names (levels below debug are trace).
func hclogLevel(v slog.Value) string {
	level, ok := v.Any().(slog.Level)
	if !ok {
		return strings.ToLower(v.String())
	}
	switch {
	case level < slog.LevelDebug:
		return "trace"
	case level < slog.LevelInfo:
		return "debug"
	case level < slog.LevelWarn:
		return "info"
	case level < slog.LevelError:
		return "warn"
	default:
		return "error"
	}
}
