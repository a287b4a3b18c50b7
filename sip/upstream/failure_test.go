package upstream

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func TestWrongPasswordFailsAndBacksOffLong(t *testing.T) {
	pbx := newFakePBX(t)
	pbx.set(func(p *fakePBX) { p.passwords["1001"] = "right" })
	h := newHarness(t, pbx.uri, nil)
	h.Sync([]Account{{Ext: "1001", Password: "wrong"}})
	h.run(t)

	for round := 1; round <= 2; round++ {
		pbx.next(t) // challenged
		if req := pbx.next(t); req.GetHeader("Authorization") == nil {
			t.Fatalf("second REGISTER has no credentials")
		}
		st := h.waitStatus(t, "1001", StatusFailing)
		if !strings.Contains(st.LastError, "401 Unauthorized") || !strings.Contains(st.LastError, "wrong username or password") {
			t.Errorf("LastError = %q, want the 401 and a wrong-password hint", st.LastError)
		}
		now := h.clock.Now()
		if !st.LastErrorAt.Equal(now) {
			t.Errorf("LastErrorAt = %v, want now", st.LastErrorAt)
		}
		// Nothing but that one far-off retry may send a REGISTER: a PBX bans
		// addresses that keep failing auth.
		if d := st.NextAttempt.Sub(now); !in(d, 24*time.Minute, 30*time.Minute) {
			t.Fatalf("round %d: retry in %v, want 24m..30m", round, d)
		}
		if p := h.clock.Pending(); len(p) != 1 || !p[0].Equal(st.NextAttempt) {
			t.Fatalf("pending timers %v, want only the retry at %v", p, st.NextAttempt)
		}
		pbx.none(t)
		h.clock.AdvanceTo(st.NextAttempt)
	}
	// The retry above is under way; let it fail, then fix the password.
	pbx.next(t)
	pbx.next(t)
	h.waitStatus(t, "1001", StatusFailing)
	h.Sync([]Account{{Ext: "1001", Password: "right"}})
	pbx.next(t)
	pbx.next(t)
	st := h.waitStatus(t, "1001", StatusRegistered)
	if st.LastError == "" {
		t.Errorf("LastError was cleared by the success; it should stay for the record")
	}
	if got := counter(t, h, "callwake_upstream_register_attempts_total", "result", "auth_failed"); got != 3 {
		t.Errorf("auth_failed attempts = %v, want 3", got)
	}
}

func TestForbiddenAndNotFoundBackOffLong(t *testing.T) {
	for _, tc := range []struct {
		code   int
		reason string
	}{{403, "Forbidden"}, {404, "Not Found"}} {
		t.Run(tc.reason, func(t *testing.T) {
			pbx := newFakePBX(t)
			pbx.set(func(p *fakePBX) {
				p.hook = func(req *sip.Request) (*sip.Response, bool) {
					return sip.NewResponseFromRequest(req, tc.code, tc.reason, nil), false
				}
			})
			h := newHarness(t, pbx.uri, func(c *Config) { c.RejectedBackoff = time.Hour })
			h.Sync([]Account{{Ext: "1001", Password: "pw"}})
			h.run(t)

			pbx.next(t)
			st := h.waitStatus(t, "1001", StatusFailing)
			if want := tc.reason; !strings.Contains(st.LastError, want) {
				t.Errorf("LastError = %q, want %q", st.LastError, want)
			}
			if d := st.NextAttempt.Sub(h.clock.Now()); !in(d, 48*time.Minute, time.Hour) {
				t.Errorf("retry in %v, want Config.RejectedBackoff less jitter", d)
			}
			pbx.none(t)
			if got := counter(t, h, "callwake_upstream_register_attempts_total", "result", "rejected"); got != 1 {
				t.Errorf("rejected attempts = %v, want 1", got)
			}
		})
	}
}

