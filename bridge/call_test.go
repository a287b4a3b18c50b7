package bridge_test

import (
	"strings"
	"testing"
	"time"

	sipgosip "github.com/emiago/sipgo/sip"

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

// answered sets up a call that the phone has answered and the PBX has
// acknowledged.
func answered(t *testing.T, e *env) (*pbxCall, *phone, *incoming) {
	t.Helper()
	p := newPBX(t, e)
	ph := newPhone(t, e, "1001", "udp")
	call := p.call("1001")
	e.pusher.next(t, push.TypeIncomingCall)
	if status := ph.register(pushParams(1), 600); status != 200 {
		t.Fatalf("REGISTER = %d", status)
	}
	in := ph.ring()
	in.answer(t)
	if code := call.final(waitFor); code != 200 {
		t.Fatalf("PBX got %d", code)
	}
	if err := call.sess.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	return call, ph, in
}

func TestByeFromPhoneReachesPBX(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	call, _, in := answered(t, e)
	if err := in.sess.Bye(t.Context()); err != nil {
		t.Fatalf("BYE from phone: %v", err)
	}
	select {
	case req := <-call.pbx.requests:
		if req.Method != "BYE" {
			t.Fatalf("PBX got %s, want BYE", req.Method)
		}
	case <-time.After(waitFor):
		t.Fatal("PBX never got the BYE")
	}
	e.waitOutcome(t, "completed")
}

// A re-INVITE (hold) from the PBX and INFO (DTMF) both ways are relayed with
// each dialog's own Call-ID and CSeq.
func TestInDialogRequestsAreRelayed(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	call, ph, in := answered(t, e)

	hold := sipgosip.NewRequest(sipgosip.INVITE, call.sess.InviteResponse.Contact().Address)
	hold.SetBody([]byte(strings.Replace(pbxSDP, "m=audio", "a=sendonly\r\nm=audio", 1)))
	hold.AppendHeader(sipgosip.NewHeader("Content-Type", "application/sdp"))
	res, err := call.sess.Do(t.Context(), hold)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v %v", res, err)
	}
	if string(res.Body()) != phoneSDP {
		t.Errorf("re-INVITE answer SDP = %q", res.Body())
	}
	ack := sipgosip.NewRequest(sipgosip.ACK, res.Contact().Address)
	ack.SetBody(nil)
	call.sess.WriteAck(t.Context(), ack)
	got := <-ph.infos
	if got.Method != "INVITE" || !strings.Contains(string(got.Body()), "sendonly") {
		t.Errorf("phone got %s %q", got.Method, got.Body())
	}
	if got.CallID().Value() != in.req.CallID().Value() || got.CallID().Value() == call.sess.InviteRequest.CallID().Value() {
		t.Errorf("re-INVITE on the wrong dialog: Call-ID %s", got.CallID().Value())
	}

	dtmf := sipgosip.NewRequest(sipgosip.INFO, call.sess.InviteResponse.Contact().Address)
	dtmf.SetBody([]byte("Signal=5\r\nDuration=160\r\n"))
	dtmf.AppendHeader(sipgosip.NewHeader("Content-Type", "application/dtmf-relay"))
	if res, err := call.sess.Do(t.Context(), dtmf); err != nil || res.StatusCode != 200 {
		t.Fatalf("INFO from PBX: %v %v", res, err)
	}
	got = <-ph.infos
	if got.Method != "INFO" || string(got.Body()) != "Signal=5\r\nDuration=160\r\n" ||
		got.GetHeader("Content-Type").Value() != "application/dtmf-relay" {
		t.Errorf("phone got %s %q", got.Method, got.Body())
	}

	info := sipgosip.NewRequest(sipgosip.INFO, in.req.Contact().Address)
	info.SetBody([]byte("Signal=#\r\n"))
	info.AppendHeader(sipgosip.NewHeader("Content-Type", "application/dtmf-relay"))
	if res, err := in.sess.Do(t.Context(), info); err != nil || res.StatusCode != 200 {
		t.Fatalf("INFO from phone: %v %v", res, err)
	}
	select {
	case got := <-call.pbx.requests:
		if got.Method != "INFO" || string(got.Body()) != "Signal=#\r\n" {
			t.Errorf("PBX got %s %q", got.Method, got.Body())
		}
	case <-time.After(waitFor):
		t.Fatal("PBX never got the INFO")
	}
	call.sess.Bye(t.Context())
	e.waitOutcome(t, "completed")
}

