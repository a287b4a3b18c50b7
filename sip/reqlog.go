package sip

import (
	"context"
	"log/slog"
)

// requestLogger writes the log lines of one REGISTER with the request's
// ids. They are added (Logger.With) only to a line that is written: at
// info level most REGISTERs write none, and a With per request was a
// tenth of what the registrar allocated.
type requestLogger struct {
	log    *slog.Logger
	callID string
	source string
	ext    string // "" until the To header is read
}

func (l *requestLogger) Debug(msg string, args ...any) { l.write(slog.LevelDebug, msg, args) }
func (l *requestLogger) Info(msg string, args ...any)  { l.write(slog.LevelInfo, msg, args) }
func (l *requestLogger) Warn(msg string, args ...any)  { l.write(slog.LevelWarn, msg, args) }
func (l *requestLogger) Error(msg string, args ...any) { l.write(slog.LevelError, msg, args) }

// enabled reports whether a line at level is written, for callers whose
// attributes cost something to build.
func (l *requestLogger) enabled(level slog.Level) bool {
	return l.log.Enabled(context.Background(), level)
}

func (l *requestLogger) write(level slog.Level, msg string, args []any) {
	if !l.enabled(level) {
		return
	}
	log := l.log.With("sip_call_id", l.callID, "source", l.source)
	if l.ext != "" {
		log = log.With("ext", l.ext)
	}
	log.Log(context.Background(), level, msg, args...)
}
