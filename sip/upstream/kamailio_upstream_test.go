package upstream

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/callwake/callwake/test/kamailio"
)

// Tests against Kamailio as the PBX (test/kamailio): a registrar and proxy
// that nobody here wrote. They run in real time.

func TestKamailioRegistersAccountsAndGetsTheirCalls(t *testing.T) {
	k := kamailio.Start(t, kamailio.Options{MaxExpires: 60, Users: map[string]string{"1001": "pw1", "alice": "pw3"}})
	cw := newCallwakeUA(t)
	h := kamailioHarness(t, k, cw, nil)
	h.Sync([]Account{
		{Ext: "1001", Password: "pw1"},
		{Ext: "1003", Username: "alice", Password: "pw3", Registrar: k.URI() + ";transport=tcp"},
	})
	h.run(t)
	for _, ext := range []string{"1001", "1003"} {
		st := h.waitStatus(t, ext, StatusRegistered)
		if granted := st.ExpiresAt.Sub(st.LastSuccess); granted != 60*time.Second {
			t.Errorf("%s: granted %v, want Kamailio's max_expires 60s", ext, granted)
		}
	}
	for aor, ext := range map[string]string{"1001": "1001", "alice": "1003"} {
		contact := cw.contact(ext)
		want := contact.String()
		if got := k.Contacts(aor); !slices.Equal(got, []string{want}) {
			t.Errorf("Kamailio location for %s = %v, want [%s]", aor, got, want)
		}
	}

	// A call to 1001 at the PBX reaches callwake, for extension 1001.
	caller := testClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	invite := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "1001", Host: "127.0.0.1", Port: k.Port()})
	res, err := caller.Do(ctx, invite)
	if err != nil {
		t.Fatalf("INVITE through Kamailio: %v", err)
	}
	select {
	case user := <-cw.invites:
		if user != "1001" {
			t.Errorf("INVITE reached callwake for %q, want 1001", user)
		}
	default:
		t.Errorf("INVITE never reached callwake")
	}
	if res.StatusCode != sip.StatusBusyHere {
		t.Errorf("caller got %d %s, want callwake's 486 relayed", res.StatusCode, res.Reason)
	}
}

func TestKamailioWrongPasswordFailsWithoutHammering(t *testing.T) {
	k := kamailio.Start(t, kamailio.Options{Users: map[string]string{"1002": "right"}})
	cw := newCallwakeUA(t)
	// Were a wrong password treated as a passing error, these would retry
	// many times in the window below.
	h := kamailioHarness(t, k, cw, func(c *Config) { c.RetryInitial, c.RetryMax = 50*time.Millisecond, 100*time.Millisecond })
	h.Sync([]Account{{Ext: "1002", Password: "wrong"}})
	h.run(t)

	st := h.waitStatus(t, "1002", StatusFailing)
	if !strings.Contains(st.LastError, "401") || !strings.Contains(st.LastError, "wrong username or password") {
		t.Errorf("LastError = %q", st.LastError)
	}
	if d := time.Until(st.NextAttempt); d < 20*time.Minute {
		t.Errorf("next attempt in %v, want the long back-off", d)
	}
	time.Sleep(2 * time.Second) // a window to count REGISTERs in, not synchronisation
	if n := k.Registers("1002"); n != 2 {
		t.Errorf("Kamailio got %d REGISTERs for 1002 in 2s, want 2 (challenge and one answer)", n)
	}
	if c := k.Contacts("1002"); len(c) != 0 {
		t.Errorf("bound with a wrong password: %v", c)
	}
}

