package sip

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

const (
	linphoneInstance = "urn:uuid:8f0c2b9e-6a63-4cb4-b0fb-4a5f7e1c3e11"
	otherVoIPTok     = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// linphoneContact is what Linphone iOS sends with push enabled.
func linphoneContact(port, voipToken string) string {
	return `<sip:1001@127.0.0.1:` + port + `;transport=udp;pn-prid=` + voipToken + `:voip&` + remoteTok + `:remote;pn-provider=apns;` +
		`pn-param=ABCD1234.org.linphone.phone.voip&remote;pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;pn-call-str=IC_MSG>;` +
		`+sip.instance="<` + linphoneInstance + `>";+org.linphone.specs="lime,groupchat/1.1"`
}

var linphoneTarget = PushTarget{Provider: "apns", Token: strings.ToLower(voipTok), Topic: "org.linphone.phone.voip"}

func TestRegisterSHA256OverUDP(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")

	req := p.request(-1, "<sip:1001@127.0.0.1:5099>")
	challenge := p.do(req)
	wantStatus(t, challenge, 401)
	auths := headerValues(challenge, "WWW-Authenticate")
	if len(auths) != 2 || !strings.Contains(auths[0], "algorithm=SHA-256") || !strings.Contains(auths[1], "algorithm=MD5") {
		t.Fatalf("challenges = %q, want SHA-256 then MD5", auths)
	}
	for _, a := range auths {
		if !strings.Contains(a, `realm="callwake.test"`) || !strings.Contains(a, `qop="auth"`) {
			t.Errorf("challenge %q lacks realm or qop", a)
		}
	}
	if got := tr.handler.take(); len(got) != 0 {
		t.Fatalf("handler called before authentication: %+v", got)
	}

	res := p.answer(req, challenge)
	wantStatus(t, res, 200)
	if !strings.Contains(p.lastAuth, "algorithm=SHA-256") {
		t.Fatalf("sipgo answered %q, want SHA-256", p.lastAuth)
	}
	if got := contactExpires(t, res); !reflect.DeepEqual(got, map[string]int{"sip:1001@127.0.0.1:5099": 600}) {
		t.Errorf("200 contacts = %v, want the binding with the default 600s", got)
	}
	if res.GetHeader("Date") == nil {
		t.Error("200 has no Date")
	}
	if res.GetHeader("Feature-Caps") != nil {
		t.Error("Feature-Caps without push parameters")
	}

	bs := tr.reg.Bindings("1001")
	if len(bs) != 1 {
		t.Fatalf("bindings = %+v, want 1", bs)
	}
	b := bs[0]
	if b.Transport != "udp" || b.Live || !strings.HasPrefix(b.Source, "127.0.0.1:") || b.CallID != p.callID || b.CSeq != p.cseq {
		t.Errorf("binding = %+v", b)
	}
	if want := tr.clock.Now().Add(600 * time.Second); !b.Expires.Equal(want) {
		t.Errorf("expires %v, want %v", b.Expires, want)
	}
	evs := tr.handler.take()
	if len(evs) != 1 || evs[0].Removed || evs[0].Refresh || evs[0].Ext != "1001" || len(evs[0].Targets) != 0 {
		t.Fatalf("events = %+v, want one new binding without push", evs)
	}

	// A refresh is reported as one.
	wantStatus(t, p.register(300, "<sip:1001@127.0.0.1:5099>"), 200)
	if evs := tr.handler.take(); len(evs) != 1 || !evs[0].Refresh || evs[0].Removed {
		t.Fatalf("refresh events = %+v", evs)
	}
}

func TestRegisterMD5OverTCPLiveness(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "TCP", "1002")
	p.algorithm = AlgorithmMD5

	res := p.register(-1, "<sip:1002@127.0.0.1:5098;transport=tcp>")
	wantStatus(t, res, 200)
	if !strings.Contains(p.lastAuth, "algorithm=MD5") {
		t.Fatalf("Authorization %q is not MD5", p.lastAuth)
	}
	bs := tr.reg.Bindings("1002")
	if len(bs) != 1 || bs[0].Transport != "tcp" || !bs[0].ConnectionOriented() || !bs[0].Live {
		t.Fatalf("bindings = %+v, want one live tcp binding", bs)
	}
	if evs := tr.handler.take(); len(evs) != 1 || !evs[0].Binding.Live {
		t.Fatalf("events = %+v, want the binding reported live", evs)
	}

	// The app is backgrounded: its connection drops, its binding stays.
	p.ua.Close()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		bs = tr.reg.Bindings("1002")
		if len(bs) != 1 {
			t.Fatalf("binding gone with its connection: %+v", bs)
		}
		if !bs[0].Live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("binding still live after its connection closed")
		}
		<-tick.C
	}
	if evs := tr.handler.take(); len(evs) != 0 {
		t.Fatalf("connection drop reported as %+v", evs)
	}
}

