package push_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/push/pushtest"
)

const wantAPNsBody = `{"type":"incoming_call","call_id":"5b3a1c2e-9f0d-4a8b-8c7e-2d1f0e9a6b4c",` +
	`"sip_call_id":"a84b4c76e66710@pbx.example.com","caller_name":"Alice Liddell","caller_number":"+15551230000",` +
	`"callee":"1001","sent_at":1700000000000,"expires_at":1700000030000,` +
	`"decline_url":"https://callwake.example.com/api/v1/decline/abc?sig=xyz\u0026d=7",` +
	`"registrar":"sip:1001@callwake.example.com;transport=tls","headers":{"X-Customer-Id":"42"}}`

// checkAPNsHeaders checks the headers every VoIP push must carry.
func checkAPNsHeaders(t *testing.T, got pushtest.APNsRequest, deadline time.Time) {
	t.Helper()
	want := map[string]string{
		"Apns-Push-Type":  "voip",
		"Apns-Topic":      testTopic,
		"Apns-Priority":   "10",
		"Apns-Expiration": strconv.FormatInt(deadline.Unix(), 10),
		"Content-Type":    "application/json; charset=utf-8",
	}
	for k, v := range want {
		if g := got.Header.Get(k); g != v {
			t.Errorf("header %s = %q, want %q", k, g, v)
		}
	}
	// A collapse id could fold the call_cancelled into the incoming_call
	// push, and iOS needs a CallKit report for every VoIP push.
	if h := got.Header.Get("Apns-Collapse-Id"); h != "" {
		t.Errorf("apns-collapse-id = %q, want none", h)
	}
}

func TestAPNsTokenAuthSendsExactRequest(t *testing.T) {
	env := newAPNsEnv(t, false)
	store := newFakeStore()
	opts := env.options(testOptions())
	opts.Now = fixedClock(t0)
	p, _ := newPusher(t, opts, store, nil)

	deadline := t0.Add(30 * time.Second)
	target := apnsTarget(7, push.ProviderAPNs)
	res := p.Push(context.Background(), []push.Target{target}, payloadFunc(samplePayload()), deadline)

	if r := res[0]; r.Outcome != push.OutcomeDelivered || r.Status != http.StatusOK || r.Attempts != 1 || r.Err != nil {
		t.Fatalf("result = %+v, want delivered in 1 attempt", r)
	}
	if r := res[0]; r.Target != target {
		t.Errorf("result target = %+v, want %+v", r.Target, target)
	}
	reqs := env.prod.Requests()
	if len(reqs) != 1 {
		t.Fatalf("production mock got %d pushes, want 1", len(reqs))
	}
	got := reqs[0]
	if got.Token != target.Token {
		t.Errorf("path token = %q, want %q", got.Token, target.Token)
	}
	if got.Auth != "token" || got.KeyID != env.key.KeyID || got.TeamID != env.key.TeamID {
		t.Errorf("auth = %s kid=%q iss=%q, want token auth with kid %q iss %q", got.Auth, got.KeyID, got.TeamID, env.key.KeyID, env.key.TeamID)
	}
	if !strings.HasPrefix(got.Header.Get("Authorization"), "bearer ") {
		t.Errorf("Authorization = %q, want a bearer JWT", got.Header.Get("Authorization"))
	}
	checkAPNsHeaders(t, got, deadline)
	if string(got.Body) != wantAPNsBody {
		t.Errorf("body =\n%s\nwant\n%s", got.Body, wantAPNsBody)
	}
	if n := len(env.sandbox.Requests()); n != 0 {
		t.Errorf("sandbox got %d pushes for an apns target, want 0", n)
	}
	attempts := store.Attempts()
	if len(attempts) != 1 {
		t.Fatalf("recorded %d attempts, want 1", len(attempts))
	}
	a := attempts[0]
	if a.DeviceID != 7 || a.Provider != push.ProviderAPNs || a.Type != push.TypeIncomingCall || a.CallID != callUUID ||
		a.Outcome != push.OutcomeDelivered || a.Status != 200 || !a.SentAt.Equal(t0) || a.Latency <= 0 {
		t.Errorf("attempt = %+v", a)
	}
}

