package interop

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// baresipInstance is the +sip.instance of the baresip "app install": its
// uuid module reads the bare UUID from the file "uuid" in the config dir
// (no newline: baresip 1.0 would copy it into the Contact). The tests
// register the push device with the same instance, so that callwake knows
// the REGISTER comes from the device it pushed.
const (
	baresipUUID     = "4f8c2a6e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"
	baresipInstance = "urn:uuid:" + baresipUUID
)

// baresip is the softphone app, woken by the push: a baresip 1.0 with no
// audio device (aubridge), no video, no NAT helpers, answering on its own.
type baresip struct {
	proc *process
}

// baresipModules finds the module directory of the installed baresip.
func baresipModules(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{"/usr/lib/baresip/modules", "/usr/lib/x86_64-linux-gnu/baresip/modules",
		"/usr/lib/aarch64-linux-gnu/baresip/modules", "/usr/local/lib/baresip/modules"} {
		if _, err := os.Stat(filepath.Join(dir, "g711.so")); err == nil {
			return dir
		}
	}
	t.Fatal("baresip is installed but its modules (g711.so) were not found")
	return ""
}

// phoneConfig is how the baresip phone registers and answers.
type phoneConfig struct {
	proxy      string // host:port baresip sends its SIP to (outbound proxy)
	transport  string // "udp" or "tcp"
	answerMode string // "auto" (answer at once) or "manual" (ring until the caller gives up)
}

// startBaresip starts baresip registering as the extension; args are more
// command-line options.
func startBaresip(t *testing.T, pc phoneConfig, args ...string) *baresip {
	t.Helper()
	bin := requirePeer(t, "baresip", "baresip-core")
	dir := t.TempDir()
	config := fmt.Sprintf(`poll_method		epoll
sip_listen		127.0.0.1:%d
net_interface		127.0.0.1
call_local_timeout	30
call_max_calls		2
audio_player		aubridge,interop
audio_source		aubridge,interop
audio_alert		aubridge,interop
module_path		%s
module			g711.so
module			aubridge.so
module_tmp		uuid.so
module_tmp		account.so
`, freePort(t), baresipModules(t))
	// sipnat=outbound makes baresip put +sip.instance (from the uuid
	// file) in its Contact, as mobile apps do.
	account := fmt.Sprintf(`<sip:%s@%s;transport=%s>;auth_pass=%s;outbound="sip:%s;transport=%s";sipnat=outbound;regint=600;answermode=%s;medianat=;mediaenc=
`, extension, domain, pc.transport, password, pc.proxy, pc.transport, pc.answerMode)
	for name, content := range map[string]string{"config": config, "accounts": account, "uuid": baresipUUID} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// -s: SIP trace in the log, printed if the test fails.
	return &baresip{proc: startProcess(t, "baresip", dir, cleanEnv("HOME="+dir), bin, append([]string{"-f", dir, "-s"}, args...)...)}
}

// waitOutput waits until baresip has printed want.
func (b *baresip) waitOutput(want string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if strings.Contains(b.proc.output(), want) {
			return true
		}
		if b.proc.exited() {
			return false
		}
		time.Sleep(50 * time.Millisecond) // polling a log file
	}
	return false
}

// message is the first SIP message in baresip's trace (-s) whose start
// line begins with prefix, up to the end of its body.
func (b *baresip) message(prefix string) (string, bool) {
	out := b.proc.output()
	start := strings.Index(out, "\n"+prefix)
	if start < 0 {
		return "", false
	}
	msg := out[start+1:]
	// Each traced message ends with the colour reset escape.
	if end := strings.Index(msg, "\x1b[;m"); end >= 0 {
		msg = msg[:end]
	}
	return msg, true
}

// The whole point, with a real softphone: the PBX (SIPp) calls, callwake
// rings and pushes; the app (baresip) wakes, registers as the pushed
// device, gets the call and answers; the PBX hangs up.
func TestBaresipAnswersWokenCall(t *testing.T) {
	// The push tells the app to register over TCP; PBXs use either.
	for _, transport := range []string{"udp", "tcp"} {
		t.Run("over "+transport, func(t *testing.T) { testBaresipAnswers(t, transport) })
	}
}

