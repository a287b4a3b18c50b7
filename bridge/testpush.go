package bridge

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/push"
)

// TestPusher sends test pushes: an incoming_call marked "test", then a
// call_cancelled once the ring window has passed, as a real unanswered call
// would.
type TestPusher struct {
	Pusher    *push.Pusher
	Store     *db.Store
	Registrar func(ext string) string // the SIP URI apps register to
	Window    time.Duration           // the ring window of the test call
	Now       func() time.Time
	Logger    *slog.Logger
	// Background runs the delayed call_cancelled; the daemon passes its
	// lifetime context so that shutdown stops it.
	Background context.Context
}

// TestPush pushes every device of ext and answers what each provider said to
// the incoming_call. The call_cancelled follows after Window, in the
// background when wait is false.
func (t *TestPusher) TestPush(ctx context.Context, ext string, wait bool) ([]push.Result, error) {
	if _, err := t.Store.GetExtension(ctx, ext); err != nil {
		return nil, err
	}
	devs, err := t.Store.ListDevices(ctx, ext)
	if err != nil {
		return nil, err
	}
	now := t.Now()
	deadline := now.Add(t.Window)
	callID := uuid.NewString()
	base := push.Payload{
		Type: push.TypeIncomingCall, CallID: callID, SIPCallID: "test-" + callID,
		CallerName: "callwake test", CallerNumber: "test", Callee: ext,
		SentAt: now, ExpiresAt: deadline, Registrar: t.Registrar(ext), Test: true,
	}
	targets := Targets(devs)
	results := t.Pusher.Push(ctx, targets, func(push.Target) push.Payload { return base }, deadline)
	t.Logger.Info("test push sent", "ext", ext, "call_id", callID, "devices", len(targets))

	cancelPush := func() {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-t.Background.Done():
			return
		}
		cancelled := base
		cancelled.Type, cancelled.Reason = push.TypeCallCancelled, push.ReasonTimeout
		cancelled.SentAt = t.Now()
		cancelled.ExpiresAt = cancelled.SentAt.Add(t.Window)
		t.Pusher.Push(t.Background, delivered(results), func(push.Target) push.Payload { return cancelled }, cancelled.ExpiresAt)
		t.Logger.Info("test push cancelled", "ext", ext, "call_id", callID)
	}
	if wait {
		cancelPush()
	} else {
		go cancelPush()
	}
	return results, nil
}

// delivered are the targets whose push went out: those to dismiss.
func delivered(results []push.Result) []push.Target {
	var out []push.Target
	for _, r := range results {
		if r.Outcome == push.OutcomeDelivered || r.Outcome == push.OutcomeDisabled {
			out = append(out, r.Target)
		}
	}
	return out
}
