package push_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/callwake/callwake/internal/logging"
	"github.com/callwake/callwake/push"
)

// BenchmarkAPNsPush measures pushes per second through one APNs client
// (token auth, one warm HTTP/2 connection) into the local mock, with many
// pushes in flight. The mock runs in the same process, on the same cores.
func BenchmarkAPNsPush(b *testing.B) {
	env := newAPNsEnv(b, true)
	p, err := push.New(env.options(push.Options{}), nil, quietLogger, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	env.prod.WaitWarmups(b, 1)
	payload := payloadFunc(samplePayload())

	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		targets := []push.Target{apnsTarget(1, push.ProviderAPNs)}
		for pb.Next() {
			res := p.Push(context.Background(), targets, payload, time.Now().Add(10*time.Second))
			if res[0].Outcome != push.OutcomeDelivered {
				b.Errorf("result = %+v", res[0])
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
}

// BenchmarkAPNsIncomingCall measures the allocations of one incoming-call
// push to one APNs device, one push at a time, as a call makes it: the
// payload with its decline URL, one request to the local mock, the attempt
// recorded, the outcome logged at info level (the service's level, so that
// debug lines cost what they cost there). B/op counts the mock's side too.
func BenchmarkAPNsIncomingCall(b *testing.B) {
	env := newAPNsEnv(b, true)
	logger := slog.New(logging.Lazy(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})))
	p, err := push.New(env.options(push.Options{}), nil, logger, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	env.prod.WaitWarmups(b, 1)
	base := samplePayload()
	payloadFor := func(t push.Target) push.Payload {
		pl := base
		pl.DeclineURL = fmt.Sprintf("https://callwake.example.com/api/v1/decline/%s?d=%d&sig=xyz", pl.CallID, t.DeviceID)
		return pl
	}
	targets := []push.Target{apnsTarget(1, push.ProviderAPNs)}

	b.ReportAllocs()
	for b.Loop() {
		res := p.Push(context.Background(), targets, payloadFor, time.Now().Add(10*time.Second))
		if res[0].Outcome != push.OutcomeDelivered {
			b.Fatalf("result = %+v", res[0])
		}
	}
}

// BenchmarkAPNsBody measures encoding an incoming-call body.
func BenchmarkAPNsBody(b *testing.B) {
	pl := samplePayload()
	b.ReportAllocs()
	for b.Loop() {
		_ = push.APNsBody(pl)
	}
}