func testBaresipAnswers(t *testing.T, transport string) {
	requirePeer(t, "sipp", "sip-tester")
	requirePeer(t, "baresip", "baresip-core")
	cw := startCallwake(t)
	dev := cw.provision(baresipInstance)

	pbx := startSIPp(t, cw, "uac_answer.xml", transport)
	// The app is woken by the push: it starts only once the call rings.
	ringing := cw.waitCall(pbx.callID(), "ringing", 3*time.Second)
	phone := startBaresip(t, phoneConfig{cw.sipAddr, transport, "auto"})
	pbx.expectSuccess(ringTimeout+10*time.Second, phone.proc)

	c := cw.waitCall(pbx.callID(), "completed", 3*time.Second)
	if c.ID != ringing.ID || c.Status != 200 {
		t.Errorf("call log: %+v", c)
	}
	// callwake matched baresip's REGISTER to the pushed device by its
	// +sip.instance, and that device answered.
	if c.AnsweredBy != dev.ID {
		t.Errorf("answered_by = %d, want device %d (baresip's instance)", c.AnsweredBy, dev.ID)
	}
	switch {
	case c.PushMS == nil || c.RegisterMS == nil || c.AnswerMS == nil || c.DurationMS == nil:
		t.Errorf("call log lacks timings: %+v", c)
	case !(*c.PushMS <= *c.RegisterMS && *c.RegisterMS <= *c.AnswerMS):
		t.Errorf("timings out of order: push %dms, register %dms, answer %dms", *c.PushMS, *c.RegisterMS, *c.AnswerMS)
	case *c.DurationMS < 900:
		t.Errorf("talk time %dms; the scenario talks for 1s before its BYE", *c.DurationMS)
	}
	if cli := cw.cliCall(pbx.callID()); cli.Outcome != "completed" || cli.Status != 200 || cli.AnsweredBy != dev.ID {
		t.Errorf("callwake calls --json: %+v", cli)
	}

	var rang []string
	for _, e := range cw.logEntries("ringing phone") {
		if e["call_id"] == c.ID {
			rang = append(rang, fmt.Sprint(e["transport"]))
		}
	}
	if len(rang) != 1 || rang[0] != transport {
		t.Errorf("callwake rang the phone over %v, want once over %s", rang, transport)
	}

	// baresip's own SIP trace: it got callwake's INVITE for this call,
	// answered it, and the PBX's BYE ended it.
	out := phone.proc.output()
	for _, want := range []string{
		"X-Callwake-Call-ID: " + c.ID,
		"Server: baresip",
		"Call established",
		"BYE sip:" + extension,
		"terminated (duration",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("baresip's output lacks %q", want)
		}
	}
}

// A delayed offer: the PBX's INVITE has no SDP, the phone's 200 makes the
// offer and the PBX's ACK carries the answer, which the phone must get in
// callwake's ACK; without it the phone never learns where to send audio.
func TestBaresipAnswersLateOffer(t *testing.T) {
	requirePeer(t, "sipp", "sip-tester")
	requirePeer(t, "baresip", "baresip-core")
	cw := startCallwake(t)
	cw.provision(baresipInstance)

	pbx := startSIPp(t, cw, "uac_answer_late_offer.xml", "udp")
	cw.waitCall(pbx.callID(), "ringing", 3*time.Second)
	phone := startBaresip(t, phoneConfig{cw.sipAddr, "udp", "auto"})
	pbx.expectSuccess(ringTimeout+10*time.Second, phone.proc)
	cw.waitCall(pbx.callID(), "completed", 3*time.Second)

	ack, ok := phone.message("ACK sip:")
	if !ok {
		t.Fatal("baresip's trace shows no ACK")
	}
	if !strings.Contains(ack, "o=sipp ") || !strings.Contains(ack, "m=audio ") {
		t.Errorf("the phone's ACK lacks the PBX's SDP answer (from the PBX's ACK):\n%s", ack)
	}
}

// A plain softphone (no push parameters, no push device) that registered
// over UDP before the call is rung at once: a push cannot wake it.
func TestBaresipRegisteredBeforeCall(t *testing.T) {
	requirePeer(t, "sipp", "sip-tester")
	requirePeer(t, "baresip", "baresip-core")
	cw := startCallwake(t)
	if code := cw.api(http.MethodPost, "/api/v1/extensions", "admin",
		map[string]string{"extension": extension, "password": password}, nil); code != http.StatusCreated {
		t.Fatalf("POST /api/v1/extensions = %d", code)
	}
	phone := startBaresip(t, phoneConfig{cw.sipAddr, "udp", "auto"})
	if !phone.waitOutput("200 OK () [1 binding]", 5*time.Second) {
		t.Fatal("baresip did not register")
	}

	pbx := startSIPp(t, cw, "uac_answer.xml", "udp")
	pbx.expectSuccess(ringTimeout+10*time.Second, phone.proc)
	c := cw.waitCall(pbx.callID(), "completed", 3*time.Second)
	if c.Status != 200 || c.AnsweredBy != 0 || c.PushAt != nil || c.AnswerMS == nil || *c.AnswerMS > 1000 {
		t.Errorf("call log: %+v; want answered at once, with no push and no device", c)
	}
}

