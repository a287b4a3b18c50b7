package bridge_test

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/callwake/callwake/bridge"
	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/push/pushtest"
	"github.com/callwake/callwake/sip"
)

// realPush puts the real APNs sender, pointed at the local mock, behind the
// bridge: what the phone gets is what Apple would deliver.
func realPush(t *testing.T) (*pushtest.APNsMock, envOption) {
	key := pushtest.WriteAPNsKey(t, t.TempDir())
	mock := pushtest.NewAPNsMock(t, pushtest.APNsMockConfig{AuthKey: &key.Key.PublicKey, KeyID: key.KeyID, TeamID: key.TeamID})
	return mock, func(b *bridge.Config, _ *sip.ServiceConfig) {
		p, err := push.New(push.Options{APNs: push.APNsOptions{KeyFile: key.Path, KeyID: key.KeyID, TeamID: key.TeamID,
			Endpoint: mock.URL, SandboxEndpoint: mock.URL, TLSConfig: mock.ClientTLS()}},
			bridge.PushStore{Store: b.Store}, testLogger(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		b.Pusher = p
	}
}

func TestPushPayloadOnTheWire(t *testing.T) {
	mock, withPush := realPush(t)
	e := newEnv(t, withPush)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	call := newPBX(t, e).call("1001", sipgoHeader("X-Customer-Id", "acme-42"))
	call.expect(180)
	req := mock.WaitRequests(t, 1)[0]
	if req.Token != apnsToken(1) {
		t.Errorf("pushed token %s", req.Token)
	}
	for h, want := range map[string]string{"apns-push-type": "voip", "apns-topic": "com.example.app.voip", "apns-priority": "10"} {
		if got := req.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	var body map[string]any
	if err := json.Unmarshal(req.Body, &body); err != nil {
		t.Fatalf("body %s: %v", req.Body, err)
	}
	for _, k := range []string{"type", "call_id", "sip_call_id", "caller_name", "caller_number", "callee",
		"sent_at", "expires_at", "decline_url", "registrar", "headers"} {
		if _, ok := body[k]; !ok {
			t.Errorf("payload lacks %q: %s", k, req.Body)
		}
	}
	if body["type"] != "incoming_call" || body["callee"] != "1001" || body["caller_number"] != "+15551234" {
		t.Errorf("payload = %s", req.Body)
	}
	if h, _ := body["headers"].(map[string]any); h["X-Customer-Id"] != "acme-42" {
		t.Errorf("forwarded headers = %v", body["headers"])
	}
	expires, _ := body["expires_at"].(float64)
	exp, _ := strconv.ParseInt(req.Header.Get("apns-expiration"), 10, 64)
	if exp != int64(expires)/1000 {
		t.Errorf("apns-expiration %d does not match expires_at %v", exp, expires)
	}
	if d := time.UnixMilli(int64(expires)).Sub(call.sentAt); d < 3*time.Second || d > 5*time.Second {
		t.Errorf("expires_at is %s after the INVITE, want the ring deadline (4s)", d)
	}
	call.cancel()
	<-call.result
	cancelled := mock.WaitRequests(t, 2)[1]
	// Every attempt is in the push-attempt log, and stamped on the device.
	waitUntil(t, "both attempts logged", func() bool {
		attempts, err := e.store.PushAttempts(t.Context(), body["call_id"].(string))
		return err == nil && len(attempts) == 2 && attempts[0].Type == "incoming_call" &&
			attempts[0].Outcome == "delivered" && attempts[1].Type == "call_cancelled"
	})
	if devs, _ := e.store.ListDevices(t.Context(), "1001"); len(devs) != 1 || devs[0].LastPushAt.IsZero() || devs[0].LastError != "" {
		t.Errorf("device after pushes: %+v", devs)
	}
	var cb map[string]any
	json.Unmarshal(cancelled.Body, &cb)
	if cb["type"] != "call_cancelled" || cb["reason"] != "caller_hangup" || cb["call_id"] != body["call_id"] {
		t.Errorf("cancel push = %s", cancelled.Body)
	}
}

// APNs says the token is dead: the device is removed at once, and with no
// other device the call ends with 480.
func TestDeadTokenIsRemovedDuringCall(t *testing.T) {
	mock, withPush := realPush(t)
	e := newEnv(t, withPush)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	mock.RespondAll(pushtest.APNsResponse{Status: 410, Reason: "Unregistered"})
	call := newPBX(t, e).call("1001")
	if code := call.final(waitFor); code != 480 {
		t.Fatalf("PBX got %d, want 480", code)
	}
	if devs, _ := e.store.ListDevices(t.Context(), "1001"); len(devs) != 0 {
		t.Errorf("dead device kept: %+v", devs)
	}
	if mock.Pushes() != 1 {
		t.Errorf("%d pushes, want 1 (no call_cancelled to a dead token)", mock.Pushes())
	}
}
