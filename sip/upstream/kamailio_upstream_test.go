package upstream

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Tests against Kamailio as the PBX (test/kamailio): a registrar and proxy
// that nobody here wrote. They run in real time.

// callwakeUA stands in for callwake's SIP service: a UDP listener whose
// address is the Contact, and the client the Manager sends with. INVITEs
// that reach it are answered 486 and their Request-URI user is reported.
type callwakeUA struct {
	client  *sipgo.Client
	port    int
	invites chan string
}

func newCallwakeUA(t *testing.T) *callwakeUA {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("callwake"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &callwakeUA{port: conn.LocalAddr().(*net.UDPAddr).Port, invites: make(chan string, 10)}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		c.invites <- req.Recipient.User
		tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBusyHere, "Busy Here", nil))
	})
	go srv.ServeUDP(conn)
	c.client, err = sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		ua.Close()
	})
	return c
}

func (c *callwakeUA) contact(ext string) sip.Uri {
	return sip.Uri{Scheme: "sip", User: ext, Host: "127.0.0.1", Port: c.port}
}

// kamailioHarness is a Manager on the real clock, sending from cw.
func kamailioHarness(t *testing.T, k *kamailio, cw *callwakeUA, edit func(*Config)) *harness {
	t.Helper()
	return newHarness(t, k.uri, func(c *Config) {
		c.Client, c.Contact, c.Clock = cw.client, cw.contact, realClock{}
		if edit != nil {
			edit(c)
		}
	})
}

func TestKamailioRegistersAccountsAndGetsTheirCalls(t *testing.T) {
	k := startKamailio(t, kamailioOptions{MaxExpires: 60, Users: map[string]string{"1001": "pw1", "alice": "pw3"}})
	cw := newCallwakeUA(t)
	h := kamailioHarness(t, k, cw, nil)
	h.Sync([]Account{
		{Ext: "1001", Password: "pw1"},
		{Ext: "1003", Username: "alice", Password: "pw3", Registrar: k.uri + ";transport=tcp"},
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
		if got := k.contacts(aor); !slices.Equal(got, []string{want}) {
			t.Errorf("Kamailio location for %s = %v, want [%s]", aor, got, want)
		}
	}

	// A call to 1001 at the PBX reaches callwake, for extension 1001.
	caller := testClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	invite := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "1001", Host: "127.0.0.1", Port: k.port})
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
	k := startKamailio(t, kamailioOptions{Users: map[string]string{"1002": "right"}})
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
	if n := k.registers("1002"); n != 2 {
		t.Errorf("Kamailio got %d REGISTERs for 1002 in 2s, want 2 (challenge and one answer)", n)
	}
	if c := k.contacts("1002"); len(c) != 0 {
		t.Errorf("bound with a wrong password: %v", c)
	}
}

func TestKamailioRestartIsRegisteredAgainWithinARefresh(t *testing.T) {
	k := startKamailio(t, kamailioOptions{MinExpires: 5, MaxExpires: 10, Users: map[string]string{"1001": "pw"}})
	cw := newCallwakeUA(t)
	h := kamailioHarness(t, k, cw, func(c *Config) { c.Expires = 10 * time.Second })
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.run(t)
	st := h.waitStatus(t, "1001", StatusRegistered)
	if len(k.contacts("1001")) != 1 {
		t.Fatalf("not bound before the restart")
	}

	k.restart()
	restarted := time.Now()
	if c := k.contacts("1001"); len(c) != 0 {
		t.Fatalf("binding survived the restart: %v", c)
	}
	// Granted 10s: refreshed within 5s of the last REGISTER.
	k.waitContacts("1001", time.Until(st.LastSuccess.Add(10*time.Second)), func(c []string) bool { return len(c) == 1 })
	t.Logf("bound again %v after the restart", time.Since(restarted).Round(10*time.Millisecond))
	if st, _ := h.State("1001"); st.Status != StatusRegistered {
		t.Errorf("state %+v", st)
	}
}

func TestKamailioSyncAddsAndRemovesWithinSeconds(t *testing.T) {
	k := startKamailio(t, kamailioOptions{Users: map[string]string{"1001": "pw1", "1002": "pw2"}})
	cw := newCallwakeUA(t)
	h := kamailioHarness(t, k, cw, nil)
	h.Sync([]Account{{Ext: "1001", Password: "pw1"}})
	h.run(t)
	h.waitStatus(t, "1001", StatusRegistered)

	added := time.Now()
	h.Sync([]Account{{Ext: "1001", Password: "pw1"}, {Ext: "1002", Password: "pw2"}})
	k.waitContacts("1002", 3*time.Second, func(c []string) bool { return len(c) == 1 })
	t.Logf("added account bound after %v", time.Since(added).Round(time.Millisecond))

	h.Sync([]Account{{Ext: "1002", Password: "pw2"}})
	k.waitContacts("1001", 3*time.Second, func(c []string) bool { return len(c) == 0 })
	if len(k.contacts("1002")) != 1 {
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
	k := startKamailio(t, kamailioOptions{Users: users})
	cw := newCallwakeUA(t)
	h := kamailioHarness(t, k, cw, nil)
	h.Sync(accounts)
	h.run(t)
	for ext := range users {
		h.waitStatus(t, ext, StatusRegistered)
		if len(k.contacts(ext)) != 1 {
			t.Fatalf("%s not bound", ext)
		}
	}
	took := h.stop(t)
	for ext := range users {
		if c := k.contacts(ext); len(c) != 0 {
			t.Errorf("%s still bound after shutdown: %v", ext, c)
		}
	}
	t.Logf("un-registered %d accounts in %v", len(users), took.Round(time.Millisecond))
}

func TestKamailioIntervalTooBriefAndSHA256(t *testing.T) {
	k := startKamailio(t, kamailioOptions{MinExpires: 20, MinExpiresMode: 1, Algorithm: "SHA-256", Users: map[string]string{"1001": "pw"}})
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
	if n := k.registers("1001"); n != 4 {
		t.Errorf("Kamailio got %d REGISTERs, want 4", n)
	}
}
