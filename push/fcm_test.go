package push_test

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/push/pushtest"
)

func TestFCMSendsExactMessage(t *testing.T) {
	env := newFCMEnv(t)
	store := newFakeStore()
	opts := env.options(testOptions())
	opts.Now = fixedClock(t0)
	p, _ := newPusher(t, opts, store, nil)

	payload := samplePayload()
	payload.Test = true
	target := fcmTarget(9)
	res := p.Push(context.Background(), []push.Target{target}, payloadFunc(payload), t0.Add(30*time.Second))
	if r := res[0]; r.Outcome != push.OutcomeDelivered || r.Status != http.StatusOK || r.Attempts != 1 {
		t.Fatalf("result = %+v, want delivered in 1 attempt", r)
	}

	reqs := env.mock.Requests()
	if len(reqs) != 1 {
		t.Fatalf("mock got %d messages, want 1", len(reqs))
	}
	got := reqs[0]
	if got.ProjectID != testProject {
		t.Errorf("project = %q, want %q", got.ProjectID, testProject)
	}
	if h := got.Header.Get("Authorization"); !strings.HasPrefix(h, "Bearer ya29.pushtest-") {
		t.Errorf("Authorization = %q, want the token the service account got", h)
	}
	msg := got.Message
	slices.Sort(msg.Keys)
	if !slices.Equal(msg.Keys, []string{"android", "data", "token"}) {
		t.Errorf("message keys = %v, want data-only: android, data, token", msg.Keys)
	}
	if msg.Token != target.Token {
		t.Errorf("token = %q, want %q", msg.Token, target.Token)
	}
	if msg.Android == nil || msg.Android.Priority != "high" || msg.Android.TTL != "30s" {
		t.Errorf("android = %+v, want priority high, ttl 30s", msg.Android)
	}
	want := map[string]string{
		"type":          "incoming_call",
		"call_id":       callUUID,
		"sip_call_id":   "a84b4c76e66710@pbx.example.com",
		"caller_name":   "Alice Liddell",
		"caller_number": "+15551230000",
		"callee":        "1001",
		"sent_at":       "1700000000000",
		"expires_at":    "1700000030000",
		"decline_url":   "https://callwake.example.com/api/v1/decline/abc?sig=xyz&d=7",
		"registrar":     "sip:1001@callwake.example.com;transport=tls",
		"headers":       `{"X-Customer-Id":"42"}`,
		"test":          "true",
	}
	if !maps.Equal(msg.Data, want) {
		t.Errorf("data =\n%v\nwant\n%v", msg.Data, want)
	}
	if a := store.Attempts(); len(a) != 1 || a[0].Provider != push.ProviderFCM || a[0].Outcome != push.OutcomeDelivered {
		t.Errorf("attempts = %+v", a)
	}
}

func TestFCMCancelPushCarriesReason(t *testing.T) {
	env := newFCMEnv(t)
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), nil)
	payload := samplePayload()
	payload.Type, payload.Reason = push.TypeCallCancelled, push.ReasonAnsweredElsewhere

	res := p.Push(context.Background(), []push.Target{fcmTarget(1)}, payloadFunc(payload), time.Now().Add(5*time.Second))
	if res[0].Outcome != push.OutcomeDelivered {
		t.Fatalf("result = %+v", res[0])
	}
	data := env.mock.Requests()[0].Message.Data
	if data["type"] != "call_cancelled" || data["reason"] != "answered_elsewhere" {
		t.Errorf("data = %v, want type call_cancelled with reason", data)
	}
}

