package bridge_test

import (
	"context"
	"testing"

	"github.com/callwake/callwake/bridge"
	"github.com/callwake/callwake/sip"
)

// BenchmarkCall runs the load test's flow, one call at a time, in process:
// the PBX's INVITE, a push (delivered at once), the phone's REGISTER
// (digest), the INVITE to the phone, its answer, the PBX's ACK and BYE. B/op and
// allocs/op count the whole process, the test's PBX and phone included:
// compare them between versions of callwake, not with the load test's
// figures.
func BenchmarkCall(b *testing.B) {
	e := newEnv(b, func(c *bridge.Config, s *sip.ServiceConfig) { c.Pusher = deliveredPusher{} })
	e.addExtension("1001")
	e.addDevice("1001", 1)
	p := newPBX(b, e)
	ph := newPhone(b, e, "1001", "udp")

	call := func() {
		c := p.call("1001", sipgoHeader("X-Customer-Id", "cust-42"))
		c.expect(180)
		if code := ph.register(pushParams(1), 3600); code != 200 {
			b.Fatalf("REGISTER: %d", code)
		}
		ph.ring().answer(b)
		if code := c.final(waitFor); code != 200 {
			b.Fatalf("PBX got %d", code)
		}
		if err := c.sess.Ack(context.Background()); err != nil {
			b.Fatal(err)
		}
		if err := c.sess.Bye(context.Background()); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := e.bridge.Wait(ctx); err != nil {
			b.Fatal("call did not end after the BYE")
		}
		c.cancel()
		c.sess.Close()
	}
	call() // warm-up: connections, pools, the store's statements
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		call()
	}
}
