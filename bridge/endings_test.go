package bridge_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/callwake/callwake/bridge"
	"github.com/callwake/callwake/push"
	"github.com/callwake/callwake/sip"
)

func timeouts(ring, wake time.Duration, status int) envOption {
	return func(b *bridge.Config, _ *sip.ServiceConfig) {
		b.RingTimeout, b.WakeTimeout, b.TimeoutStatus = ring, wake, status
	}
}

// within asserts that d is close to want: not early, and not much late.
func within(t *testing.T, what string, d, want time.Duration) {
	t.Helper()
	if d < want-50*time.Millisecond || d > want+time.Second {
		t.Errorf("%s after %s, want about %s", what, d.Round(time.Millisecond), want)
	}
}

func TestWakeTimeout(t *testing.T) {
	e := newEnv(t, timeouts(3*time.Second, 400*time.Millisecond, 487))
	e.addExtension("1001")
	d := e.addDevice("1001", 1)
	call := newPBX(t, e).call("1001")
	call.expect(180)
	e.pusher.next(t, push.TypeIncomingCall)
	if code := call.final(waitFor); code != 487 {
		t.Fatalf("PBX got %d, want 487", code)
	}
	within(t, "487", time.Since(call.sentAt), 400*time.Millisecond)
	cp := e.pusher.next(t, push.TypeCallCancelled)
	if cp.payload.Reason != push.ReasonTimeout || cp.target.DeviceID != d.ID {
		t.Errorf("call_cancelled = %+v", cp.payload)
	}
	c := e.waitOutcome(t, "timeout")
	if c.Status != 487 {
		t.Errorf("logged status %d", c.Status)
	}
}

func TestTimeoutStatusIsConfigurable(t *testing.T) {
	e := newEnv(t, timeouts(3*time.Second, 300*time.Millisecond, 480))
	e.addExtension("1001")
	e.addDevice("1001", 1)
	call := newPBX(t, e).call("1001")
	if code := call.final(waitFor); code != 480 {
		t.Fatalf("PBX got %d, want 480 (calls.timeout_status)", code)
	}
}

// The phone woke and rings, but nobody answers: ring_timeout ends the call
// and the phone's INVITE is cancelled.
func TestRingTimeout(t *testing.T) {
	e := newEnv(t, timeouts(800*time.Millisecond, 500*time.Millisecond, 487))
	e.addExtension("1001")
	e.addDevice("1001", 1)
	ph := newPhone(t, e, "1001", "udp")
	call := newPBX(t, e).call("1001")
	e.pusher.next(t, push.TypeIncomingCall)
	ph.register(pushParams(1), 600)
	in := ph.ring()
	in.respond(180, "Ringing")
	if code := call.final(waitFor); code != 487 {
		t.Fatalf("PBX got %d, want 487", code)
	}
	within(t, "487", time.Since(call.sentAt), 800*time.Millisecond)
	in.waitCancelled(t)
	if cp := e.pusher.next(t, push.TypeCallCancelled); cp.payload.Reason != push.ReasonTimeout {
		t.Errorf("call_cancelled reason %q", cp.payload.Reason)
	}
	e.waitOutcome(t, "timeout")
}

func TestCallerCancels(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	ph := newPhone(t, e, "1001", "udp")
	call := newPBX(t, e).call("1001")
	e.pusher.next(t, push.TypeIncomingCall)
	ph.register(pushParams(1), 600)
	in := ph.ring()
	in.respond(180, "Ringing")
	call.expect(180)
	call.cancel() // sipgo sends CANCEL and waits for 200 and 487
	if err := <-call.result; err == nil {
		t.Fatal("cancelled INVITE was answered")
	}
	if call.sess.InviteResponse == nil || call.sess.InviteResponse.StatusCode != 487 {
		t.Errorf("INVITE answered %v, want 487", call.sess.InviteResponse)
	}
	in.waitCancelled(t)
	if cp := e.pusher.next(t, push.TypeCallCancelled); cp.payload.Reason != push.ReasonCallerHangup {
		t.Errorf("call_cancelled reason %q", cp.payload.Reason)
	}
	e.waitOutcome(t, "cancelled")
}

func TestImmediateAnswers(t *testing.T) {
	busy := func(b *bridge.Config, _ *sip.ServiceConfig) { b.BusyOnBusy = true }
	e := newEnv(t, busy)
	e.addExtension("1001")
	e.addExtension("1002") // no device at all
	e.addDevice("1001", 1)
	p := newPBX(t, e)

	if code := p.call("9999").final(waitFor); code != 404 {
		t.Errorf("unknown extension: %d, want 404", code)
	}
	if code := p.call("1002").final(waitFor); code != 480 {
		t.Errorf("extension without devices: %d, want 480", code)
	}
	first := p.call("1001")
	first.expect(180)
	if code := p.call("1001").final(waitFor); code != 486 {
		t.Errorf("second call while busy_on_busy: %d, want 486", code)
	}
	first.cancel()
	<-first.result
}

