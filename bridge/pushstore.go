// Package bridge is the call logic that joins the SIP side, the push senders
// and the store.
package bridge

import (
	"context"

	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/push"
)

// PushStore adapts the store to what the push senders need: dead tokens
// removed, every attempt logged and stamped on its device.
type PushStore struct{ Store *db.Store }

// RemoveDevice implements push.Store.
func (s PushStore) RemoveDevice(ctx context.Context, deviceID int64, reason string) error {
	return s.Store.RemoveDevice(ctx, deviceID, reason)
}

// RecordPushAttempt implements push.Store.
func (s PushStore) RecordPushAttempt(ctx context.Context, a push.Attempt) error {
	deviceError := ""
	if a.Outcome != push.OutcomeDelivered {
		deviceError = a.Outcome
		if a.Reason != "" {
			deviceError += ": " + a.Reason
		}
	}
	return s.Store.RecordPushAttempt(ctx, db.PushAttempt{
		CallID: a.CallID, DeviceID: a.DeviceID, Provider: a.Provider, Type: a.Type, SentAt: a.SentAt,
		Latency: a.Latency, Outcome: a.Outcome, Reason: a.Reason, Status: a.Status, DeviceError: deviceError,
	})
}

// Targets turns devices into push targets.
func Targets(devs []db.Device) []push.Target {
	out := make([]push.Target, 0, len(devs))
	for _, d := range devs {
		out = append(out, push.Target{DeviceID: d.ID, Provider: d.Provider, Token: d.Token, Topic: d.Topic, ProjectID: d.ProjectID})
	}
	return out
}

// compile-time check
var _ push.Store = PushStore{}