func TestAPNsCertificateAuth(t *testing.T) {
	cert := pushtest.NewClientCert(t, testTopic)
	dir := t.TempDir()
	for name, file := range map[string]string{
		"pem":        cert.WritePEM(t, dir),
		"p12":        cert.WriteP12(t, dir, "s3cret"),
		"modern p12": cert.WriteModernP12(t, dir, "s3cret"),
	} {
		t.Run(name, func(t *testing.T) {
			mock := pushtest.NewAPNsMock(t, pushtest.APNsMockConfig{ClientCAs: cert.CAs})
			opts := testOptions()
			opts.Now = fixedClock(t0)
			opts.APNs = push.APNsOptions{CertFile: file, CertPassword: "s3cret", Endpoint: mock.URL, SandboxEndpoint: mock.URL, TLSConfig: mock.ClientTLS()}
			p, _ := newPusher(t, opts, newFakeStore(), nil)

			deadline := t0.Add(20 * time.Second)
			res := p.Push(context.Background(), []push.Target{apnsTarget(1, push.ProviderAPNs)}, payloadFunc(samplePayload()), deadline)
			if res[0].Outcome != push.OutcomeDelivered {
				t.Fatalf("result = %+v, want delivered", res[0])
			}
			got := mock.Requests()[0]
			if got.Auth != "certificate" || got.CertName != "Apple VoIP Services: "+testTopic {
				t.Errorf("auth = %q cert %q, want certificate auth", got.Auth, got.CertName)
			}
			if h := got.Header.Get("Authorization"); h != "" {
				t.Errorf("Authorization = %q, want none with certificate auth", h)
			}
			checkAPNsHeaders(t, got, deadline)
			if string(got.Body) != wantAPNsBody {
				t.Errorf("body =\n%s\nwant\n%s", got.Body, wantAPNsBody)
			}
		})
	}
}

func TestAPNsCertificateRefusedIsCredentialError(t *testing.T) {
	trusted := pushtest.NewClientCert(t, testTopic)
	stranger := pushtest.NewClientCert(t, testTopic) // signed by another CA
	mock := pushtest.NewAPNsMock(t, pushtest.APNsMockConfig{ClientCAs: trusted.CAs})
	reg := prometheus.NewRegistry()
	opts := testOptions()
	opts.APNs = push.APNsOptions{CertFile: stranger.WritePEM(t, t.TempDir()), Endpoint: mock.URL, SandboxEndpoint: mock.URL, TLSConfig: mock.ClientTLS()}
	p, _ := newPusher(t, opts, newFakeStore(), reg)

	deadline := time.Now().Add(5 * time.Second)
	res := p.Push(context.Background(), []push.Target{apnsTarget(1, push.ProviderAPNs)}, payloadFunc(samplePayload()), deadline)
	// With TLS 1.3 the refusal arrives after the handshake: a request that
	// raced it sees a dropped connection first, and is retried.
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Reason != "tls_refused" {
		t.Fatalf("result = %+v, want failed: tls_refused", r)
	}
	if !time.Now().Before(deadline) {
		t.Errorf("kept retrying a refused certificate until the deadline")
	}
	if h := p.Health()[push.ProviderAPNs]; h.Healthy || h.LastError == "" {
		t.Errorf("health = %+v, want unhealthy with the error", h)
	}
	if v := metricValue(t, reg, "callwake_push_credential_errors_total", map[string]string{"provider": "apns"}); v < 1 {
		t.Errorf("credential errors = %v, want ≥ 1", v)
	}
}

func TestAPNsSandboxRouting(t *testing.T) {
	env := newAPNsEnv(t, false)
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), nil)

	targets := []push.Target{apnsTarget(1, push.ProviderAPNsSandbox), apnsTarget(2, push.ProviderAPNs), apnsTarget(3, push.ProviderAPNsSandbox)}
	res := p.Push(context.Background(), targets, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	for _, r := range res {
		if r.Outcome != push.OutcomeDelivered {
			t.Fatalf("result = %+v, want delivered", r)
		}
	}
	sandboxTokens := map[string]bool{}
	for _, r := range env.sandbox.Requests() {
		sandboxTokens[r.Token] = true
	}
	if len(sandboxTokens) != 2 || !sandboxTokens[targets[0].Token] || !sandboxTokens[targets[2].Token] {
		t.Errorf("sandbox got tokens %v, want the two apns.dev targets", sandboxTokens)
	}
	prod := env.prod.Requests()
	if len(prod) != 1 || prod[0].Token != targets[1].Token {
		t.Errorf("production got %d pushes, want only the apns target", len(prod))
	}
}

