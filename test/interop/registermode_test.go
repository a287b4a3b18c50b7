package interop

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/callwake/callwake/test/kamailio"
)

// Register mode against a real PBX: Kamailio (test/kamailio) is the
// customer's registrar and proxy. callwake registers to it as each
// extension with PBX credentials, and Kamailio sends that extension's calls
// to callwake's Contact.

const (
	pbxPassword = "pbx-secret-1001" // the extension's password at the PBX, not the phone's
	// callwake asks for pbx.register_expires (30s, its minimum); Kamailio
	// grants at most pbxGrant, and callwake refreshes at half of the grant
	// (less up to 20% jitter): every 4-5s.
	pbxGrant        = 10 * time.Second
	refreshInterval = pbxGrant / 2
)

// startRegisterMode starts Kamailio with these users (auth username =>
// password) and callwake registering to it, with no pbx.trusted: only the
// registrar's address may send INVITEs.
func startRegisterMode(t *testing.T, users map[string]string) (*kamailio.Server, *callwake) {
	t.Helper()
	requirePeer(t, "kamailio", "kamailio")
	pbx := kamailio.Start(t, kamailio.Options{MinExpires: 5, MaxExpires: int(pbxGrant / time.Second), Users: users})
	// Started after Kamailio, so stopped before it: the un-REGISTERs of
	// callwake's shutdown reach it.
	cw := startCallwakeWith(t, pbxConfig{registrar: pbx.URI(), registerExpires: 30 * time.Second})
	return pbx, cw
}

// pbxCredentials are the fields of an extension that make callwake
// register it to the PBX.
func pbxCredentials(username, password string) map[string]string {
	return map[string]string{"pbx_username": username, "pbx_password": password}
}

// registration is register mode's state of an extension, as
// GET /api/v1/extensions/{ext} shows it.
type registration struct {
	Status      string     `json:"status"`
	Registrar   string     `json:"registrar"`
	ExpiresAt   *time.Time `json:"expires_at"`
	LastSuccess *time.Time `json:"last_success"`
	LastError   string     `json:"last_error"`
	NextAttempt *time.Time `json:"next_attempt"`
}

// registration is the extension's registration state; nil when the API
// shows none.
func (cw *callwake) registration(ext string) *registration {
	cw.t.Helper()
	var reply struct {
		Registration *registration `json:"registration"`
	}
	if code := cw.api(http.MethodGet, "/api/v1/extensions/"+ext, "admin", nil, &reply); code != http.StatusOK {
		cw.t.Fatalf("GET /api/v1/extensions/%s = %d", ext, code)
	}
	return reply.Registration
}

// waitRegistration polls the API until the extension's registration has
// this status (the daemon saves the states every 2s), and returns it.
func (cw *callwake) waitRegistration(ext, status string, within time.Duration) registration {
	cw.t.Helper()
	deadline := time.Now().Add(within)
	for {
		reg := cw.registration(ext)
		if reg != nil && reg.Status == status {
			return *reg
		}
		if time.Now().After(deadline) {
			cw.t.Fatalf("GET /api/v1/extensions/%s: registration %+v never had status %q within %s", ext, reg, status, within)
		}
		time.Sleep(100 * time.Millisecond) // polling the API, as an operator would
	}
}

// registeredAtKamailio starts Kamailio and callwake, and provisions the
// extension with its PBX credentials and the app's push device (baresip's
// instance); it returns once callwake is registered at Kamailio as the
// extension.
func registeredAtKamailio(t *testing.T) (*kamailio.Server, *callwake, device) {
	t.Helper()
	pbx, cw := startRegisterMode(t, map[string]string{extension: pbxPassword})
	cw.addExtension(pbxCredentials(extension, pbxPassword))
	dev := cw.addDevice(baresipInstance)

	// callwake's Contact for 1001 at the PBX: its SIP address, with the
	// extension as user, so that the PBX's INVITE names the extension.
	want := fmt.Sprintf("sip:%s@%s", extension, cw.sipAddr)
	if got := pbx.WaitContacts(extension, 3*time.Second, kamailio.Bound); got[0] != want {
		t.Errorf("Kamailio's location for %s = %v, want [%s]", extension, got, want)
	}
	reg := cw.waitRegistration(extension, "registered", 3*time.Second)
	if reg.Registrar != pbx.URI() || reg.ExpiresAt == nil || reg.LastSuccess == nil || reg.ExpiresAt.Sub(*reg.LastSuccess) != pbxGrant {
		t.Errorf("registration %+v: want registered at %s for Kamailio's %s", reg, pbx.URI(), pbxGrant)
	}
	return pbx, cw, dev
}