// The caller hangs up while the phone rings: callwake answers the PBX's
// CANCEL and cancels its own INVITE to the phone.
func TestBaresipCallerCancelsWhilePhoneRings(t *testing.T) {
	requirePeer(t, "sipp", "sip-tester")
	requirePeer(t, "baresip", "baresip-core")
	cw := startCallwake(t)
	cw.provision(baresipInstance)
	// Registered before the call without push parameters, and not
	// answering: it rings at once, until the caller gives up.
	phone := startBaresip(t, phoneConfig{cw.sipAddr, "udp", "manual"})
	if !phone.waitOutput("200 OK () [1 binding]", 5*time.Second) {
		t.Fatal("baresip did not register")
	}

	pbx := startSIPp(t, cw, "uac_cancel.xml", "udp")
	pbx.expectSuccess(10*time.Second, phone.proc)
	c := cw.waitCall(pbx.callID(), "cancelled", 3*time.Second)
	if c.Status != 487 || c.AnsweredBy != 0 {
		t.Errorf("call log: %+v", c)
	}
	// baresip rang, got callwake's CANCEL and closed the call.
	if !phone.waitOutput("CANCEL sip:", 3*time.Second) {
		t.Error("baresip never got a CANCEL")
	}
	if out := phone.proc.output(); !strings.Contains(out, "X-Callwake-Call-ID: "+c.ID) || !strings.Contains(out, "SIP/2.0 487") {
		t.Error("baresip's trace lacks the INVITE of the call or its 487")
	}
}

// The user hangs up on the phone: baresip's BYE reaches the PBX in the
// PBX's own dialog.
func TestBaresipHangsUp(t *testing.T) {
	requirePeer(t, "sipp", "sip-tester")
	requirePeer(t, "baresip", "baresip-core")
	cw := startCallwake(t)
	dev := cw.provision(baresipInstance)

	pbx := startSIPp(t, cw, "uac_answer_phone_hangs_up.xml", "udp")
	cw.waitCall(pbx.callID(), "ringing", 3*time.Second)
	// -t: baresip quits after 3s, hanging up its call first.
	phone := startBaresip(t, phoneConfig{cw.sipAddr, "udp", "auto"}, "-t", "3")
	pbx.expectSuccess(ringTimeout + 10*time.Second)

	c := cw.waitCall(pbx.callID(), "completed", 3*time.Second)
	if c.Status != 200 || c.AnsweredBy != dev.ID || c.DurationMS == nil || *c.DurationMS < 1000 {
		t.Errorf("call log: %+v", c)
	}
	var hangupBy []any
	for _, e := range cw.logEntries("call ended") {
		if e["call_id"] == c.ID {
			hangupBy = append(hangupBy, e["hangup_by"])
		}
	}
	if len(hangupBy) != 1 || hangupBy[0] != "phone" {
		t.Errorf(`"call ended" logged with hangup_by %v, want once "phone"`, hangupBy)
	}
	if out := phone.proc.output(); !strings.Contains(out, "BYE sip:") {
		t.Error("baresip's trace shows no BYE")
	}
}

// baresip 1.0 (Debian bookworm, libre 1.1) gives up on a 401 that offers
// any algorithm but MD5 ("Register: Function not implemented"). An admin
// with such phones sets sip.digest_algorithms to ["MD5"], as the test config
// does: baresip then registers to callwake directly.
func TestBaresipRegistersDirectly(t *testing.T) {
	requirePeer(t, "baresip", "baresip-core")
	cw := startCallwake(t)
	cw.provision(baresipInstance)
	phone := startBaresip(t, phoneConfig{cw.sipAddr, "udp", "auto"})
	const registered = "200 OK () [1 binding]"
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(phone.proc.output(), registered) {
			return
		}
		time.Sleep(50 * time.Millisecond) // polling a log file
	}
	t.Fatal("baresip did not register to callwake within 5s")
}
