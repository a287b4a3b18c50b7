package bridge

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/callwake/callwake/db"
	"github.com/google/uuid"
)

// A line written with logAttrs reads as the same line written through the
// call's logger, in both formats, and a level the logger drops writes
// nothing.
func TestCallLogAttrsWritesAsTheCallLogger(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var viaLogger, viaAttrs bytes.Buffer
		newCall := func(buf *bytes.Buffer) *call {
			opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey && len(groups) == 0 {
					return slog.Attr{}
				}
				return a
			}}
			var h slog.Handler = slog.NewTextHandler(buf, opts)
			if format == "json" {
				h = slog.NewJSONHandler(buf, opts)
			}
			b := &Bridge{log: slog.New(h).With("component", "bridge")}
			return &call{b: b, id: "9b2f1c", ext: "1001", row: db.Call{SIPCallID: "a84b@pbx"}}
		}
		c := newCall(&viaLogger)
		c.log().Info("call ended", "outcome", "completed", "status", 200, "duration", 1500*time.Millisecond, "device_id", int64(7))
		c.log().Warn("INVITE to phone failed", "err", errors.New("no route"))
		c.log().Debug("ringing phone", "device_id", int64(7))
		c = newCall(&viaAttrs)
		c.logAttrs(slog.LevelInfo, "call ended", slog.String("outcome", "completed"), slog.Int("status", 200),
			slog.Duration("duration", 1500*time.Millisecond), slog.Int64("device_id", 7))
		c.logAttrs(slog.LevelWarn, "INVITE to phone failed", slog.Any("err", errors.New("no route")))
		c.logAttrs(slog.LevelDebug, "ringing phone", slog.Int64("device_id", 7))
		if viaLogger.String() != viaAttrs.String() {
			t.Errorf("%s:\nlogger:\n%s\nlogAttrs:\n%s", format, viaLogger.String(), viaAttrs.String())
		}
		if viaAttrs.Len() == 0 || bytes.Contains(viaAttrs.Bytes(), []byte("ringing phone")) {
			t.Errorf("%s: wrong lines written:\n%s", format, viaAttrs.String())
		}
	}
}

// Call ids are UUIDs (the contract's call_id, CallKit's UUID) in time
// order, which keeps the call log's id indexes appended to, not scattered.
func TestCallIDsAreTimeOrderedUUIDs(t *testing.T) {
	prev := ""
	for range 1000 {
		id := newCallID()
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 7 || u.String() != id {
			t.Fatalf("call id %q: version %v, %v", id, u.Version(), err)
		}
		if id <= prev {
			t.Fatalf("call id %q after %q", id, prev)
		}
		prev = id
	}
}
