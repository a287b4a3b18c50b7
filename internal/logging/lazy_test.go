package logging

import (
	"bytes"
	"log/slog"
	"testing"
	"time"
)

// A logger over lazyAttrs writes what the wrapped handler would, for
// With chains, groups and levels.
func TestLazyAttrsWritesTheSame(t *testing.T) {
	strip := func(a []string, attr slog.Attr) slog.Attr {
		if attr.Key == slog.TimeKey && len(a) == 0 {
			return slog.Attr{}
		}
		return attr
	}
	for _, format := range []string{"text", "json"} {
		var plain, lazy bytes.Buffer
		opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: strip}
		newHandler := func(buf *bytes.Buffer) slog.Handler {
			if format == "json" {
				return slog.NewJSONHandler(buf, opts)
			}
			return slog.NewTextHandler(buf, opts)
		}
		for _, l := range []*slog.Logger{slog.New(newHandler(&plain)), slog.New(&lazyAttrs{h: newHandler(&lazy)})} {
			call := l.With("call_id", "c1", "ext", "1001")
			call.Info("call ringing", "devices", 2, "after", 3*time.Millisecond)
			call.Debug("not written")
			call.With("device_id", 7).Warn("push not delivered", "reason", "BadDeviceToken")
			l.Info("no attributes")
			call.WithGroup("sip").With("code", 487).Info("grouped", "more", true)
			l.WithGroup("g").Info("empty group then attrs", "k", "v")
		}
		if plain.String() != lazy.String() {
			t.Errorf("%s:\nplain:\n%s\nlazy:\n%s", format, plain.String(), lazy.String())
		}
	}
}
