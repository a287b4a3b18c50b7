package upstream

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

func TestRegisterSendsRFC3261RegisterWithDigest(t *testing.T) {
	for _, tc := range []struct {
		name       string
		algorithms []string
		proxyAuth  bool
		wantAlg    string
		authHeader string
	}{
		{"MD5 401", []string{"MD5"}, false, "MD5", "Authorization"},
		{"SHA-256 401", []string{"SHA-256"}, false, "SHA-256", "Authorization"},
		{"SHA-256 preferred", []string{"MD5", "SHA-256"}, false, "SHA-256", "Authorization"},
		{"MD5 407", []string{"MD5"}, true, "MD5", "Proxy-Authorization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pbx := newFakePBX(t)
			pbx.set(func(p *fakePBX) {
				p.passwords["alice"] = "s3cret"
				p.algorithms, p.proxyAuth = tc.algorithms, tc.proxyAuth
			})
			h := newHarness(t, pbx.uri, nil)
			h.Sync([]Account{{Ext: "1001", Username: "alice", Password: "s3cret"}})
			h.run(t)

			first, second := pbx.next(t), pbx.next(t)
			st := h.waitStatus(t, "1001", StatusRegistered)

			host := strings.TrimPrefix(pbx.uri, "sip:")
			if got := first.Recipient.String(); got != pbx.uri {
				t.Errorf("Request-URI = %s, want %s (no user part)", got, pbx.uri)
			}
			aor := "sip:alice@127.0.0.1"
			for _, req := range []*sip.Request{first, second} {
				if got := req.To().Address.String(); got != aor {
					t.Errorf("To = %s, want %s", got, aor)
				}
				if got := req.From().Address.String(); got != aor {
					t.Errorf("From = %s, want %s", got, aor)
				}
				if got := req.Contact().Address; got.User != "1001" || got.Host != "127.0.0.1" || got.Port != contactPort {
					t.Errorf("Contact = %s, want Config.Contact(1001)", got.String())
				}
				if got := expiresParam(req); got != 300 {
					t.Errorf("Contact expires = %d, want 300", got)
				}
				if got := header(req, "Expires"); got != "300" {
					t.Errorf("Expires = %q, want 300", got)
				}
				if got := header(req, "User-Agent"); got != "callwake" {
					t.Errorf("User-Agent = %q", got)
				}
			}
			if first.CallID().Value() != second.CallID().Value() {
				t.Errorf("Call-ID changed between challenge and answer")
			}
			if second.CSeq().SeqNo != first.CSeq().SeqNo+1 {
				t.Errorf("CSeq %d then %d, want +1", first.CSeq().SeqNo, second.CSeq().SeqNo)
			}
			if first.GetHeader(tc.authHeader) != nil {
				t.Errorf("first REGISTER already has %s", tc.authHeader)
			}
			auth := header(second, tc.authHeader)
			if !strings.Contains(auth, "algorithm="+tc.wantAlg) || !strings.Contains(auth, `username="alice"`) {
				t.Errorf("%s = %q, want %s for alice", tc.authHeader, auth, tc.wantAlg)
			}
			if st.Registrar != pbx.uri || !st.ExpiresAt.Equal(h.clock.Now().Add(300*time.Second)) {
				t.Errorf("state = %+v, want registrar %s expiring in 300s", st, host)
			}
			if n, ok := pbx.binding("1001"); !ok || n != 300 {
				t.Errorf("PBX binding for 1001 = %d, %v", n, ok)
			}
		})
	}
}

func TestRefreshBeforeGrantedExpiryOnSameCallID(t *testing.T) {
	pbx := newFakePBX(t)
	pbx.set(func(p *fakePBX) { p.passwords["1001"] = "pw"; p.grant = 120 })
	h := newHarness(t, pbx.uri, nil)
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.run(t)

	first := pbx.next(t)
	last := pbx.next(t)
	st := h.waitStatus(t, "1001", StatusRegistered)
	now := h.clock.Now()
	if !st.ExpiresAt.Equal(now.Add(120 * time.Second)) {
		t.Fatalf("ExpiresAt = %v, want the granted 120s from now", st.ExpiresAt.Sub(now))
	}
	// 120s granted: refresh a minute ahead, less up to 20% jitter.
	if d := st.NextAttempt.Sub(now); !in(d, 48*time.Second, 60*time.Second) {
		t.Fatalf("refresh in %v, want 48s..60s", d)
	}

	for range 3 {
		h.clock.AdvanceTo(st.NextAttempt)
		challenged, answered := pbx.next(t), pbx.next(t)
		for _, req := range []*sip.Request{challenged, answered} {
			if req.CallID().Value() != first.CallID().Value() {
				t.Fatalf("refresh changed Call-ID")
			}
			if req.CSeq().SeqNo <= last.CSeq().SeqNo {
				t.Fatalf("CSeq went from %d to %d", last.CSeq().SeqNo, req.CSeq().SeqNo)
			}
			if header(req, "Expires") != "300" {
				t.Fatalf("refresh asks for Expires %s, want the configured 300", header(req, "Expires"))
			}
			last = req
		}
		st = h.waitStatus(t, "1001", StatusRegistered)
		if !st.ExpiresAt.After(h.clock.Now()) {
			t.Fatalf("refreshed binding already expired: %+v", st)
		}
	}
}

