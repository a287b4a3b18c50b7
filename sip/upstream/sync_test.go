package upstream

import (
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func TestStartupSpreadsFirstRegistrations(t *testing.T) {
	pbx := newFakePBX(t)
	var accounts []Account
	var exts []string
	for i := range 10 {
		ext := fmt.Sprint(1000 + i)
		exts = append(exts, ext)
		accounts = append(accounts, Account{Ext: ext, Password: "pw"})
		pbx.set(func(p *fakePBX) { p.passwords[ext] = "pw" })
	}
	h := newHarness(t, pbx.uri, func(c *Config) { c.StartInterval = time.Second })
	h.Sync(accounts)
	t0 := h.clock.Now()
	h.run(t)

	for i, ext := range exts {
		st := h.wait(t, ext, func(s State) bool { return !s.NextAttempt.IsZero() })
		if want := t0.Add(time.Duration(i) * time.Second); !st.NextAttempt.Equal(want) {
			t.Errorf("%s: first REGISTER at +%v, want +%ds", ext, st.NextAttempt.Sub(t0), i)
		}
	}
	for i, ext := range exts[:3] {
		h.clock.AdvanceTo(t0.Add(time.Duration(i) * time.Second))
		for range 2 {
			if req := pbx.next(t); req.To().Address.User != ext {
				t.Fatalf("at +%ds: REGISTER for %s, want only %s", i, req.To().Address.User, ext)
			}
		}
		h.waitStatus(t, ext, StatusRegistered)
		pbx.none(t)
	}
}

func TestSyncAddsAccountAtOnce(t *testing.T) {
	pbx := newFakePBX(t)
	pbx.set(func(p *fakePBX) { p.passwords["1001"] = "pw" })
	h := newHarness(t, pbx.uri, nil)
	h.run(t)
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.waitStatus(t, "1001", StatusRegistered)
	if _, ok := pbx.binding("1001"); !ok {
		t.Errorf("PBX has no binding for 1001")
	}
	if h.clock.Now() != newFakeClock().Now() {
		t.Errorf("clock moved")
	}
}

func TestSyncChangedPasswordReregistersSameBinding(t *testing.T) {
	pbx := newFakePBX(t)
	pbx.set(func(p *fakePBX) { p.passwords["1001"] = "old" })
	h := newHarness(t, pbx.uri, nil)
	h.Sync([]Account{{Ext: "1001", Password: "old"}})
	h.run(t)
	pbx.next(t)
	registered := pbx.next(t)
	h.waitStatus(t, "1001", StatusRegistered)

	pbx.set(func(p *fakePBX) { p.passwords["1001"] = "new" })
	h.syncAfterSlots([]Account{{Ext: "1001", Password: "new"}})
	for range 2 {
		req := pbx.next(t)
		if req.CallID().Value() != registered.CallID().Value() || req.CSeq().SeqNo <= registered.CSeq().SeqNo {
			t.Fatalf("re-REGISTER Call-ID/CSeq %s/%d after %s/%d: want the same binding", req.CallID().Value(), req.CSeq().SeqNo,
				registered.CallID().Value(), registered.CSeq().SeqNo)
		}
		if expiresParam(req) == 0 {
			t.Fatalf("a password change un-registered the binding")
		}
	}
	h.waitStatus(t, "1001", StatusRegistered)
	// The same account again is no change.
	h.Sync([]Account{{Ext: "1001", Password: "new"}})
	pbx.none(t)
}

func TestSyncMovesBindingWhenRegistrarOrUsernameChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(acc *Account, other *fakePBX)
	}{
		{"registrar", func(acc *Account, other *fakePBX) { acc.Registrar = other.uri }},
		{"username", func(acc *Account, _ *fakePBX) { acc.Username = "alice" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oldPBX, newPBX := newFakePBX(t), newFakePBX(t)
			oldPBX.set(func(p *fakePBX) { p.passwords["1001"] = "pw"; p.passwords["alice"] = "pw" })
			newPBX.set(func(p *fakePBX) { p.passwords["1001"] = "pw" })
			h := newHarness(t, oldPBX.uri, nil)
			acc := Account{Ext: "1001", Password: "pw"}
			h.Sync([]Account{acc})
			h.run(t)
			oldPBX.next(t)
			registered := oldPBX.next(t)
			h.waitStatus(t, "1001", StatusRegistered)

			tc.change(&acc, newPBX)
			h.syncAfterSlots([]Account{acc})
			for range 2 {
				req := oldPBX.next(t)
				if expiresParam(req) != 0 || header(req, "Expires") != "0" || req.To().Address.User != "1001" {
					t.Fatalf("want the old binding un-registered first, got:\n%s", req)
				}
				if req.CallID().Value() != registered.CallID().Value() || req.CSeq().SeqNo <= registered.CSeq().SeqNo {
					t.Fatalf("un-REGISTER must reuse the Call-ID with a higher CSeq")
				}
			}
			target := oldPBX
			if tc.name == "registrar" {
				target = newPBX
			}
			req := target.next(t)
			if expiresParam(req) != 300 || req.CallID().Value() == registered.CallID().Value() {
				t.Fatalf("want a REGISTER with a new Call-ID, got:\n%s", req)
			}
			st := h.waitStatus(t, "1001", StatusRegistered)
			if st.Registrar != target.uri {
				t.Errorf("Registrar = %s, want %s", st.Registrar, target.uri)
			}
			if _, ok := oldPBX.binding("1001"); ok && tc.name == "registrar" {
				t.Errorf("old PBX still has the binding")
			}
		})
	}
}