func TestRequestOutsideAnyDialogGets481(t *testing.T) {
	e := newEnv(t)
	p := newPBX(t, e)
	host, port := hostPort(t, e.udpAddr)
	bye := sipgosip.NewRequest(sipgosip.BYE, sipgosip.Uri{Scheme: "sip", User: "1001", Host: host, Port: port})
	toParams := sipgosip.NewParams()
	toParams.Add("tag", "nosuchtag")
	bye.AppendHeader(&sipgosip.ToHeader{Address: sipgosip.Uri{Scheme: "sip", User: "1001", Host: host}, Params: toParams})
	res, err := p.client.Do(t.Context(), bye)
	if err != nil || res.StatusCode != 481 {
		t.Fatalf("stray BYE = %v, %v; want 481", res, err)
	}
}

// Two phones ring; the second answers; the first gets CANCEL with the
// Reason header and a call_cancelled push.
func TestSecondDeviceAnswersFirstIsCancelled(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	d1 := e.addDevice("1001", 1)
	d2 := e.addDevice("1001", 2)
	p := newPBX(t, e)
	ph1 := newPhone(t, e, "1001", "udp")
	ph2 := newPhone(t, e, "1001", "udp")
	call := p.call("1001")
	pushedTo := map[int64]string{}
	for i := 0; i < 2; i++ {
		pu := e.pusher.next(t, push.TypeIncomingCall)
		pushedTo[pu.target.DeviceID] = pu.payload.CallID
	}
	if len(pushedTo) != 2 || pushedTo[d1.ID] == "" || pushedTo[d1.ID] != pushedTo[d2.ID] {
		t.Fatalf("pushes = %v", pushedTo)
	}
	ph1.register(pushParams(1), 600)
	in1 := ph1.ring()
	in1.respond(180, "Ringing")
	ph2.register(pushParams(2), 600)
	in2 := ph2.ring()
	in2.answer(t)
	if code := call.final(waitFor); code != 200 {
		t.Fatalf("PBX got %d", code)
	}
	call.sess.Ack(t.Context())
	cancel := in1.waitCancelled(t)
	if r := cancel.GetHeader("Reason"); r == nil || r.Value() != `SIP;cause=200;text="Call completed elsewhere"` {
		t.Errorf("CANCEL Reason = %v", r)
	}
	cp := e.pusher.next(t, push.TypeCallCancelled)
	if cp.target.DeviceID != d1.ID || cp.payload.Reason != push.ReasonAnsweredElsewhere || cp.payload.CallID != pushedTo[d1.ID] {
		t.Errorf("call_cancelled = %+v to %d", cp.payload, cp.target.DeviceID)
	}
	e.pusher.none(t, push.TypeCallCancelled, 200*time.Millisecond)
	call.sess.Bye(t.Context())
	c := e.waitOutcome(t, "completed")
	if c.AnsweredBy != d2.ID {
		t.Errorf("answered_by = %d, want %d", c.AnsweredBy, d2.ID)
	}
}

// A Linphone REGISTER with its multi-token form wakes the call.
func TestLinphoneStyleRegister(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	d := e.addDevice("1001", 1)
	p := newPBX(t, e)
	ph := newPhone(t, e, "1001", "udp")
	call := p.call("1001")
	e.pusher.next(t, push.TypeIncomingCall)
	status := ph.register(map[string]string{
		"pn-provider":   "apns",
		"pn-param":      "ABCD1234.org.linphone.phone.voip&remote",
		"pn-prid":       apnsToken(1) + ":voip&" + apnsToken(99) + ":remote",
		"+sip.instance": `"<urn:uuid:0e2a1c2e-8f5d-4b3c-9c55-7a4b0c7b1a11>"`,
	}, 3600)
	if status != 200 {
		t.Fatalf("REGISTER = %d", status)
	}
	in := ph.ring()
	in.answer(t)
	if code := call.final(waitFor); code != 200 {
		t.Fatalf("PBX got %d", code)
	}
	call.sess.Ack(t.Context())
	call.sess.Bye(t.Context())
	if c := e.waitOutcome(t, "completed"); c.AnsweredBy != d.ID {
		t.Errorf("answered_by = %d, want device %d", c.AnsweredBy, d.ID)
	}
	devs, _ := e.store.ListDevices(t.Context(), "1001")
	if len(devs) != 1 || devs[0].Topic != "org.linphone.phone.voip" || devs[0].Instance == "" {
		t.Errorf("devices = %+v", devs)
	}
}

