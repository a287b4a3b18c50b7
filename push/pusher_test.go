package push_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/push/pushtest"
)

func TestNoCredentialsDisablesAndLogs(t *testing.T) {
	store := newFakeStore()
	reg := prometheus.NewRegistry()
	p, logs := newPusher(t, push.Options{}, store, reg)

	for name, h := range p.Health() {
		if h.Enabled || h.Healthy {
			t.Errorf("health[%s] = %+v, want disabled", name, h)
		}
	}
	targets := []push.Target{apnsTarget(1, push.ProviderAPNs), apnsTarget(2, push.ProviderAPNsSandbox), fcmTarget(3)}
	for range 2 {
		res := p.Push(context.Background(), targets, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
		for _, r := range res {
			if r.Outcome != push.OutcomeDisabled || !errors.Is(r.Err, push.ErrDisabled) || r.Attempts != 0 {
				t.Errorf("result = %+v, want disabled", r)
			}
		}
	}

	if n := len(logs.matching("APNs pushes disabled")); n != 1 {
		t.Errorf("APNs disabled logged %d times, want once", n)
	}
	if n := len(logs.matching("FCM pushes disabled")); n != 1 {
		t.Errorf("FCM disabled logged %d times, want once", n)
	}
	wouldSend := logs.matching("push not sent: provider disabled")
	if len(wouldSend) != 2*len(targets) {
		t.Fatalf("would-send logs = %d, want one per push (%d)", len(wouldSend), 2*len(targets))
	}
	for _, r := range wouldSend {
		if r.Level.String() != "INFO" {
			t.Errorf("would-send log at %s, want INFO", r.Level)
		}
		provider, _ := attr(r, "provider")
		switch provider.String() {
		case push.ProviderFCM:
			if _, ok := attr(r, "data"); !ok {
				t.Errorf("FCM would-send log has no data")
			}
		default:
			if body, ok := attr(r, "body"); !ok || !strings.Contains(body.String(), `"call_id":"`+callUUID+`"`) {
				t.Errorf("APNs would-send log body = %v, want the payload", body)
			}
		}
	}
	if len(store.Attempts()) != 0 {
		t.Errorf("recorded %d attempts for disabled providers, want 0", len(store.Attempts()))
	}
	if v := metricValue(t, reg, "callwake_push_total", map[string]string{"provider": "fcm", "type": "incoming_call", "result": "disabled"}); v != 2 {
		t.Errorf("push_total disabled fcm = %v, want 2", v)
	}
}

func TestExpiredDeadlineSendsNothing(t *testing.T) {
	env := newAPNsEnv(t, false)
	fcm := newFCMEnv(t)
	store := newFakeStore()
	opts := fcm.options(env.options(testOptions()))
	now := time.Now()
	opts.Now = fixedClock(now)
	p, _ := newPusher(t, opts, store, nil)

	res := p.Push(context.Background(), []push.Target{apnsTarget(1, push.ProviderAPNs), fcmTarget(2)}, payloadFunc(samplePayload()), now)
	for _, r := range res {
		if r.Outcome != push.OutcomeExpired || r.Attempts != 0 || !errors.Is(r.Err, push.ErrExpired) {
			t.Errorf("result = %+v, want expired without a send", r)
		}
	}
	if env.prod.Pushes() != 0 || fcm.mock.Sends() != 0 || len(store.Attempts()) != 0 {
		t.Errorf("something was sent after the deadline")
	}
}

func TestFanOutIsConcurrent(t *testing.T) {
	const delay = 300 * time.Millisecond
	env := newAPNsEnv(t, false)
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), nil)
	env.prod.RespondAll(pushtest.APNsResponse{Delay: delay})
	env.prod.WaitWarmups(t, 1)

	var targets []push.Target
	for i := range 5 {
		targets = append(targets, apnsTarget(int64(i), push.ProviderAPNs))
	}
	calls := 0
	start := time.Now()
	res := p.Push(context.Background(), targets, func(push.Target) push.Payload { calls++; return samplePayload() }, time.Now().Add(10*time.Second))
	elapsed := time.Since(start)

	for i, r := range res {
		if r.Outcome != push.OutcomeDelivered || r.Target.DeviceID != int64(i) {
			t.Errorf("result %d = %+v, want delivered, in target order", i, r)
		}
	}
	if calls != len(targets) {
		t.Errorf("payloadFor called %d times, want once per target", calls)
	}
	if elapsed >= 3*delay {
		t.Errorf("5 pushes with %v provider delay took %v: not concurrent", delay, elapsed)
	}
}