func TestRegisterWrongPasswordAndUnknownExtension(t *testing.T) {
	tr := startRegistrar(t)
	for _, user := range []string{"1001", "1999"} {
		p := newPhone(t, tr, "UDP", user)
		p.algorithm = AlgorithmMD5
		p.password = "guess"
		res := p.register(-1, "<sip:"+user+"@127.0.0.1:5099>")
		// The same answer for both, so extensions cannot be enumerated.
		wantStatus(t, res, 401)
		if len(headerValues(res, "WWW-Authenticate")) != 2 {
			t.Errorf("%s: no fresh challenge after a failed attempt", user)
		}
		if bs := tr.reg.Bindings(user); len(bs) != 0 {
			t.Errorf("%s: bindings %+v after a failed attempt", user, bs)
		}
	}
	if evs := tr.handler.take(); len(evs) != 0 {
		t.Fatalf("events %+v for failed attempts", evs)
	}
}

func TestRegisterCredentialsOfAnotherExtension(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")
	req := p.request(-1, "<sip:1001@127.0.0.1:5099>")
	res := p.do(req)
	wantStatus(t, res, 401)
	// Valid credentials, but for 1002.
	authorize(t, req, challengeFor(t, headerValues(res, "WWW-Authenticate"), "MD5"), "1002", "secret1002")
	req.CSeq().SeqNo++
	req.RemoveHeader("Via")
	res = p.do(req, sipgoAddVia)
	wantStatus(t, res, 403)
	if bs := tr.reg.Bindings("1001"); len(bs) != 0 {
		t.Fatalf("bindings %+v", bs)
	}
}

func TestRegisterStaleNonce(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")
	p.algorithm = AlgorithmMD5
	wantStatus(t, p.register(-1, "<sip:1001@127.0.0.1:5099>"), 200)

	// The phone reuses its credentials after the nonce expired.
	tr.clock.Advance(DefaultNonceTTL + time.Minute)
	req := p.request(-1, "<sip:1001@127.0.0.1:5099>")
	req.AppendHeader(sip.NewHeader("Authorization", p.lastAuth))
	res := p.do(req)
	wantStatus(t, res, 401)
	for _, v := range headerValues(res, "WWW-Authenticate") {
		chal, err := digest.ParseChallenge(v)
		if err != nil || !chal.Stale {
			t.Fatalf("challenge %q lacks stale=true (%v)", v, err)
		}
	}
	// It answers the fresh nonce without asking the user.
	wantStatus(t, p.answer(req, res), 200)
}

func TestRegisterStaleCSeqIgnored(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")
	p.cseq = 100
	wantStatus(t, p.register(600, "<sip:1001@127.0.0.1:5099>"), 200)
	before := tr.reg.Bindings("1001")
	tr.handler.take()

	// A delayed un-REGISTER from earlier in the same Call-ID.
	p.cseq = 50
	res := p.register(0, "<sip:1001@127.0.0.1:5099>")
	wantStatus(t, res, 400)
	if after := tr.reg.Bindings("1001"); !reflect.DeepEqual(before, after) {
		t.Fatalf("stale REGISTER changed bindings:\n%+v\n%+v", before, after)
	}
	if evs := tr.handler.take(); len(evs) != 0 {
		t.Fatalf("stale REGISTER reported %+v", evs)
	}

	// The same stale CSeq from a new Call-ID (the app restarted) is fine.
	p.callID += "-restarted"
	wantStatus(t, p.register(0, "<sip:1001@127.0.0.1:5099>"), 200)
	if bs := tr.reg.Bindings("1001"); len(bs) != 0 {
		t.Fatalf("bindings %+v after removal", bs)
	}
}