func TestFCMDeadTokensRemoveDevice(t *testing.T) {
	env := newFCMEnv(t)
	store := newFakeStore()
	reg := prometheus.NewRegistry()
	p, _ := newPusher(t, env.options(testOptions()), store, reg)

	cases := []struct {
		name   string
		answer pushtest.FCMResponse
		reason string
	}{
		{"unregistered", pushtest.FCMResponse{Code: 404, ErrorCode: "UNREGISTERED", Message: "Requested entity was not found."}, "UNREGISTERED"},
		{"sender id mismatch", pushtest.FCMResponse{Code: 403, ErrorCode: "SENDER_ID_MISMATCH", Message: "SenderId mismatch"}, "SENDER_ID_MISMATCH"},
		{"invalid token field", pushtest.FCMResponse{Code: 400, ErrorCode: "INVALID_ARGUMENT", Message: "Invalid argument", FieldViolation: "message.token"}, "INVALID_ARGUMENT"},
		{"invalid token message", pushtest.FCMResponse{Code: 400, ErrorCode: "INVALID_ARGUMENT", Message: "The registration token is not a valid FCM registration token"}, "INVALID_ARGUMENT"},
	}
	var targets []push.Target
	for i, c := range cases {
		target := fcmTarget(int64(200 + i))
		env.mock.Respond(target.Token, c.answer)
		targets = append(targets, target)
	}
	res := p.Push(context.Background(), targets, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))

	removed := store.Removed()
	for i, c := range cases {
		r := res[i]
		if r.Outcome != push.OutcomeDeadToken || r.Reason != c.reason || r.Status != c.answer.Code || r.Attempts != 1 {
			t.Errorf("%s: result = %+v, want dead_token %s", c.name, r, c.reason)
		}
		if got, ok := removed[targets[i].DeviceID]; !ok || got != c.reason {
			t.Errorf("%s: device removed = %v (%q), want removed", c.name, ok, got)
		}
	}
	if v := metricValue(t, reg, "callwake_push_dead_tokens_total", map[string]string{"provider": "fcm"}); v != float64(len(cases)) {
		t.Errorf("dead tokens metric = %v, want %d", v, len(cases))
	}
}

func TestFCMInvalidArgumentNotAboutTokenKeepsDevice(t *testing.T) {
	env := newFCMEnv(t)
	store := newFakeStore()
	p, _ := newPusher(t, env.options(testOptions()), store, nil)
	target := fcmTarget(1)
	env.mock.Respond(target.Token, pushtest.FCMResponse{Code: 400, ErrorCode: "INVALID_ARGUMENT", Message: "Invalid value at 'message.data[0].value'"})

	res := p.Push(context.Background(), []push.Target{target}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Attempts != 1 || r.Reason != "INVALID_ARGUMENT" {
		t.Errorf("result = %+v, want failed, not retried", r)
	}
	if len(store.Removed()) != 0 {
		t.Errorf("removed = %v, want none", store.Removed())
	}
}

func TestFCMRetryableErrorsAreRetried(t *testing.T) {
	for _, first := range []pushtest.FCMResponse{
		// firebase-admin retries a 503 itself; both requests are recorded.
		{Code: 503, ErrorCode: "UNAVAILABLE", Message: "The service is currently unavailable."},
		{Code: 500, ErrorCode: "INTERNAL", Message: "Internal error"},
		{Code: 429, ErrorCode: "QUOTA_EXCEEDED", Message: "Quota exceeded"},
	} {
		t.Run(first.ErrorCode, func(t *testing.T) {
			env := newFCMEnv(t)
			store := newFakeStore()
			p, _ := newPusher(t, env.options(testOptions()), store, nil)
			target := fcmTarget(1)
			env.mock.Respond(target.Token, first, pushtest.FCMResponse{})

			deadline := time.Now().Add(5 * time.Second)
			res := p.Push(context.Background(), []push.Target{target}, payloadFunc(samplePayload()), deadline)
			if r := res[0]; r.Outcome != push.OutcomeDelivered || r.Attempts != 2 {
				t.Fatalf("result = %+v, want delivered on the 2nd attempt", r)
			}
			reqs := env.mock.Requests()
			if len(reqs) != 2 || !reqs[1].ReceivedAt.Before(deadline) {
				t.Errorf("mock got %d messages, want 2 inside the window", len(reqs))
			}
			attempts := store.Attempts()
			if len(attempts) != 2 || attempts[0].Outcome != push.OutcomeFailed || attempts[0].Status != first.Code ||
				attempts[1].Outcome != push.OutcomeDelivered || attempts[0].Latency <= 0 {
				t.Errorf("attempts = %+v, want the failure then the delivery", attempts)
			}
		})
	}
}

func TestFCMRetryAfterPastDeadlineGivesUpAtOnce(t *testing.T) {
	env := newFCMEnv(t)
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), nil)
	env.mock.RespondAll(pushtest.FCMResponse{Code: 429, ErrorCode: "QUOTA_EXCEEDED", RetryAfter: "60"})

	deadline := time.Now().Add(3 * time.Second)
	res := p.Push(context.Background(), []push.Target{fcmTarget(1)}, payloadFunc(samplePayload()), deadline)
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Attempts != 1 || r.Reason != "QUOTA_EXCEEDED" {
		t.Fatalf("result = %+v, want failed after 1 attempt", r)
	}
	if !time.Now().Before(deadline) {
		t.Errorf("Push waited for the deadline although the retry could never fit in the window")
	}
}