func TestAPNsDeadTokensRemoveDevice(t *testing.T) {
	env := newAPNsEnv(t, false)
	store := newFakeStore()
	reg := prometheus.NewRegistry()
	p, _ := newPusher(t, env.options(testOptions()), store, reg)

	cases := []struct {
		status int
		reason string
	}{
		{http.StatusGone, "Unregistered"},
		{http.StatusGone, "ExpiredToken"},
		{http.StatusBadRequest, "BadDeviceToken"},
		{http.StatusBadRequest, "DeviceTokenNotForTopic"},
	}
	var targets []push.Target
	for i, c := range cases {
		target := apnsTarget(int64(100+i), push.ProviderAPNs)
		env.prod.Respond(target.Token, pushtest.APNsResponse{Status: c.status, Reason: c.reason})
		targets = append(targets, target)
	}
	res := p.Push(context.Background(), targets, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))

	removed := store.Removed()
	for i, c := range cases {
		r := res[i]
		if r.Outcome != push.OutcomeDeadToken || r.Reason != c.reason || r.Status != c.status || r.Attempts != 1 {
			t.Errorf("%d %s: result = %+v, want dead_token after 1 attempt", c.status, c.reason, r)
		}
		if got, ok := removed[targets[i].DeviceID]; !ok || got != c.reason {
			t.Errorf("%d %s: device removed = %v (%q), want removed with the reason", c.status, c.reason, ok, got)
		}
	}
	if v := metricValue(t, reg, "callwake_push_dead_tokens_total", map[string]string{"provider": "apns"}); v != float64(len(cases)) {
		t.Errorf("dead tokens metric = %v, want %d", v, len(cases))
	}
	if h := p.Health()[push.ProviderAPNs]; !h.Healthy {
		t.Errorf("health = %+v: dead tokens are the device's problem, not the provider's", h)
	}
}

func TestAPNsOtherRejectionFailsWithoutRemoving(t *testing.T) {
	env := newAPNsEnv(t, false)
	store := newFakeStore()
	p, _ := newPusher(t, env.options(testOptions()), store, nil)
	target := apnsTarget(1, push.ProviderAPNs)
	env.prod.Respond(target.Token, pushtest.APNsResponse{Status: http.StatusBadRequest, Reason: "TopicDisallowed"})

	res := p.Push(context.Background(), []push.Target{target}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Reason != "TopicDisallowed" || r.Attempts != 1 {
		t.Errorf("result = %+v, want failed (not retried)", r)
	}
	if len(store.Removed()) != 0 {
		t.Errorf("removed %v, want no device removed", store.Removed())
	}
}

func TestAPNsRetryableErrorsAreRetried(t *testing.T) {
	for _, first := range []pushtest.APNsResponse{
		{Status: http.StatusServiceUnavailable, Reason: "ServiceUnavailable"},
		{Status: http.StatusInternalServerError, Reason: "InternalServerError"},
		{Status: http.StatusTooManyRequests, Reason: "TooManyRequests"},
	} {
		t.Run(first.Reason, func(t *testing.T) {
			env := newAPNsEnv(t, false)
			store := newFakeStore()
			p, _ := newPusher(t, env.options(testOptions()), store, nil)
			target := apnsTarget(1, push.ProviderAPNs)
			env.prod.Respond(target.Token, first, pushtest.APNsResponse{Status: http.StatusOK})

			deadline := time.Now().Add(5 * time.Second)
			res := p.Push(context.Background(), []push.Target{target}, payloadFunc(samplePayload()), deadline)
			if r := res[0]; r.Outcome != push.OutcomeDelivered || r.Attempts != 2 || r.Status != 200 {
				t.Fatalf("result = %+v, want delivered on the 2nd attempt", r)
			}
			reqs := env.prod.Requests()
			if len(reqs) != 2 || !reqs[1].ReceivedAt.Before(deadline) {
				t.Errorf("mock got %d pushes, want 2 inside the window", len(reqs))
			}
			attempts := store.Attempts()
			if len(attempts) != 2 || attempts[0].Outcome != push.OutcomeFailed || attempts[0].Status != first.Status ||
				attempts[0].Reason != first.Reason || attempts[1].Outcome != push.OutcomeDelivered {
				t.Errorf("attempts = %+v, want the failure then the delivery", attempts)
			}
		})
	}
}

func TestAPNsKeepsFailingGivesUpAtDeadline(t *testing.T) {
	env := newAPNsEnv(t, false)
	reg := prometheus.NewRegistry()
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), reg)
	env.prod.RespondAll(pushtest.APNsResponse{Status: http.StatusServiceUnavailable, Reason: "ServiceUnavailable"})

	deadline := time.Now().Add(400 * time.Millisecond)
	res := p.Push(context.Background(), []push.Target{apnsTarget(1, push.ProviderAPNs)}, payloadFunc(samplePayload()), deadline)
	r := res[0]
	if r.Outcome != push.OutcomeFailed || r.Attempts < 2 || r.Status != http.StatusServiceUnavailable || r.Err == nil {
		t.Fatalf("result = %+v, want failed after several attempts", r)
	}
	reqs := env.prod.Requests()
	if len(reqs) != r.Attempts {
		t.Errorf("mock got %d pushes, result says %d attempts", len(reqs), r.Attempts)
	}
	for _, req := range reqs {
		if !req.ReceivedAt.Before(deadline) {
			t.Errorf("push received at %v, after the deadline %v", req.ReceivedAt, deadline)
		}
	}
	if h := p.Health()[push.ProviderAPNs]; h.Healthy || !strings.Contains(h.LastError, "503") {
		t.Errorf("health = %+v, want unhealthy after giving up", h)
	}
	if v := metricValue(t, reg, "callwake_push_send_seconds", map[string]string{"provider": "apns"}); v != float64(r.Attempts) {
		t.Errorf("send_seconds count = %v, want one per attempt (%d)", v, r.Attempts)
	}
	if v := metricValue(t, reg, "callwake_push_total", map[string]string{"provider": "apns", "type": "incoming_call", "result": "failed"}); v != 1 {
		t.Errorf("push_total failed = %v, want 1", v)
	}
}