func TestGrantedExpiry(t *testing.T) {
	ours := testContact("1001")
	other := sip.Uri{Scheme: "sip", User: "1001", Host: "10.0.0.9", Port: 5060}
	contact := func(u sip.Uri, expires string) sip.Header {
		c := &sip.ContactHeader{Address: u, Params: sip.NewParams()}
		if expires != "" {
			c.Params.Add("expires", expires)
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		headers []sip.Header
		want    int
	}{
		{"our contact's expires", []sip.Header{contact(other, "30"), contact(ours, "120"), sip.NewHeader("Expires", "200")}, 120},
		{"Expires header when our contact has none", []sip.Header{contact(ours, ""), sip.NewHeader("Expires", "200")}, 200},
		{"Expires header when our contact is not listed", []sip.Header{contact(other, "30"), sip.NewHeader("Expires", "200")}, 200},
		{"requested when nothing says", nil, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := sip.NewResponse(200, "OK")
			for _, h := range tc.headers {
				res.AppendHeader(h)
			}
			if got := grantedExpiry(res, ours, 300); got != tc.want {
				t.Errorf("granted = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestIntervalTooBriefRetriesAtOnceWithMinExpires(t *testing.T) {
	pbx := newFakePBX(t)
	pbx.set(func(p *fakePBX) { p.passwords["1001"] = "pw"; p.minExpires = 600 })
	h := newHarness(t, pbx.uri, nil)
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.run(t)

	if req := pbx.next(t); header(req, "Expires") != "300" {
		t.Fatalf("first REGISTER asks %s", header(req, "Expires"))
	}
	for range 2 { // challenge and answer, both with the PBX's minimum
		if req := pbx.next(t); header(req, "Expires") != "600" || expiresParam(req) != 600 {
			t.Fatalf("after 423, REGISTER asks %s / contact %d, want 600", header(req, "Expires"), expiresParam(req))
		}
	}
	st := h.wait(t, "1001", func(s State) bool { return s.Status != StatusRegistering })
	if st.Status != StatusRegistered || !st.ExpiresAt.Equal(h.clock.Now().Add(600*time.Second)) {
		t.Fatalf("state = %+v, want registered for 600s with no failure between", st)
	}
	h.clock.AdvanceTo(st.NextAttempt)
	if req := pbx.next(t); header(req, "Expires") != "600" {
		t.Fatalf("refresh asks %s, want to keep 600", header(req, "Expires"))
	}
}

func TestStaleNonceIsAnsweredAgainNotTakenForAWrongPassword(t *testing.T) {
	pbx := newFakePBX(t)
	stale := true
	pbx.set(func(p *fakePBX) {
		p.passwords["1001"] = "pw"
		p.hook = func(req *sip.Request) (*sip.Response, bool) {
			pbx.mu.Lock()
			defer pbx.mu.Unlock()
			if req.GetHeader("Authorization") == nil || !stale {
				return nil, false
			}
			stale = false
			res := pbx.challenge(req)
			res.RemoveHeader("WWW-Authenticate")
			chal := digest.Challenge{Realm: "pbx.test", Nonce: "fresh", Algorithm: "MD5", QOP: []string{"auth"}, Stale: true}
			res.AppendHeader(sip.NewHeader("WWW-Authenticate", chal.String()))
			return res, false
		}
	})
	h := newHarness(t, pbx.uri, nil)
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.run(t)
	h.waitStatus(t, "1001", StatusRegistered)
	for i := range 3 {
		if req := pbx.next(t); i == 2 && !strings.Contains(header(req, "Authorization"), `nonce="fresh"`) {
			t.Errorf("third REGISTER does not answer the fresh nonce: %s", header(req, "Authorization"))
		}
	}
}
