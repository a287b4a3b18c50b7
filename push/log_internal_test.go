package push

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// A push's line written through pushLog reads as the same line written
// through a logger made with With, in both formats; a level the logger
// drops writes nothing.
func TestPushLogWritesAsWith(t *testing.T) {
	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}
	for _, format := range []string{"text", "json"} {
		var viaWith, viaPushLog bytes.Buffer
		newLogger := func(buf *bytes.Buffer) *slog.Logger {
			opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: noTime}
			if format == "json" {
				return slog.New(slog.NewJSONHandler(buf, opts)).With("component", "push")
			}
			return slog.New(slog.NewTextHandler(buf, opts)).With("component", "push")
		}
		with := newLogger(&viaWith).With("device_id", int64(7), "provider", ProviderAPNs, "call_id", "9b2f1c", "push_type", TypeIncomingCall)
		with.Warn("push not delivered", "outcome", OutcomeFailed, "attempts", 2, "latency", 1500*time.Millisecond, "err", errors.New("apns: 500"))
		with.Debug("push delivered", "outcome", OutcomeDelivered)

		log := pushLog{logger: newLogger(&viaPushLog), ids: []slog.Attr{slog.Int64("device_id", 7), slog.String("provider", ProviderAPNs),
			slog.String("call_id", "9b2f1c"), slog.String("push_type", TypeIncomingCall)}}
		log.write(slog.LevelWarn, "push not delivered", slog.String("outcome", OutcomeFailed), slog.Int("attempts", 2),
			slog.Duration("latency", 1500*time.Millisecond), slog.Any("err", errors.New("apns: 500")))
		log.write(slog.LevelDebug, "push delivered", slog.String("outcome", OutcomeDelivered))

		if viaWith.String() != viaPushLog.String() || viaWith.Len() == 0 {
			t.Errorf("%s:\nWith:\n%s\npushLog:\n%s", format, viaWith.String(), viaPushLog.String())
		}
	}
}
