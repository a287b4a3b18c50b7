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

// Line writes what a logger made with With writes, and nothing for a level
// the logger drops.
func TestLineWritesAsWith(t *testing.T) {
	var with, line bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	ids := []slog.Attr{slog.String("sip_call_id", "abc@pbx"), slog.String("ext", "1001")}
	wl := slog.New(Lazy(slog.NewTextHandler(&with, opts)))
	wl.With("sip_call_id", "abc@pbx", "ext", "1001").Info("call ended", "outcome", "completed", "status", 200)
	wl.With("sip_call_id", "abc@pbx", "ext", "1001").Debug("dropped")
	ll := slog.New(Lazy(slog.NewTextHandler(&line, opts)))
	Line(ll, slog.LevelInfo, "call ended", ids, slog.String("outcome", "completed"), slog.Int("status", 200))
	Line(ll, slog.LevelDebug, "dropped", ids)
	if with.String() != line.String() || line.Len() == 0 {
		t.Errorf("With:\n%s\nLine:\n%s", with.String(), line.String())
	}
}