func TestRegisterExpiryLimits(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")

	res := p.register(30, "<sip:1001@127.0.0.1:5099>")
	wantStatus(t, res, 423)
	if h := res.GetHeader("Min-Expires"); h == nil || h.Value() != "60" {
		t.Fatalf("423 Min-Expires = %v, want 60", h)
	}
	wantStatus(t, p.register(-1, "<sip:1001@127.0.0.1:5099>;expires=10"), 423)
	if bs := tr.reg.Bindings("1001"); len(bs) != 0 {
		t.Fatalf("bindings %+v after 423", bs)
	}

	// Per-contact expires wins over the header; the maximum caps both.
	res = p.register(7200, "<sip:1001@127.0.0.1:6001>;expires=120", "<sip:1001@127.0.0.1:6002>", "<sip:1001@127.0.0.1:6003>;expires=99999999999")
	wantStatus(t, res, 200)
	want := map[string]int{"sip:1001@127.0.0.1:6001": 120, "sip:1001@127.0.0.1:6002": 3600, "sip:1001@127.0.0.1:6003": 3600}
	if got := contactExpires(t, res); !reflect.DeepEqual(got, want) {
		t.Fatalf("contacts = %v, want %v", got, want)
	}

	// A binding that expires disappears without being reported removed.
	tr.handler.take()
	tr.clock.Advance(121 * time.Second)
	if bs := tr.reg.Bindings("1001"); len(bs) != 2 {
		t.Fatalf("bindings after the first expired = %+v", bs)
	}
	// A REGISTER without Contact lists what is left.
	res = p.register(-1)
	wantStatus(t, res, 200)
	want = map[string]int{"sip:1001@127.0.0.1:6002": 3479, "sip:1001@127.0.0.1:6003": 3479}
	if got := contactExpires(t, res); !reflect.DeepEqual(got, want) {
		t.Fatalf("query contacts = %v, want %v", got, want)
	}
	if evs := tr.handler.take(); len(evs) != 0 {
		t.Fatalf("expiry or query reported %+v", evs)
	}
}

func TestRegisterLinphonePush(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")

	res := p.register(-1, linphoneContact("50412", voipTok))
	wantStatus(t, res, 200)
	if got := headerValues(res, "Feature-Caps"); !reflect.DeepEqual(got, []string{`*;+sip.pns="apns"`}) {
		t.Errorf("Feature-Caps = %q", got)
	}
	if c, ok := res.GetHeader("Contact").(*sip.ContactHeader); !ok || c.Params.GetOr("+sip.instance", "") != `"<`+linphoneInstance+`>"` {
		t.Errorf("200 Contact %v does not echo +sip.instance", res.GetHeader("Contact"))
	}
	evs := tr.handler.take()
	if len(evs) != 1 || evs[0].Removed || !reflect.DeepEqual(evs[0].Targets, []PushTarget{linphoneTarget}) {
		t.Fatalf("events = %+v", evs)
	}
	b := evs[0].Binding
	if b.Instance != linphoneInstance || !reflect.DeepEqual(b.PushTargets, []PushTarget{linphoneTarget}) {
		t.Errorf("binding = %+v", b)
	}
	if v, _ := b.Contact.UriParams.Get("pn-prid"); !strings.HasPrefix(v, voipTok) {
		t.Errorf("binding contact %s lost its push parameters", b.Contact.String())
	}

	// Woken by a push, the app registers from a new port with a new token:
	// the same device (instance) replaces its binding.
	wantStatus(t, p.register(-1, linphoneContact("50999", otherVoIPTok)), 200)
	bs := tr.reg.Bindings("1001")
	if len(bs) != 1 || bs[0].Contact.Port != 50999 || bs[0].PushTargets[0].Token != otherVoIPTok {
		t.Fatalf("bindings = %+v, want the one replaced", bs)
	}
	evs = tr.handler.take()
	if len(evs) != 1 || !evs[0].Refresh || !reflect.DeepEqual(evs[0].PreviousTargets, []PushTarget{linphoneTarget}) ||
		evs[0].Targets[0].Token != otherVoIPTok {
		t.Fatalf("events = %+v", evs)
	}

	// Logging out: expires 0 removes the device.
	wantStatus(t, p.register(0, linphoneContact("50999", otherVoIPTok)), 200)
	evs = tr.handler.take()
	if len(evs) != 1 || !evs[0].Removed || len(evs[0].Targets) != 1 || evs[0].Targets[0].Token != otherVoIPTok {
		t.Fatalf("events = %+v, want the device removed", evs)
	}
	if bs := tr.reg.Bindings("1001"); len(bs) != 0 {
		t.Fatalf("bindings = %+v after logout", bs)
	}
}

