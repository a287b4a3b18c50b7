// Package logging holds callwake's slog handler.
package logging

import (
	"context"
	"log/slog"
	"slices"
)

// Lazy wraps h so that the attributes of Logger.With are formatted only
// for records that are written; output is the same as h's.
func Lazy(h slog.Handler) slog.Handler { return &lazyAttrs{h: h} }

// lazyAttrs keeps the attributes of Logger.With as they are and formats
// them only for records that are written. slog's text and JSON handlers
// format them at once, into a new handler: callwake makes a logger with a
// call's or a request's ids for each call and each REGISTER, and most of
// those write no line at info level (a REGISTER refreshing a binding logs
// at debug), which under load made With a twentieth of callwake's CPU.
// Output is the same as the wrapped handler's.
type lazyAttrs struct {
	h     slog.Handler
	attrs []slog.Attr
}

func (l *lazyAttrs) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

func (l *lazyAttrs) Handle(ctx context.Context, r slog.Record) error {
	if len(l.attrs) == 0 {
		return l.h.Handle(ctx, r)
	}
	// The logger's attributes come first, as the wrapped handler writes
	// them.
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(l.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return l.h.Handle(ctx, out)
}

func (l *lazyAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &lazyAttrs{h: l.h, attrs: append(slices.Clip(l.attrs), attrs...)}
}

// WithGroup hands the attributes over: a group changes where later ones
// go, which only the wrapped handler knows how to write. callwake uses no
// groups.
func (l *lazyAttrs) WithGroup(name string) slog.Handler {
	h := l.h
	if len(l.attrs) > 0 {
		h = h.WithAttrs(l.attrs)
	}
	return &lazyAttrs{h: h.WithGroup(name)}
}