func TestKamailioRestartIsRegisteredAgainWithinARefresh(t *testing.T) {
	k := kamailio.Start(t, kamailio.Options{MinExpires: 5, MaxExpires: 10, Users: map[string]string{"1001": "pw"}})
	cw := newCallwakeUA(t)
	h := kamailioHarness(t, k, cw, func(c *Config) { c.Expires = 10 * time.Second })
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.run(t)
	st := h.waitStatus(t, "1001", StatusRegistered)
	if len(k.Contacts("1001")) != 1 {
		t.Fatalf("not bound before the restart")
	}

	k.Restart()
	restarted := time.Now()
	// (Unless the refresh came in the instant since Kamailio came back.)
	if c := k.Contacts("1001"); len(c) != 0 && k.Registers("1001") == 0 {
		t.Fatalf("binding survived the restart: %v", c)
	}
	// Granted 10s: refreshed within 5s of the last REGISTER.
	k.WaitContacts("1001", time.Until(st.LastSuccess.Add(10*time.Second)), kamailio.Bound)
	t.Logf("bound again %v after the restart", time.Since(restarted).Round(10*time.Millisecond))
	if st, _ := h.State("1001"); st.Status != StatusRegistered {
		t.Errorf("state %+v", st)
	}
}

func TestKamailioSyncAddsAndRemovesWithinSeconds(t *testing.T) {
	k := kamailio.Start(t, kamailio.Options{Users: map[string]string{"1001": "pw1", "1002": "pw2"}})
	cw := newCallwakeUA(t)
	h := kamailioHarness(t, k, cw, nil)
	h.Sync([]Account{{Ext: "1001", Password: "pw1"}})
	h.run(t)
	h.waitStatus(t, "1001", StatusRegistered)

	added := time.Now()
	h.Sync([]Account{{Ext: "1001", Password: "pw1"}, {Ext: "1002", Password: "pw2"}})
	k.WaitContacts("1002", 3*time.Second, kamailio.Bound)
	t.Logf("added account bound after %v", time.Since(added).Round(time.Millisecond))

	h.Sync([]Account{{Ext: "1002", Password: "pw2"}})
	k.WaitContacts("1001", 3*time.Second, kamailio.Unbound)
	if len(k.Contacts("1002")) != 1 {
		t.Errorf("1002 lost its binding when 1001 was removed")
	}
}

func TestKamailioShutdownLeavesNoBinding(t *testing.T) {
	users := map[string]string{}
	var accounts []Account
	for i := range 5 {
		ext := fmt.Sprint(1001 + i)
		users[ext] = "pw" + ext
		accounts = append(accounts, Account{Ext: ext, Password: "pw" + ext})
	}
	k := kamailio.Start(t, kamailio.Options{Users: users})
	cw := newCallwakeUA(t)
	h := kamailioHarness(t, k, cw, nil)
	h.Sync(accounts)
	h.run(t)
	for ext := range users {
		h.waitStatus(t, ext, StatusRegistered)
		if len(k.Contacts(ext)) != 1 {
			t.Fatalf("%s not bound", ext)
		}
	}
	took := h.stop(t)
	for ext := range users {
		if c := k.Contacts(ext); len(c) != 0 {
			t.Errorf("%s still bound after shutdown: %v", ext, c)
		}
	}
	t.Logf("un-registered %d accounts in %v", len(users), took.Round(time.Millisecond))
}

func TestKamailioIntervalTooBriefAndSHA256(t *testing.T) {
	k := kamailio.Start(t, kamailio.Options{MinExpires: 20, MinExpiresMode: 1, Algorithm: "SHA-256", Users: map[string]string{"1001": "pw"}})
	cw := newCallwakeUA(t)
	h := kamailioHarness(t, k, cw, func(c *Config) { c.Expires = 10 * time.Second })
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.run(t)
	st := h.waitStatus(t, "1001", StatusRegistered)
	if granted := st.ExpiresAt.Sub(st.LastSuccess); granted != 20*time.Second {
		t.Errorf("granted %v, want Kamailio's min_expires 20s after its 423", granted)
	}
	// This Kamailio authenticates before save() checks the expiry: challenge,
	// 423, then challenge and answer with the longer expiry.
	if n := k.Registers("1001"); n != 4 {
		t.Errorf("Kamailio got %d REGISTERs, want 4", n)
	}
}
