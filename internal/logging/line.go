package logging

import (
	"context"
	"log/slog"
)

// Line writes msg at level with ids, then attrs, as l.With(ids...) would
// write it, without making that logger: a call's or a push's ids go on each
// of its lines, and a logger made per line (or kept per call) cost more
// than the lines. Nothing is built for a level l drops.
func Line(l *slog.Logger, level slog.Level, msg string, ids []slog.Attr, attrs ...slog.Attr) {
	ctx := context.Background()
	if !l.Enabled(ctx, level) {
		return
	}
	var buf [12]slog.Attr
	l.LogAttrs(ctx, level, msg, append(append(buf[:0], ids...), attrs...)...)
}