// A phone that retries its REGISTER three times while the call rings gets
// one INVITE, not three.
func TestRegisterRetriesGiveOneInvite(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	p := newPBX(t, e)
	ph := newPhone(t, e, "1001", "udp")
	call := p.call("1001")
	e.pusher.next(t, push.TypeIncomingCall)
	for i := 0; i < 3; i++ {
		if status := ph.register(pushParams(1), 600); status != 200 {
			t.Fatalf("REGISTER %d = %d", i, status)
		}
	}
	in := ph.ring()
	ph.silent(300 * time.Millisecond)
	in.respond(486, "Busy Here")
	if code := call.final(waitFor); code != 486 {
		t.Fatalf("PBX got %d, want 486", code)
	}
	e.waitOutcome(t, "busy")
}

// A phone's 183 with SDP (early media) reaches the PBX with that SDP.
func TestEarlyMediaIsRelayed(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	ph := newPhone(t, e, "1001", "udp")
	call := newPBX(t, e).call("1001")
	e.pusher.next(t, push.TypeIncomingCall)
	ph.register(pushParams(1), 600)
	in := ph.ring()
	in.sess.Respond(183, "Session Progress", []byte(phoneSDP), sipgosip.NewHeader("Content-Type", "application/sdp"))
	progress := call.expect(183)
	if string(progress.Body()) != phoneSDP {
		t.Errorf("183 SDP = %q", progress.Body())
	}
	in.respond(480, "Temporarily Unavailable")
	if code := call.final(waitFor); code == 200 {
		t.Fatal("call answered")
	}
}

func toTag(r *sipgosip.Response) string {
	tag, _ := r.To().Params.Get("tag")
	return tag
}

// Every response to the PBX's INVITE carries the same To tag (RFC 3261
// 8.2.6.2): otherwise the PBX sees the 180 and the 200 as two dialogs.
func TestOneToTagForEveryResponse(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	call, _, _ := answered(t, e)
	ringing := call.expect(180)
	if toTag(ringing) == "" || toTag(ringing) != toTag(call.sess.InviteResponse) {
		t.Errorf("180 tag %q, 200 tag %q", toTag(ringing), toTag(call.sess.InviteResponse))
	}
	call.sess.Bye(t.Context())

	cancelled := newPBX(t, e).call("1001")
	ringing = cancelled.expect(180)
	cancelled.cancel()
	<-cancelled.result
	if final := cancelled.sess.InviteResponse; final == nil || final.StatusCode != 487 || toTag(final) != toTag(ringing) {
		t.Errorf("487 %v with tag %q, 180 tag %q", final, toTag(final), toTag(ringing))
	}
}

// A late offer: the PBX's INVITE has no SDP, the phone's 200 carries the
// offer, and the PBX's ACK carries the answer, which the phone must get.
func TestLateOfferAnswerReachesPhone(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	ph := newPhone(t, e, "1001", "udp")
	call := newPBX(t, e).invite("1001", nil)
	e.pusher.next(t, push.TypeIncomingCall)
	ph.register(pushParams(1), 600)
	in := ph.ring()
	if len(in.req.Body()) != 0 {
		t.Fatalf("phone's INVITE has a body: %q", in.req.Body())
	}
	go in.sess.RespondSDP([]byte(phoneSDP))
	if code := call.final(waitFor); code != 200 {
		t.Fatalf("PBX got %d", code)
	}
	ack := sipgosip.NewRequest(sipgosip.ACK, call.sess.InviteResponse.Contact().Address)
	ack.SetBody([]byte(pbxSDP))
	ack.AppendHeader(sipgosip.NewHeader("Content-Type", "application/sdp"))
	if err := call.sess.WriteAck(t.Context(), ack); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ph.acks:
		if string(got.Body()) != pbxSDP {
			t.Errorf("phone's ACK body = %q, want the PBX's answer", got.Body())
		}
	case <-time.After(waitFor):
		t.Fatal("phone never got its ACK")
	}
	close(in.finished)
	call.sess.Bye(t.Context())
	e.waitOutcome(t, "completed")
}