func TestFCMKeepsFailingGivesUpAtDeadline(t *testing.T) {
	env := newFCMEnv(t)
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), nil)
	env.mock.RespondAll(pushtest.FCMResponse{Code: 500, ErrorCode: "INTERNAL"})

	deadline := time.Now().Add(400 * time.Millisecond)
	res := p.Push(context.Background(), []push.Target{fcmTarget(1)}, payloadFunc(samplePayload()), deadline)
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Attempts < 2 {
		t.Fatalf("result = %+v, want failed after several attempts", r)
	}
	for _, req := range env.mock.Requests() {
		if !req.ReceivedAt.Before(deadline) {
			t.Errorf("message received at %v, after the deadline %v", req.ReceivedAt, deadline)
		}
	}
}

func TestFCMCredentialErrorMarksUnhealthyUntilSuccess(t *testing.T) {
	env := newFCMEnv(t)
	reg := prometheus.NewRegistry()
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), reg)
	env.mock.RespondAll(pushtest.FCMResponse{Code: 401, Message: "Request had invalid authentication credentials."}, pushtest.FCMResponse{})

	res := p.Push(context.Background(), []push.Target{fcmTarget(1)}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Reason != "UNAUTHENTICATED" || r.Attempts != 1 {
		t.Fatalf("result = %+v, want failed UNAUTHENTICATED, not retried", r)
	}
	if h := p.Health()[push.ProviderFCM]; h.Healthy || !strings.Contains(h.LastError, "UNAUTHENTICATED") {
		t.Errorf("health = %+v, want unhealthy", h)
	}
	if v := metricValue(t, reg, "callwake_push_credential_errors_total", map[string]string{"provider": "fcm"}); v != 1 {
		t.Errorf("credential errors = %v, want 1", v)
	}
	res = p.Push(context.Background(), []push.Target{fcmTarget(1)}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if res[0].Outcome != push.OutcomeDelivered {
		t.Fatalf("second result = %+v, want delivered", res[0])
	}
	if h := p.Health()[push.ProviderFCM]; !h.Healthy {
		t.Errorf("health after success = %+v, want healthy", h)
	}
}

func TestFCMTokenEndpointRefusal(t *testing.T) {
	env := newFCMEnv(t)
	env.mock.FailTokens(http.StatusBadRequest)
	reg := prometheus.NewRegistry()
	p, logs := newPusher(t, env.options(testOptions()), newFakeStore(), reg)

	res := p.Push(context.Background(), []push.Target{fcmTarget(1)}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Reason != "token_fetch" || r.Attempts != 1 {
		t.Fatalf("result = %+v, want failed at the token fetch", r)
	}
	if n := env.mock.Sends(); n != 0 {
		t.Errorf("mock got %d messages without a token, want 0", n)
	}
	if h := p.Health()[push.ProviderFCM]; h.Healthy {
		t.Errorf("health = %+v, want unhealthy", h)
	}
	if len(logs.matching("rejected our credentials")) == 0 {
		t.Errorf("no error logged for the refused credentials")
	}

	env.mock.FailTokens(0)
	res = p.Push(context.Background(), []push.Target{fcmTarget(1)}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if res[0].Outcome != push.OutcomeDelivered {
		t.Fatalf("after the key works again: result = %+v, want delivered", res[0])
	}
	if h := p.Health()[push.ProviderFCM]; !h.Healthy {
		t.Errorf("health = %+v, want healthy again", h)
	}
}

func TestFCMWarmAtStart(t *testing.T) {
	env := newFCMEnv(t)
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), nil)

	// New fetches the access token and opens the connection.
	env.mock.WaitDryRuns(t, 1)
	if n := env.mock.TokenRequests(); n != 1 {
		t.Errorf("token requests after warm-up = %d, want 1", n)
	}
	conns := env.mock.Conns()
	for i := range 3 {
		res := p.Push(context.Background(), []push.Target{fcmTarget(int64(i))}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
		if res[0].Outcome != push.OutcomeDelivered {
			t.Fatalf("result = %+v", res[0])
		}
	}
	if n := env.mock.Conns(); n != conns {
		t.Errorf("connections went from %d to %d: pushes did not reuse the warm one", conns, n)
	}
	if n := env.mock.TokenRequests(); n != 1 {
		t.Errorf("token requests = %d, want the warm token reused", n)
	}
}

func TestFCMStaticTokenSourceAndProjectFallback(t *testing.T) {
	mock := pushtest.NewFCMMock(t, pushtest.FCMMockConfig{ProjectID: testProject, StaticTokens: []string{"static-token"}})
	opts := testOptions()
	opts.FCM = push.FCMOptions{
		ProjectID:   testProject,
		Endpoint:    mock.Endpoint(),
		TLSConfig:   mock.ClientTLS(),
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "static-token"}),
	}
	p, _ := newPusher(t, opts, newFakeStore(), nil)
	target := fcmTarget(1)
	target.ProjectID = ""

	res := p.Push(context.Background(), []push.Target{target}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if res[0].Outcome != push.OutcomeDelivered {
		t.Fatalf("result = %+v, want delivered", res[0])
	}
	got := mock.Requests()[0]
	if got.ProjectID != testProject || got.Header.Get("Authorization") != "Bearer static-token" {
		t.Errorf("project %q, Authorization %q", got.ProjectID, got.Header.Get("Authorization"))
	}
}

func TestFCMInvalidCredentialsFailNew(t *testing.T) {
	dir := t.TempDir()
	notSA := filepath.Join(dir, "user.json")
	if err := os.WriteFile(notSA, []byte(`{"type":"authorized_user","client_id":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.json")
	if err := os.WriteFile(garbage, []byte(`not json`), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]push.FCMOptions{
		"missing file":          {CredentialsFile: filepath.Join(dir, "nope.json")},
		"not a service account": {CredentialsFile: notSA},
		"not json":              {CredentialsFile: garbage},
		"token without project": {TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"})},
	} {
		t.Run(name, func(t *testing.T) {
			o.Endpoint = "https://127.0.0.1:1/v1" // never Google, even by mistake
			p, err := push.New(push.Options{FCM: o}, nil, quietLogger, nil)
			if err == nil {
				_ = p.Close()
				t.Fatal("New succeeded, want an error")
			}
		})
	}
}

func TestFCMDataHeadersIsJSONString(t *testing.T) {
	payload := samplePayload()
	payload.Headers = map[string]string{"X-A": `quote " and \ backslash`, "X-B": "é"}
	data := push.FCMData(payload)
	var headers map[string]string
	if err := json.Unmarshal([]byte(data["headers"]), &headers); err != nil {
		t.Fatalf("headers %q is not JSON: %v", data["headers"], err)
	}
	if !maps.Equal(headers, payload.Headers) {
		t.Errorf("headers = %v, want %v", headers, payload.Headers)
	}
}