// The whole point of register mode: callwake registers as 1001 at the PBX;
// a caller dials 1001 at the PBX, which sends the call to callwake; callwake
// pushes and rings, the woken app (baresip) answers, and the call goes
// through the PBX both ways until the caller hangs up.
func TestRegisterModeCallThroughKamailio(t *testing.T) {
	requirePeer(t, "sipp", "sip-tester")
	requirePeer(t, "baresip", "baresip-core")
	pbx, cw, dev := registeredAtKamailio(t)

	// pbx.trusted is empty: callwake takes INVITEs from its registrar's
	// address (127.0.0.1) only. Another address calling it directly is
	// refused.
	startSIPpAt(t, "127.0.0.2", cw.sipAddr, "uac_forbidden.xml", "udp").expectSuccess(5 * time.Second)

	messages := filepath.Join(t.TempDir(), "messages.log")
	caller := startSIPpAt(t, "127.0.0.1", pbx.Addr(), "uac_answer.xml", "udp", "-trace_msg", "-message_file", messages)
	ringing := cw.waitCall(caller.callID(), "ringing", 3*time.Second)
	phone := startBaresip(t, phoneConfig{cw.sipAddr, "udp", "auto"})
	caller.expectSuccess(ringTimeout+10*time.Second, phone.proc)

	c := cw.waitCall(caller.callID(), "completed", 3*time.Second)
	if c.ID != ringing.ID || c.Status != 200 || c.AnsweredBy != dev.ID || c.Extension != extension {
		t.Errorf("call log: %+v; want 1001's call completed with 200, answered by device %d", c, dev.ID)
	}
	if c.DurationMS == nil || *c.DurationMS < 900 {
		t.Errorf("talk time %v ms; the caller talks for 1s before its BYE", c.DurationMS)
	}
	var pushes []string
	for _, e := range cw.logEntries("push not sent: provider disabled (no credentials)") {
		if e["call_id"] == c.ID {
			pushes = append(pushes, fmt.Sprint(e["push_type"]))
		}
	}
	if len(pushes) == 0 || pushes[0] != "incoming_call" {
		t.Errorf("pushes logged for the call: %v, want an incoming_call first", pushes)
	}

	// The answer came back through Kamailio, which record-routed the call:
	// its Record-Route is in the 200 (callwake copied it, so the ACK and
	// the BYE went through the PBX too).
	rr := fmt.Sprintf("<sip:%s;lr", pbx.Addr())
	var answered bool
	for _, m := range sippReceived(t, messages) {
		if m.cseq == "1 INVITE" && strings.HasPrefix(m.startLine, "SIP/2.0 200") {
			answered = true
			if !strings.HasPrefix(m.recordRoute, rr) {
				t.Errorf("the caller's 200 has Record-Route %q, want Kamailio's %s…>", m.recordRoute, rr)
			}
		}
	}
	if !answered {
		t.Error("SIPp's trace shows no 200 to its INVITE")
	}
	if out := phone.proc.output(); !strings.Contains(out, "X-Callwake-Call-ID: "+c.ID) || !strings.Contains(out, "BYE sip:") {
		t.Error("baresip's trace lacks the INVITE of the call or the caller's BYE")
	}
}

