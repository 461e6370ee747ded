package sdk

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// slogHCLogger is the hclog.Logger go-plugin wants, forwarding to slog. It is
// used on the host side only: go-plugin re-emits the plugin's stderr through
// it (JSON lines from NewLogger keep their level and attributes).
type slogHCLogger struct {
	logger  *slog.Logger
	name    string
	implied []any
	level   hclog.Level // NoLevel: whatever the slog handler enables
}

func newHCLogger(logger *slog.Logger, name string) hclog.Logger {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &slogHCLogger{logger: logger, name: name, level: hclog.NoLevel}
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (l *slogHCLogger) enabled(level hclog.Level) bool {
	if l.level == hclog.Off || (l.level != hclog.NoLevel && level < l.level) {
		return false
	}
	return l.logger.Enabled(context.Background(), slogLevel(level))
}

func (l *slogHCLogger) Log(level hclog.Level, msg string, args ...any) {
	if !l.enabled(level) {
		return
	}
	all := make([]any, 0, len(l.implied)+len(args)+2)
	all = append(all, "logger", l.name)
	all = append(all, l.implied...)
	all = append(all, args...)
	l.logger.Log(context.Background(), slogLevel(level), msg, all...)
}

func (l *slogHCLogger) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l *slogHCLogger) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l *slogHCLogger) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l *slogHCLogger) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l *slogHCLogger) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

func (l *slogHCLogger) IsTrace() bool { return l.enabled(hclog.Trace) }
func (l *slogHCLogger) IsDebug() bool { return l.enabled(hclog.Debug) }
func (l *slogHCLogger) IsInfo() bool  { return l.enabled(hclog.Info) }
func (l *slogHCLogger) IsWarn() bool  { return l.enabled(hclog.Warn) }
func (l *slogHCLogger) IsError() bool { return l.enabled(hclog.Error) }

func (l *slogHCLogger) ImpliedArgs() []any { return l.implied }

func (l *slogHCLogger) With(args ...any) hclog.Logger {
	c := *l
	c.implied = append(append([]any(nil), l.implied...), args...)
	return &c
}

func (l *slogHCLogger) Name() string { return l.name }

func (l *slogHCLogger) Named(name string) hclog.Logger {
	c := *l
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	return &c
}

func (l *slogHCLogger) ResetNamed(name string) hclog.Logger {
	c := *l
	c.name = name
	return &c
}

func (l *slogHCLogger) SetLevel(level hclog.Level) { l.level = level }

// GetLevel returns the set level, or the lowest level the slog handler takes.
func (l *slogHCLogger) GetLevel() hclog.Level {
	if l.level != hclog.NoLevel {
		return l.level
	}
	for _, level := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if l.enabled(level) {
			return level
		}
	}
	return hclog.Off
}

func (l *slogHCLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

func (l *slogHCLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	level := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = opts.ForceLevel
	}
	return writerFunc(func(p []byte) (int, error) {
		l.Log(level, string(bytes.TrimRight(p, "\n")))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
