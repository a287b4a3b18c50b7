package push_test

import (
	"context"
	"testing"
	"time"

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