func TestSlowProviderDoesNotDelayOthers(t *testing.T) {
	apns := newAPNsEnv(t, false)
	fcm := newFCMEnv(t)
	p, _ := newPusher(t, fcm.options(apns.options(testOptions())), newFakeStore(), nil)
	fcm.mock.RespondAll(pushtest.FCMResponse{Delay: time.Minute})

	deadline := time.Now().Add(time.Second)
	res := p.Push(context.Background(), []push.Target{fcmTarget(1), apnsTarget(2, push.ProviderAPNs)}, payloadFunc(samplePayload()), deadline)
	if r := res[0]; r.Outcome != push.OutcomeFailed || r.Reason != "deadline" {
		t.Errorf("FCM result = %+v, want failed at the deadline", r)
	}
	if r := res[1]; r.Outcome != push.OutcomeDelivered || r.Latency >= 500*time.Millisecond {
		t.Errorf("APNs result = %+v, want delivered without waiting for FCM", r)
	}
}

func TestCancelledCallStopsRetrying(t *testing.T) {
	env := newAPNsEnv(t, false)
	store := newFakeStore()
	store.attempted = make(chan push.Attempt, 100)
	p, _ := newPusher(t, env.options(testOptions()), store, nil)
	env.prod.RespondAll(pushtest.APNsResponse{Status: 503, Reason: "ServiceUnavailable"})
	target := apnsTarget(1, push.ProviderAPNs)

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-store.attempted
		<-store.attempted // retrying: the call ends now
		cancel()
	}()
	res := p.Push(ctx, []push.Target{target}, payloadFunc(samplePayload()), time.Now().Add(time.Minute))
	if r := res[0]; r.Outcome != push.OutcomeFailed || !errors.Is(r.Err, context.Canceled) {
		t.Errorf("result = %+v, want failed with context.Canceled", r)
	}
	if h := p.Health()[push.ProviderAPNs]; !h.Healthy {
		t.Errorf("health = %+v: a cancelled call says nothing about the provider", h)
	}
}

func TestUnknownProvider(t *testing.T) {
	p, _ := newPusher(t, push.Options{}, newFakeStore(), nil)
	res := p.Push(context.Background(), []push.Target{{DeviceID: 1, Provider: "webpush", Token: "x"}}, payloadFunc(samplePayload()), time.Now().Add(time.Second))
	if r := res[0]; r.Outcome != push.OutcomeFailed || !errors.Is(r.Err, push.ErrUnknownProvider) {
		t.Errorf("result = %+v, want failed: unknown provider", r)
	}
}

func TestCloseIsIdempotentAndStopsPushes(t *testing.T) {
	env := newAPNsEnv(t, false)
	p, err := push.New(env.options(testOptions()), nil, quietLogger, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	res := p.Push(context.Background(), []push.Target{apnsTarget(1, push.ProviderAPNs)}, payloadFunc(samplePayload()), time.Now().Add(time.Second))
	if r := res[0]; r.Outcome != push.OutcomeFailed || !errors.Is(r.Err, push.ErrClosed) {
		t.Errorf("result = %+v, want ErrClosed", r)
	}
}

func TestMetricsRegisterOnceAndCount(t *testing.T) {
	env := newAPNsEnv(t, false)
	reg := prometheus.NewRegistry()
	p, _ := newPusher(t, env.options(testOptions()), newFakeStore(), reg)
	res := p.Push(context.Background(), []push.Target{apnsTarget(1, push.ProviderAPNs)}, payloadFunc(samplePayload()), time.Now().Add(5*time.Second))
	if res[0].Outcome != push.OutcomeDelivered {
		t.Fatalf("result = %+v", res[0])
	}
	if v := metricValue(t, reg, "callwake_push_total", map[string]string{"provider": "apns", "type": "incoming_call", "result": "delivered"}); v != 1 {
		t.Errorf("push_total delivered = %v, want 1", v)
	}
	if v := metricValue(t, reg, "callwake_push_send_seconds", map[string]string{"provider": "apns"}); v != 1 {
		t.Errorf("send_seconds count = %v, want 1", v)
	}
	// A second Pusher on the same registry is a wiring mistake.
	if _, err := push.New(push.Options{}, nil, quietLogger, reg); err == nil {
		t.Errorf("New on a registry that has the metrics: want an error")
	}
}