func TestUntrustedSourceIsRefused(t *testing.T) {
	untrusted := func(_ *bridge.Config, s *sip.ServiceConfig) {
		s.Trusted = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	}
	e := newEnv(t, untrusted)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	if code := newPBX(t, e).call("1001").final(waitFor); code != 403 {
		t.Fatalf("untrusted source: %d, want 403", code)
	}
	e.pusher.none(t, push.TypeIncomingCall, 100*time.Millisecond)
}

func TestTrunkCredentialsChallengeUntrustedSource(t *testing.T) {
	trunk := func(_ *bridge.Config, s *sip.ServiceConfig) {
		s.Trusted = nil
		s.TrunkUsername, s.TrunkPassword = "pbx", "trunk-secret"
	}
	e := newEnv(t, trunk)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	call := newPBX(t, e).call("1001")
	if code := call.final(waitFor); code != 401 {
		t.Fatalf("unauthenticated trunk INVITE: %d, want 401 challenge", code)
	}
}

func TestDrainingRefusesNewCalls(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	e.bridge.Drain()
	call := newPBX(t, e).call("1001")
	if code := call.final(waitFor); code != 503 {
		t.Fatalf("while draining: %d, want 503", code)
	}
	if ra := call.sess.InviteResponse.GetHeader("Retry-After"); ra == nil {
		t.Error("503 without Retry-After")
	}
}

// A phone that declines over SIP (603) declines the call for everyone.
func TestPhoneDeclines(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	d1 := e.addDevice("1001", 1)
	d2 := e.addDevice("1001", 2)
	ph := newPhone(t, e, "1001", "udp")
	call := newPBX(t, e).call("1001")
	e.pusher.next(t, push.TypeIncomingCall)
	e.pusher.next(t, push.TypeIncomingCall)
	ph.register(pushParams(1), 600)
	ph.ring().respond(603, "Decline")
	if code := call.final(waitFor); code != 603 {
		t.Fatalf("PBX got %d, want 603", code)
	}
	cp := e.pusher.next(t, push.TypeCallCancelled)
	if cp.target.DeviceID != d2.ID || cp.payload.Reason != push.ReasonDeclinedElsewhere {
		t.Errorf("call_cancelled %+v to %d (decliner is %d)", cp.payload, cp.target.DeviceID, d1.ID)
	}
	e.pusher.none(t, push.TypeCallCancelled, 200*time.Millisecond)
	e.waitOutcome(t, "declined")
}

// One phone is busy: the call waits for the other; when it is busy too,
// the PBX gets 486.
func TestBusyWaitsForOthers(t *testing.T) {
	// Timeouts far beyond the test: the 486 must come from the phones.
	e := newEnv(t, timeouts(20*time.Second, 15*time.Second, 487))
	e.addExtension("1001")
	e.addDevice("1001", 1)
	e.addDevice("1001", 2)
	ph1 := newPhone(t, e, "1001", "udp")
	ph2 := newPhone(t, e, "1001", "udp")
	call := newPBX(t, e).call("1001")
	// The apps register when their push wakes them, not before.
	e.pusher.next(t, push.TypeIncomingCall)
	e.pusher.next(t, push.TypeIncomingCall)
	ph1.register(pushParams(1), 600)
	ph1.ring().respond(486, "Busy Here")
	select {
	case err := <-call.result:
		t.Fatalf("call ended while another device could answer: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	ph2.register(pushParams(2), 600)
	ph2.ring().respond(486, "Busy Here")
	busyAt := time.Now()
	if code := call.final(waitFor); code != 486 {
		t.Fatalf("PBX got %d, want 486", code)
	}
	within(t, "486 after the last phone's busy", time.Since(busyAt), 0)
}

func decline(t *testing.T, b *bridge.Bridge, declineURL string) int {
	t.Helper()
	u, err := url.Parse(declineURL)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	b.DeclineHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, u.Path, nil))
	return rec.Code
}

