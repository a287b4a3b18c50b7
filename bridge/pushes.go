package bridge

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/callwake/callwake/internal/workers"
	"github.com/callwake/callwake/push"
)

// payload is the push of this call, as every device gets it but for its
// decline URL.
func (c *call) payload(kind string, sentAt, expiresAt time.Time) push.Payload {
	req := c.in.Request()
	headers := map[string]string{}
	for _, name := range c.b.cfg.ForwardHeaders {
		if h := req.GetHeader(name); h != nil {
			headers[name] = h.Value()
		}
	}
	return push.Payload{
		Type: kind, CallID: c.id, SIPCallID: c.row.SIPCallID,
		CallerName: c.row.CallerName, CallerNumber: c.row.CallerNumber, Callee: c.ext,
		SentAt: sentAt, ExpiresAt: expiresAt, Registrar: c.b.cfg.RegistrarURI, Headers: headers,
	}
}

// startPushes wakes every device of the extension; the results come back to
// the call's goroutine as an event, so no provider can delay the call.
func (c *call) startPushes() {
	if len(c.devices) == 0 {
		return
	}
	// Push is done with targets once its results come back: the call keeps
	// them (and trims them) rather than a copy.
	targets := Targets(c.devices)
	c.pushed = targets
	now := c.b.cfg.Now()
	deadline := c.row.InviteAt.Add(c.b.cfg.RingTimeout)
	c.row.PushAt = now
	base := c.payload(push.TypeIncomingCall, now, deadline)
	payloadFor := func(t push.Target) push.Payload {
		p := base
		p.DeclineURL = c.b.declineURL(c.id, t.DeviceID)
		return p
	}
	workers.Go(func() {
		results := c.b.cfg.Pusher.Push(context.Background(), targets, payloadFor, deadline)
		c.send(evPushed{kind: push.TypeIncomingCall, results: results})
	})
}

func (c *call) onPushed(ev evPushed) {
	if ev.kind != push.TypeIncomingCall {
		return
	}
	for _, r := range ev.results {
		switch r.Outcome {
		case push.OutcomeDelivered, push.OutcomeDisabled:
		default:
			// Nothing to dismiss on a phone that never got the call.
			c.pushed = slices.DeleteFunc(c.pushed, func(t push.Target) bool { return t.DeviceID == r.Target.DeviceID })
			c.logAttrs(slog.LevelInfo, "push not delivered", slog.Int64("device_id", r.Target.DeviceID), slog.String("provider", r.Target.Provider),
				slog.String("outcome", r.Outcome), slog.String("reason", r.Reason))
		}
	}
	if !c.ended && len(c.pushed) == 0 && len(c.legs) == 0 {
		c.logAttrs(slog.LevelInfo, "no device could be pushed")
		c.end(outcomeUnavailable, 480, "Temporarily Unavailable (push failed)", push.ReasonTimeout, 0, nil)
	}
}

// cancelPushes sends call_cancelled to every pushed device but except, so
// that no phone keeps ringing.
func (c *call) cancelPushes(reason string, except int64) {
	var targets []push.Target
	for _, t := range c.pushed {
		if t.DeviceID != except {
			targets = append(targets, t)
		}
	}
	if len(targets) == 0 {
		return
	}
	now := c.b.cfg.Now()
	p := c.payload(push.TypeCallCancelled, now, now.Add(c.b.cfg.RingTimeout))
	p.Reason = reason
	deadline := p.ExpiresAt
	workers.Go(func() {
		c.b.cfg.Pusher.Push(context.Background(), targets, func(push.Target) push.Payload { return p }, deadline)
	})
}