func TestRegisterRemovalWithoutStoredBinding(t *testing.T) {
	// After a restart the table is empty but the device is still stored:
	// a logout must still reach the bridge.
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")
	wantStatus(t, p.register(0, linphoneContact("50412", voipTok)), 200)
	evs := tr.handler.take()
	if len(evs) != 1 || !evs[0].Removed || !reflect.DeepEqual(evs[0].Targets, []PushTarget{linphoneTarget}) {
		t.Fatalf("events = %+v", evs)
	}
	// Removing a plain binding nobody has is no event at all.
	wantStatus(t, p.register(0, "<sip:1001@127.0.0.1:5099>"), 200)
	if evs := tr.handler.take(); len(evs) != 0 {
		t.Fatalf("events = %+v", evs)
	}
}

func TestRegisterRemovalUsesStoredTargets(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")
	wantStatus(t, p.register(-1, linphoneContact("50412", voipTok)), 200)
	tr.handler.take()
	// The un-REGISTER names the instance but repeats no push parameters.
	wantStatus(t, p.register(0, `<sip:1001@127.0.0.1:50412>;+sip.instance="<`+linphoneInstance+`>"`), 200)
	evs := tr.handler.take()
	if len(evs) != 1 || !evs[0].Removed || !reflect.DeepEqual(evs[0].Targets, []PushTarget{linphoneTarget}) {
		t.Fatalf("events = %+v", evs)
	}
}

func TestRegisterLegacyPush(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "TCP", "1001")
	contact := `<sip:1001@127.0.0.1:5097;transport=tcp;app-id=org.linphone.phone.voip.dev;pn-type=apple;pn-tok=` + voipTok + `;pn-msg-str=IM_MSG>`
	res := p.register(-1, contact)
	wantStatus(t, res, 200)
	if res.GetHeader("Feature-Caps") != nil {
		t.Error("Feature-Caps answered to legacy push parameters")
	}
	want := []PushTarget{{Provider: "apns.dev", Token: strings.ToLower(voipTok), Topic: "org.linphone.phone.voip"}}
	if evs := tr.handler.take(); len(evs) != 1 || !reflect.DeepEqual(evs[0].Targets, want) {
		t.Fatalf("events = %+v", evs)
	}
}

func TestRegisterFCM(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "TCP", "1002")
	contact := `<sip:1002@127.0.0.1:39207;transport=tcp;pn-prid=` + fcmTok + `;pn-provider=fcm;pn-param=929724111839;pn-silent=1;pn-timeout=0>;` +
		`+sip.instance="<urn:uuid:2b0f3c1a-7d4e-4a55-9a1d-2f1e8e0b6c77>"`
	res := p.register(-1, contact)
	wantStatus(t, res, 200)
	if got := headerValues(res, "Feature-Caps"); !reflect.DeepEqual(got, []string{`*;+sip.pns="fcm"`}) {
		t.Errorf("Feature-Caps = %q", got)
	}
	want := []PushTarget{{Provider: "fcm", Token: fcmTok, ProjectID: "929724111839"}}
	if bs := tr.reg.Bindings("1002"); len(bs) != 1 || !reflect.DeepEqual(bs[0].PushTargets, want) {
		t.Fatalf("bindings = %+v", bs)
	}
}

func TestRegisterPushParamErrors(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")

	// RFC 8599's example provider is one we cannot push through.
	res := p.register(-1, `<sip:1001@127.0.0.1:5099;pn-provider=acme;pn-param=acme-param;pn-prid=ZTY4ZDJlMzODE1NmUgKi0K>`)
	wantStatus(t, res, 555)
	if w := res.GetHeader("Warning"); w == nil || !strings.Contains(w.Value(), "acme") {
		t.Errorf("Warning = %v", w)
	}

	res = p.register(-1, `<sip:1001@127.0.0.1:5099;pn-provider=apns;pn-param=ABCD1234.com.example.app.voip;pn-prid=abcdef>`)
	wantStatus(t, res, 400)
	if w := res.GetHeader("Warning"); w == nil || !strings.Contains(w.Value(), "APNs token") {
		t.Errorf("Warning = %v", w)
	}
	if bs := tr.reg.Bindings("1001"); len(bs) != 0 {
		t.Fatalf("bindings = %+v after refused REGISTERs", bs)
	}

	// Only an alert token: registered, but not as a pushable device.
	res = p.register(-1, `<sip:1001@127.0.0.1:5099;pn-provider=apns;pn-prid=`+remoteTok+`:remote;pn-param=ABCD1234.org.linphone.phone.remote>`)
	wantStatus(t, res, 200)
	if res.GetHeader("Feature-Caps") != nil {
		t.Error("Feature-Caps for a binding we will not push")
	}
	if bs := tr.reg.Bindings("1001"); len(bs) != 1 || len(bs[0].PushTargets) != 0 {
		t.Fatalf("bindings = %+v", bs)
	}
}

