package bridge_test

import (
	"testing"
	"time"

	"github.com/callwake/callwake/push"
)

// The whole point: the app is asleep, the push wakes it, it registers, gets
// the call, answers, and the PBX hangs up.
func TestPushWakeRegisterAnswer(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	p := newPBX(t, e)
	phone := newPhone(t, e, "1001", "udp")

	call := p.call("1001")
	call.expect(100)
	ringing := call.expect(180)
	if d := time.Since(call.sentAt); d > time.Second {
		t.Errorf("180 after %s", d)
	}
	_ = ringing
	pu := e.pusher.next(t, push.TypeIncomingCall)
	if pu.payload.Callee != "1001" || pu.payload.CallerNumber != "+15551234" || pu.payload.CallerName != "Alice Caller" {
		t.Errorf("payload = %+v", pu.payload)
	}
	if status := phone.register(pushParams(1), 600); status != 200 {
		t.Fatalf("REGISTER = %d", status)
	}
	in := phone.ring()
	if got := in.req.GetHeader("X-Callwake-Call-ID"); got == nil || got.Value() != pu.payload.CallID {
		t.Errorf("X-Callwake-Call-ID = %v, want %s", got, pu.payload.CallID)
	}
	in.respond(180, "Ringing")
	in.answer(t)
	if code := call.final(waitFor); code != 200 {
		t.Fatalf("PBX got %d", code)
	}
	if err := call.sess.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	if string(call.sess.InviteResponse.Body()) != phoneSDP {
		t.Errorf("PBX got SDP %q", call.sess.InviteResponse.Body())
	}
	if err := call.sess.Bye(t.Context()); err != nil {
		t.Fatalf("BYE from PBX: %v", err)
	}
	select {
	case <-phone.byes:
	case <-time.After(waitFor):
		t.Fatal("phone never got the BYE")
	}
	c := e.waitOutcome(t, "completed")
	if c.Status != 200 || c.AnsweredBy == 0 || c.AnswerAt.IsZero() || c.FirstRegisterAt.IsZero() {
		t.Errorf("call log = %+v", c)
	}
}