func TestAPNsSlowProviderCutAtDeadline(t *testing.T) {
	env := newAPNsEnv(t, false)
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), nil)
	env.prod.RespondAll(pushtest.APNsResponse{Delay: time.Minute})

	deadline := time.Now().Add(300 * time.Millisecond)
	res := p.Push(context.Background(), []push.Target{apnsTarget(1, push.ProviderAPNs)}, payloadFunc(samplePayload()), deadline)
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Reason != "deadline" || r.Attempts != 1 {
		t.Fatalf("result = %+v, want failed at the deadline after 1 attempt", r)
	}
	if time.Now().After(deadline.Add(2 * time.Second)) {
		t.Errorf("Push returned long after the deadline")
	}
	// Push has returned: nothing of ours is left to send later.
	if n := env.prod.Pushes(); n != 1 {
		t.Errorf("mock got %d pushes, want 1", n)
	}
}

func TestAPNsCredentialErrorMarksUnhealthyUntilSuccess(t *testing.T) {
	env := newAPNsEnv(t, false)
	reg := prometheus.NewRegistry()
	p, logs := newPusher(t, env.options(testOptions()), newFakeStore(), reg)
	env.prod.RespondAll(
		pushtest.APNsResponse{Status: http.StatusForbidden, Reason: "InvalidProviderToken"},
		pushtest.APNsResponse{Status: http.StatusOK},
	)
	target := apnsTarget(1, push.ProviderAPNs)

	res := p.Push(context.Background(), []push.Target{target}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Reason != "InvalidProviderToken" || r.Attempts != 1 {
		t.Fatalf("result = %+v, want failed without retry", r)
	}
	h := p.Health()[push.ProviderAPNs]
	if !h.Enabled || h.Healthy || !strings.Contains(h.LastError, "InvalidProviderToken") || h.LastErrorAt.IsZero() {
		t.Errorf("health = %+v, want unhealthy with the error", h)
	}
	if v := metricValue(t, reg, "callwake_push_credential_errors_total", map[string]string{"provider": "apns"}); v != 1 {
		t.Errorf("credential errors = %v, want 1", v)
	}
	errs := logs.matching("rejected our credentials")
	if len(errs) != 1 || errs[0].Level.String() != "ERROR" {
		t.Errorf("credential error logs = %v, want one at error level", errs)
	}

	res = p.Push(context.Background(), []push.Target{target}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if res[0].Outcome != push.OutcomeDelivered {
		t.Fatalf("second result = %+v, want delivered", res[0])
	}
	if h := p.Health()[push.ProviderAPNs]; !h.Healthy {
		t.Errorf("health after success = %+v, want healthy", h)
	}
}

func TestAPNsWrongKeyIsRefused(t *testing.T) {
	env := newAPNsEnv(t, false)
	other := pushtest.WriteAPNsKey(t, t.TempDir()) // not the key the mock knows
	opts := env.options(testOptions())
	opts.APNs.KeyFile = other.Path
	p, _ := newPusher(t, opts, newFakeStore(), nil)

	res := p.Push(context.Background(), []push.Target{apnsTarget(1, push.ProviderAPNs)}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Reason != "InvalidProviderToken" || r.Status != http.StatusForbidden {
		t.Errorf("result = %+v, want 403 InvalidProviderToken", r)
	}
}

func TestAPNsWarmConnectionAtStart(t *testing.T) {
	env := newAPNsEnv(t, false)
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), nil)

	// Both connections are opened by New, before any call.
	env.prod.WaitWarmups(t, 1)
	env.sandbox.WaitWarmups(t, 1)
	if n := env.prod.Conns(); n != 1 {
		t.Fatalf("production connections after warm-up = %d, want 1", n)
	}
	for i := range 3 {
		res := p.Push(context.Background(), []push.Target{apnsTarget(int64(i), push.ProviderAPNs)}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
		if res[0].Outcome != push.OutcomeDelivered {
			t.Fatalf("result = %+v", res[0])
		}
	}
	if n := env.prod.Conns(); n != 1 {
		t.Errorf("production connections after 3 pushes = %d, want the warm one only", n)
	}
}

func TestAPNsUnreachableDoesNotFailNew(t *testing.T) {
	env := newAPNsEnv(t, false)
	opts := env.options(testOptions())
	env.prod.Close()
	p, _ := newPusher(t, opts, newFakeStore(), nil)

	res := p.Push(context.Background(), []push.Target{apnsTarget(1, push.ProviderAPNs)}, payloadFunc(samplePayload()), time.Now().Add(300*time.Millisecond))
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Attempts < 1 {
		t.Errorf("result = %+v, want failed", r)
	}
	if h := p.Health()[push.ProviderAPNs]; h.Healthy {
		t.Errorf("health = %+v, want unhealthy", h)
	}
}

func TestAPNsInvalidCredentialsFailNew(t *testing.T) {
	dir := t.TempDir()
	key := pushtest.WriteAPNsKey(t, dir)
	cert := pushtest.NewClientCert(t, testTopic)
	other := pushtest.NewClientCert(t, testTopic)
	mismatched := dir + "/mismatched.pem"
	if err := writeTestFile(mismatched, append(append([]byte{}, cert.CertPEM...), other.KeyPEM...)); err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]push.APNsOptions{
		"key without key id":      {KeyFile: key.Path, TeamID: "T"},
		"key without team id":     {KeyFile: key.Path, KeyID: "K"},
		"missing key file":        {KeyFile: dir + "/nope.p8", KeyID: "K", TeamID: "T"},
		"not a key":               {KeyFile: cert.WritePEM(t, dir), KeyID: "K", TeamID: "T"},
		"key and cert":            {KeyFile: key.Path, KeyID: "K", TeamID: "T", CertFile: cert.WritePEM(t, dir)},
		"p12 with wrong password": {CertFile: cert.WriteP12(t, dir, "right"), CertPassword: "wrong"},
		"cert with another's key": {CertFile: mismatched},
	} {
		t.Run(name, func(t *testing.T) {
			o.Endpoint, o.SandboxEndpoint = "https://127.0.0.1:1", "https://127.0.0.1:1" // never Apple, even by mistake
			p, err := push.New(push.Options{APNs: o}, nil, quietLogger, nil)
			if err == nil {
				_ = p.Close()
				t.Fatal("New succeeded, want an error")
			}
			if errors.Is(err, push.ErrDisabled) {
				t.Errorf("err = %v", err)
			}
		})
	}
}