// The user declines from the push: 603, the URL works once, and a forged
// one is refused.
func TestDeclineURL(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	e.addDevice("1001", 2)
	call := newPBX(t, e).call("1001")
	p1 := e.pusher.next(t, push.TypeIncomingCall)
	p2 := e.pusher.next(t, push.TypeIncomingCall)
	if p1.payload.DeclineURL == p2.payload.DeclineURL {
		t.Fatal("decline URL is not per device")
	}
	forged := p1.payload.DeclineURL[:len(p1.payload.DeclineURL)-4] + "AAAA"
	if code := decline(t, e.bridge, forged); code != http.StatusForbidden {
		t.Errorf("forged decline URL: %d, want 403", code)
	}
	if code := decline(t, e.bridge, p1.payload.DeclineURL); code != http.StatusOK {
		t.Fatalf("decline: %d, want 200", code)
	}
	if code := call.final(waitFor); code != 603 {
		t.Fatalf("PBX got %d, want 603", code)
	}
	if code := decline(t, e.bridge, p1.payload.DeclineURL); code != http.StatusGone {
		t.Errorf("second use: %d, want 410", code)
	}
	// Only the other device is dismissed: the decliner's screen is gone.
	cp := e.pusher.next(t, push.TypeCallCancelled)
	if cp.target.DeviceID != p2.target.DeviceID || cp.payload.Reason != push.ReasonDeclinedElsewhere {
		t.Errorf("call_cancelled %+v to %d, want to %d", cp.payload, cp.target.DeviceID, p2.target.DeviceID)
	}
	e.pusher.none(t, push.TypeCallCancelled, 200*time.Millisecond)
}

// A phone that registers after its call ended is not rung.
func TestLateRegisterIsNotRung(t *testing.T) {
	e := newEnv(t, timeouts(2*time.Second, 300*time.Millisecond, 487))
	e.addExtension("1001")
	e.addDevice("1001", 1)
	ph := newPhone(t, e, "1001", "udp")
	call := newPBX(t, e).call("1001")
	if code := call.final(waitFor); code != 487 {
		t.Fatalf("PBX got %d", code)
	}
	ph.register(pushParams(1), 600)
	ph.silent(300 * time.Millisecond)
}

// A phone connected over TCP (app in the foreground) is rung at once,
// without waiting for a push to wake it.
func TestLiveTCPBindingRingsAtOnce(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	ph := newPhone(t, e, "1001", "tcp")
	if status := ph.register(pushParams(1), 600); status != 200 {
		t.Fatalf("REGISTER = %d", status)
	}
	call := newPBX(t, e).call("1001")
	in := ph.ring()
	in.answer(t)
	if code := call.final(waitFor); code != 200 {
		t.Fatalf("PBX got %d", code)
	}
	call.sess.Ack(t.Context())
	call.sess.Bye(t.Context())
	e.waitOutcome(t, "completed")
}

// A device whose app logged out (REGISTER Expires: 0 with push parameters)
// is removed and no longer pushed.
func TestLogoutRemovesDevice(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	ph := newPhone(t, e, "1001", "udp")
	if status := ph.register(pushParams(1), 600); status != 200 {
		t.Fatalf("REGISTER = %d", status)
	}
	if devs, _ := e.store.ListDevices(t.Context(), "1001"); len(devs) != 1 {
		t.Fatalf("devices after REGISTER: %v", devs)
	}
	if status := ph.register(pushParams(1), 0); status != 200 {
		t.Fatalf("un-REGISTER = %d", status)
	}
	if devs, _ := e.store.ListDevices(t.Context(), "1001"); len(devs) != 0 {
		t.Fatalf("devices after logout: %v", devs)
	}
	if code := newPBX(t, e).call("1001").final(waitFor); code != 480 {
		t.Errorf("call after logout: %d, want 480", code)
	}
}

// A softphone registered over UDP without push parameters cannot be woken:
// it is rung at once.
func TestPlainUDPSoftphoneRingsAtOnce(t *testing.T) {
	e := newEnv(t)
	e.addExtension("1001")
	ph := newPhone(t, e, "1001", "udp")
	if status := ph.register(nil, 600); status != 200 {
		t.Fatalf("REGISTER = %d", status)
	}
	call := newPBX(t, e).call("1001")
	ph.ring().respond(486, "Busy Here")
	if code := call.final(waitFor); code != 486 {
		t.Fatalf("PBX got %d, want 486", code)
	}
}

// In register mode the PBX that callwake registers to sends the calls: its
// address is trusted without being listed in pbx.trusted.
func TestRegistrarHostIsTrusted(t *testing.T) {
	untrusted := func(_ *bridge.Config, s *sip.ServiceConfig) {
		s.Trusted = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	}
	e := newEnv(t, untrusted)
	e.addExtension("1001")
	e.addDevice("1001", 1)
	p := newPBX(t, e)
	if code := p.call("1001").final(waitFor); code != 403 {
		t.Fatalf("before: %d, want 403", code)
	}
	e.svc.TrustHosts(t.Context(), []string{"localhost"})
	call := p.call("1001")
	call.expect(180)
	call.cancel()
	<-call.result
}