// The user hangs up on the phone: callwake's BYE to the caller follows the
// route set Kamailio recorded, so that the PBX sees its dialog end.
func TestRegisterModePhoneHangsUpThroughKamailio(t *testing.T) {
	requirePeer(t, "sipp", "sip-tester")
	requirePeer(t, "baresip", "baresip-core")
	pbx, cw, dev := registeredAtKamailio(t)

	messages := filepath.Join(t.TempDir(), "messages.log")
	caller := startSIPpAt(t, "127.0.0.1", pbx.Addr(), "uac_answer_phone_hangs_up.xml", "udp", "-trace_msg", "-message_file", messages)
	cw.waitCall(caller.callID(), "ringing", 3*time.Second)
	// -t: baresip quits after 3s, hanging up its call first.
	startBaresip(t, phoneConfig{cw.sipAddr, "udp", "auto"}, "-t", "3")
	caller.expectSuccess(ringTimeout + 10*time.Second)

	c := cw.waitCall(caller.callID(), "completed", 3*time.Second)
	if c.Status != 200 || c.AnsweredBy != dev.ID {
		t.Errorf("call log: %+v", c)
	}
	kamailioVia := "SIP/2.0/UDP " + pbx.Addr() + ";"
	var byes int
	for _, m := range sippReceived(t, messages) {
		if strings.HasPrefix(m.startLine, "BYE ") {
			byes++
			if !strings.HasPrefix(m.topVia, kamailioVia) {
				t.Errorf("the BYE reached the caller from %q, not through Kamailio (%s)", m.topVia, pbx.Addr())
			}
		}
	}
	if byes == 0 {
		t.Error("SIPp's trace shows no BYE")
	}
}

// A wrong PBX password: the API and `callwake ext show` say the
// registration is failing and why, and callwake does not hammer the PBX
// (PBXs ban addresses that keep failing auth).
func TestRegisterModeWrongPBXPassword(t *testing.T) {
	pbx, cw := startRegisterMode(t, map[string]string{extension: pbxPassword})
	added := time.Now()
	cw.addExtension(pbxCredentials(extension, "not-"+pbxPassword))

	reg := cw.waitRegistration(extension, "failing", 5*time.Second)
	if !strings.Contains(reg.LastError, "401") {
		t.Errorf("last_error %q does not give Kamailio's 401", reg.LastError)
	}
	if reg.NextAttempt == nil || time.Until(*reg.NextAttempt) < 20*time.Minute {
		t.Errorf("next_attempt %v: want the long back-off after a wrong password", reg.NextAttempt)
	}
	out := cw.cli("ext", "show", extension)
	for _, want := range []string{"pbx registration: failing at " + pbx.URI(), "last error:   " + reg.LastError} {
		if !strings.Contains(out, want) {
			t.Errorf("callwake ext show lacks %q:\n%s", want, out)
		}
	}

	// A window in which a client that retried with the usual back-off (2s,
	// 4s, ...) would have tried twice more.
	time.Sleep(time.Until(added.Add(5 * time.Second)))
	if n := pbx.Registers(extension); n != 2 {
		t.Errorf("Kamailio got %d REGISTERs for %s in 5s, want 2 (the challenged one and one answer)", n, extension)
	}
	if c := pbx.Contacts(extension); len(c) != 0 {
		t.Errorf("bound with a wrong password: %v", c)
	}

	// The admin fixes the password: registered at once, not after the
	// back-off.
	fixed := time.Now()
	if code := cw.api(http.MethodPatch, "/api/v1/extensions/"+extension, "admin",
		map[string]string{"pbx_password": pbxPassword}, nil); code != http.StatusOK {
		t.Fatalf("PATCH /api/v1/extensions/%s = %d", extension, code)
	}
	pbx.WaitContacts(extension, 3*time.Second, kamailio.Bound)
	t.Logf("bound %v after the password was fixed", time.Since(fixed).Round(time.Millisecond))
	cw.waitRegistration(extension, "registered", 3*time.Second)
}