func TestSyncRemovedAccountUnregisters(t *testing.T) {
	pbx := newFakePBX(t)
	pbx.set(func(p *fakePBX) { p.passwords["1001"] = "pw"; p.passwords["1002"] = "pw" })
	h := newHarness(t, pbx.uri, nil)
	h.Sync([]Account{{Ext: "1001", Password: "pw"}, {Ext: "1002", Password: "pw"}})
	h.run(t)
	h.scheduled(t, "1001", "1002")
	h.clock.Advance(time.Second)
	h.waitStatus(t, "1001", StatusRegistered)
	h.waitStatus(t, "1002", StatusRegistered)
	drain(pbx)

	h.Sync([]Account{{Ext: "1002", Password: "pw"}})
	for range 2 {
		if req := pbx.next(t); req.To().Address.User != "1001" || expiresParam(req) != 0 {
			t.Fatalf("want 1001 un-registered, got:\n%s", req)
		}
	}
	h.waitStatus(t, "1001", StatusDisabled)
	if _, ok := pbx.binding("1001"); ok {
		t.Errorf("PBX still has 1001's binding")
	}
	if _, ok := h.State("1001"); ok {
		t.Errorf("State(1001) after removal")
	}
	if _, ok := pbx.binding("1002"); !ok {
		t.Errorf("1002 lost its binding")
	}

	// Back again: a fresh binding, registered after the removal finished.
	h.Sync([]Account{{Ext: "1001", Password: "pw"}, {Ext: "1002", Password: "pw"}})
	h.waitStatus(t, "1001", StatusRegistered)
	if _, ok := pbx.binding("1001"); !ok {
		t.Errorf("PBX has no binding for the re-added 1001")
	}
}

func drain(p *fakePBX) {
	for {
		select {
		case <-p.requests:
		default:
			return
		}
	}
}

// A Sync that changes an account while its REGISTER hangs aborts it and
// uses the new account at once.
func TestSyncAbortsHangingRegister(t *testing.T) {
	dead, alive := newFakePBX(t), newFakePBX(t)
	dead.set(func(p *fakePBX) { p.hook = func(*sip.Request) (*sip.Response, bool) { return nil, true } })
	alive.set(func(p *fakePBX) { p.passwords["1001"] = "pw" })
	h := newHarness(t, dead.uri, func(c *Config) { c.RequestTimeout, c.ShutdownTimeout = time.Minute, 300*time.Millisecond })
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.run(t)
	dead.next(t) // hangs for a minute

	h.syncAfterSlots([]Account{{Ext: "1001", Password: "pw", Registrar: alive.uri}})
	// The aborted REGISTER may have been taken: the dead PBX is asked to
	// drop it (for at most ShutdownTimeout) before the move.
	if req := dead.next(t); expiresParam(req) != 0 {
		t.Errorf("want an un-REGISTER at the old registrar, got:\n%s", req)
	}
	h.waitStatus(t, "1001", StatusRegistered)
	if got := h.States()["1001"].Registrar; got != alive.uri {
		t.Errorf("Registrar = %s", got)
	}
}