func TestRegisterWildcard(t *testing.T) {
	tr := startRegistrar(t)
	iphone := newPhone(t, tr, "UDP", "1001")
	ipad := newPhone(t, tr, "UDP", "1001")
	wantStatus(t, iphone.register(-1, linphoneContact("50412", voipTok)), 200)
	ipadContact := `<sip:1001@127.0.0.1:50413;pn-provider=apns;pn-param=ABCD1234.org.linphone.phone.voip;pn-prid=` + otherVoIPTok + `:voip>`
	wantStatus(t, ipad.register(-1, ipadContact), 200)
	tr.handler.take()

	wantStatus(t, iphone.register(600, "*"), 400) // "*" needs Expires: 0
	res := iphone.register(0, "*")
	wantStatus(t, res, 200)
	if len(res.GetHeaders("Contact")) != 0 {
		t.Errorf("contacts left: %q", headerValues(res, "Contact"))
	}
	if bs := tr.reg.Bindings("1001"); len(bs) != 0 {
		t.Fatalf("bindings = %+v", bs)
	}
	evs := tr.handler.take()
	if len(evs) != 2 {
		t.Fatalf("events = %+v", evs)
	}
	for _, ev := range evs {
		if !ev.Removed {
			t.Errorf("event %+v is not a removal", ev)
		}
		switch ev.Binding.CallID {
		case iphone.callID:
			if !reflect.DeepEqual(ev.Targets, []PushTarget{linphoneTarget}) {
				t.Errorf("the iPhone's own device is not logged out: %+v", ev)
			}
		case ipad.callID:
			if len(ev.Targets) != 0 {
				t.Errorf("the iPad's device is logged out by the iPhone: %+v", ev)
			}
		}
	}
}

func TestRegisterHandlerErrors(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")

	tr.handler.setErr(&StatusError{Code: 480, Reason: "Too Many Devices"})
	res := p.register(-1, linphoneContact("50412", voipTok))
	wantStatus(t, res, 480)
	if res.Reason != "Too Many Devices" {
		t.Errorf("reason = %q", res.Reason)
	}

	tr.handler.setErr(errors.New("db: database is locked\nretry"))
	res = p.register(-1, linphoneContact("50412", voipTok))
	wantStatus(t, res, 500)
	if res.Reason != "db: database is locked retry" {
		t.Errorf("reason = %q", res.Reason)
	}
	if bs := tr.reg.Bindings("1001"); len(bs) != 0 {
		t.Fatalf("bindings = %+v kept despite the handler's refusal", bs)
	}

	tr.handler.setErr(nil)
	wantStatus(t, p.register(-1, linphoneContact("50412", voipTok)), 200)
}

func TestRegisterBadRequests(t *testing.T) {
	tr := startRegistrar(t)
	p := newPhone(t, tr, "UDP", "1001")
	wantStatus(t, p.register(-1, "*", "<sip:1001@127.0.0.1:5099>"), 400)

	req := p.request(-1, "<sip:1001@127.0.0.1:5099>")
	req.RemoveHeader("Expires")
	req.AppendHeader(sip.NewHeader("Expires", "soon"))
	res := p.do(req)
	if res.StatusCode == sip.StatusUnauthorized {
		res = p.answer(req, res)
	}
	wantStatus(t, res, 400)
}

func TestNewRegistrarChecksConfig(t *testing.T) {
	store := &passwordStore{}
	bad := []RegistrarConfig{
		{Credentials: store}, // no domain
		{Domain: testRealm},  // no store
		{Domain: testRealm, Credentials: store, MinExpires: time.Hour, MaxExpires: time.Minute},
		{Domain: testRealm, Credentials: store, DefaultExpires: 10 * time.Second},
	}
	for i, cfg := range bad {
		if _, err := NewRegistrar(cfg); err == nil {
			t.Errorf("config %d accepted", i)
		}
	}
}