func TestErrorsBackOffExponentiallyWithJitterAndCap(t *testing.T) {
	pbx := newFakePBX(t)
	retryAfter := ""
	pbx.set(func(p *fakePBX) {
		p.passwords["1001"] = "pw"
		p.hook = func(req *sip.Request) (*sip.Response, bool) {
			res := sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil)
			pbx.mu.Lock()
			if retryAfter != "" {
				res.AppendHeader(sip.NewHeader("Retry-After", retryAfter))
			}
			pbx.mu.Unlock()
			return res, false
		}
	})
	h := newHarness(t, pbx.uri, func(c *Config) { c.RetryInitial, c.RetryMax = 2*time.Second, 10*time.Second })
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.run(t)

	var prev time.Time
	failure := func() State {
		t.Helper()
		pbx.next(t)
		st := h.wait(t, "1001", func(s State) bool {
			return s.Status == StatusFailing && s.NextAttempt != prev && s.NextAttempt.After(h.clock.Now())
		})
		prev = st.NextAttempt
		if !strings.Contains(st.LastError, "503 Service Unavailable") {
			t.Errorf("LastError = %q", st.LastError)
		}
		return st
	}
	// Base 2s, 4s, 8s, then capped at 10s; jitter takes off up to 20%.
	for i, want := range []time.Duration{2, 4, 8, 10, 10} {
		if i > 0 {
			h.clock.AdvanceTo(prev)
		}
		want *= time.Second
		if d := failure().NextAttempt.Sub(h.clock.Now()); !in(d, want*8/10, want) {
			t.Errorf("failure %d: retry in %v, want %v..%v", i+1, d, want*8/10, want)
		}
	}
	// Retry-After is honoured, up to RetryMax. A changed account starts
	// over: at once, with the failure count reset.
	pbx.set(func(*fakePBX) { retryAfter = "9;duration=60 (maintenance)" })
	h.Sync([]Account{{Ext: "1001", Password: "pw2"}})
	if d := failure().NextAttempt.Sub(h.clock.Now()); !in(d, 9*time.Second, 10*time.Second) {
		t.Errorf("with Retry-After 9: retry in %v", d)
	}
	pbx.set(func(p *fakePBX) { p.hook = nil; p.passwords["1001"] = "pw2" })
	h.clock.AdvanceTo(prev)
	pbx.next(t)
	pbx.next(t)
	h.waitStatus(t, "1001", StatusRegistered)
	if got := counter(t, h, "callwake_upstream_register_attempts_total", "result", "error"); got != 6 {
		t.Errorf("error attempts = %v, want 6", got)
	}
}

func TestNoAnswerTimesOutAndRetries(t *testing.T) {
	pbx := newFakePBX(t)
	pbx.set(func(p *fakePBX) {
		p.passwords["1001"] = "pw"
		p.hook = func(*sip.Request) (*sip.Response, bool) { return nil, true }
	})
	h := newHarness(t, pbx.uri, func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.run(t)

	st := h.waitStatus(t, "1001", StatusFailing)
	if !strings.Contains(st.LastError, "no answer within 300ms") {
		t.Errorf("LastError = %q", st.LastError)
	}
	if d := st.NextAttempt.Sub(h.clock.Now()); !in(d, 1600*time.Millisecond, 2*time.Second) {
		t.Errorf("retry in %v, want RetryInitial less jitter", d)
	}
	pbx.set(func(p *fakePBX) { p.hook = nil })
	h.clock.AdvanceTo(st.NextAttempt)
	h.waitStatus(t, "1001", StatusRegistered)
	if got := counter(t, h, "callwake_upstream_register_attempts_total", "result", "timeout"); got != 1 {
		t.Errorf("timeout attempts = %v, want 1", got)
	}
}

func TestBadAccountIsDisabledWithoutSending(t *testing.T) {
	pbx := newFakePBX(t)
	h := newHarness(t, "", nil)
	h.Sync([]Account{{Ext: "1001", Password: "pw"}, {Ext: "1002", Registrar: "sip:"}})
	h.run(t)
	for ext, want := range map[string]string{"1001": "no registrar", "1002": "registrar"} {
		st := h.waitStatus(t, ext, StatusDisabled)
		if !strings.Contains(st.LastError, want) || !st.NextAttempt.IsZero() {
			t.Errorf("%s: state %+v, want disabled for %q and no retry", ext, st, want)
		}
	}
	if p := h.clock.Pending(); len(p) != 0 {
		t.Errorf("timers pending for disabled accounts: %v", p)
	}
	// Fixing the account registers it (in the next start slot).
	h.clock.Advance(time.Second)
	pbx.set(func(p *fakePBX) { p.passwords["1001"] = "pw" })
	h.Sync([]Account{{Ext: "1001", Password: "pw", Registrar: pbx.uri}})
	h.waitStatus(t, "1001", StatusRegistered)
	if _, ok := h.State("1002"); ok {
		t.Errorf("1002 still has a state after Sync dropped it")
	}
	if !slices.Contains([]string{"", pbx.uri}, h.States()["1001"].Registrar) {
		t.Errorf("registrar = %q", h.States()["1001"].Registrar)
	}
}