// The PBX reboots and loses its location table: callwake's next refresh
// binds the extension again, within one refresh interval.
func TestRegisterModeKamailioRestart(t *testing.T) {
	pbx, cw := startRegisterMode(t, map[string]string{extension: pbxPassword})
	cw.addExtension(pbxCredentials(extension, pbxPassword))
	pbx.WaitContacts(extension, 3*time.Second, kamailio.Bound)

	pbx.Restart()
	restarted := time.Now()
	// (Unless callwake refreshed in the instant since Kamailio came back.)
	if c := pbx.Contacts(extension); len(c) != 0 && pbx.Registers(extension) == 0 {
		t.Fatalf("binding survived Kamailio's restart: %v", c)
	}
	// One second on top for the REGISTER and its digest round.
	pbx.WaitContacts(extension, refreshInterval+time.Second, kamailio.Bound)
	t.Logf("bound again %v after Kamailio's restart", time.Since(restarted).Round(10*time.Millisecond))
	if st := cw.registration(extension); st == nil || st.Status != "registered" {
		t.Errorf("registration after the restart: %+v", st)
	}
}

// Extensions provisioned while callwake runs are registered within
// seconds, and removed ones un-registered, without a restart.
func TestRegisterModeExtensionAddedThroughAPI(t *testing.T) {
	const second = "1002"
	pbx, cw := startRegisterMode(t, map[string]string{extension: pbxPassword, second: "pbx-secret-1002"})
	cw.addExtension(pbxCredentials(extension, pbxPassword))
	pbx.WaitContacts(extension, 3*time.Second, kamailio.Bound)

	added := time.Now()
	body := pbxCredentials(second, "pbx-secret-1002")
	body["extension"], body["password"] = second, "interop-secret-1002"
	cw.addExtension(body)
	pbx.WaitContacts(second, 3*time.Second, kamailio.Bound)
	t.Logf("%s bound at Kamailio %v after POST /api/v1/extensions", second, time.Since(added).Round(time.Millisecond))
	cw.waitRegistration(second, "registered", 3*time.Second)

	if code := cw.api(http.MethodDelete, "/api/v1/extensions/"+second, "admin", nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE /api/v1/extensions/%s = %d", second, code)
	}
	pbx.WaitContacts(second, 3*time.Second, kamailio.Unbound)
	if c := pbx.Contacts(extension); len(c) != 1 {
		t.Errorf("%s lost its binding when %s was removed: %v", extension, second, c)
	}
}

// SIGTERM: callwake removes its bindings before it exits, so that the PBX
// does not send calls to a callwake that is gone.
func TestRegisterModeSIGTERMLeavesNoBinding(t *testing.T) {
	exts := map[string]string{extension: pbxPassword, "1002": "pbx-secret-1002", "1003": "pbx-secret-1003"}
	pbx, cw := startRegisterMode(t, exts)
	for ext, pw := range exts {
		body := pbxCredentials(ext, pw)
		body["extension"], body["password"] = ext, "interop-secret-"+ext
		cw.addExtension(body)
	}
	for ext := range exts {
		pbx.WaitContacts(ext, 3*time.Second, kamailio.Bound)
	}

	cw.terminate()
	if code, ok := cw.proc.wait(drainTime); !ok || code != 0 {
		t.Fatalf("callwake after SIGTERM: exited %v, code %d; want exit 0", ok, code)
	}
	t.Logf("callwake exited %v after SIGTERM", time.Since(cw.terminatedAt).Round(time.Millisecond))
	for ext := range exts {
		if c := pbx.Contacts(ext); len(c) != 0 {
			t.Errorf("%s still bound at Kamailio after callwake exited: %v", ext, c)
		}
	}
	var gone int
	for _, e := range cw.logEntries("un-registered from the PBX") {
		if e["why"] == "shutdown" {
			gone++
		}
	}
	if gone != len(exts) {
		t.Errorf(`callwake logged "un-registered from the PBX" (shutdown) %d times, want %d`, gone, len(exts))
	}
}
